"""A GET request's database session runs in autocommit (web/db.py): no BEGIN/ROLLBACK round trips around a read;
a request that writes keeps its transaction; the one GET that may write (the webhook secret, made on first use)
is a single conditional statement, so concurrent first requests agree."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text

from web.db import db_session


@pytest.mark.parametrize(("method", "autocommit"), [("GET", True), ("HEAD", True), ("POST", False), ("DELETE", False)])
def test_reads_run_in_autocommit_and_writes_in_a_transaction(app, method, autocommit):
    with app.test_request_context("/api/v1/jobs", method=method):
        s = db_session()
        s.execute(text("SELECT 1"))
        assert s.connection().connection.dbapi_connection.autocommit is autocommit
        in_transaction = s.execute(text("SELECT now() <> statement_timestamp()")).scalar()
        assert in_transaction is not autocommit  # in a transaction, now() is the transaction's start


def test_a_connection_from_a_read_is_transactional_again_for_a_write(app):
    """The pool resets the autocommit flag when a GET's connection is returned: the next POST is atomic."""
    with app.test_request_context("/api/v1/jobs", method="GET"):
        db_session().execute(text("SELECT 1"))
    with app.test_request_context("/api/v1/jobs", method="POST"):
        assert db_session().connection().connection.dbapi_connection.autocommit is False


def test_concurrent_first_gets_of_the_webhook_secret_get_one_secret(app, user):
    def get(_: int) -> str:
        c = app.test_client()
        c.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {user.token}"
        resp = c.get("/api/v1/webhooks/secret")
        assert resp.status_code == 200, resp.get_json()
        return resp.get_json()["secret"]

    with ThreadPoolExecutor(8) as pool:
        secrets = set(pool.map(get, range(16)))
    assert len(secrets) == 1 and next(iter(secrets)).startswith("whsec_")
