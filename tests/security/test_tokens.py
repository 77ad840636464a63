"""Users and API tokens from the CLI (add, issue, list, revoke), first-start admin, and the API's security headers."""

from __future__ import annotations

import os
import re
import stat

import pytest
from sqlalchemy import select

from shared.cli.main import main
from shared.db import session_scope
from shared.models import ApiToken
from shared.users import hash_token


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def bearer(app, token: str):
    c = app.test_client()
    c.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return c


def test_users_add_list_issue_and_revoke(app, clean_db, capsys):
    code, out, _ = cli(capsys, "users", "add", "dave")
    token = out.strip()
    assert code == 0 and token.startswith("gq_")
    with session_scope() as s:
        stored = s.scalars(select(ApiToken)).all()
    assert [t.token_hash for t in stored] == [hash_token(token)]  # only the hash is kept
    assert bearer(app, token).get("/api/v1/jobs").status_code == 200

    code, _, err = cli(capsys, "users", "add", "dave")
    assert code == 2 and "already exists" in err and "Traceback" not in err

    code, out, _ = cli(capsys, "users", "issue-token", "dave", "--token-name", "ci")
    second = out.strip()
    assert code == 0 and second.startswith("gq_") and second != token

    code, out, _ = cli(capsys, "users", "tokens", "dave")
    assert code == 0
    rows = out.strip().splitlines()
    assert rows[0].split()[:2] == ["ID", "NAME"] and len(rows) == 3
    first_row = next(r for r in rows[1:] if " cli " in r)
    assert "never" not in first_row  # the request above recorded when the token was last used
    assert re.search(r" ci .* never +no$", rows[2]) or re.search(r" ci .* never +no$", rows[1])
    assert token not in out and second not in out

    token_id = first_row.split()[0]
    code, out, _ = cli(capsys, "users", "revoke-token", token_id)
    assert code == 0 and "revoked 1" in out
    revoked = bearer(app, token).get("/api/v1/jobs")
    assert revoked.status_code == 403 and revoked.get_json()["error"]["code"] == "token_revoked"
    assert bearer(app, second).get("/api/v1/jobs").status_code == 200  # the other token still works
    code, out, _ = cli(capsys, "users", "tokens", "dave")
    assert re.search(rf"{token_id} .*\d{{4}}-\d\d-\d\dT\S+Z$", out, re.M)  # a revoked-at timestamp
    assert cli(capsys, "users", "revoke-token", token_id)[0] == 1  # already revoked: nothing to do
    assert cli(capsys, "users", "revoke-token", second)[0] == 0  # by the token value itself


def test_unknown_user_is_a_clean_error(clean_db, capsys):
    for argv in (("users", "tokens", "nobody"), ("users", "issue-token", "nobody")):
        code, _, err = cli(capsys, *argv)
        assert code == 2 and "no user named 'nobody'" in err


def test_first_start_creates_one_admin_and_prints_its_token(app, clean_db, tmp_path, capsys):
    from shared.cli.up import _banner, ensure_admin
    from shared.settings import get_settings

    token = ensure_admin(tmp_path)
    assert token and token.startswith("gq_")
    saved = tmp_path / "admin_token"
    assert saved.read_text().strip() == token
    assert stat.S_IMODE(os.stat(saved).st_mode) == 0o600
    assert ensure_admin(tmp_path) == token  # a restart creates no second admin
    admin = bearer(app, token)
    assert admin.get("/api/v1/jobs").status_code == 200
    _banner(get_settings(), token)
    assert f"admin token: {token}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/v1/jobs", 200),
        ("GET", "/api/v1/jobs/job_missing", 404),
        ("POST", "/api/v1/jobs", 422),
        ("GET", "/api/v1/openapi.json", 200),
        ("GET", "/api/v1/nowhere", 404),
    ],
)
def test_api_responses_carry_restrictive_headers(client, method, path, status):
    resp = client.open(path, method=method, json={} if method == "POST" else None)
    assert resp.status_code == status
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    csp = resp.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "'self'" not in csp
    assert resp.headers["Cache-Control"] == "no-store"


def test_unauthenticated_api_errors_carry_them_too(app, clean_db):
    resp = app.test_client().get("/api/v1/jobs")
    assert resp.status_code == 401
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Content-Security-Policy"].startswith("default-src 'none'")


def test_artifact_downloads_are_never_publicly_cached(client, world):
    resp = client.get(f"/api/v1/artifacts/{world['artifact_id']}")
    assert resp.status_code == 200 and resp.get_data() == b"alice's artifact"
    assert "public" not in resp.headers["Cache-Control"] and "private" in resp.headers["Cache-Control"]
    assert resp.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert "attachment" in resp.headers["Content-Disposition"]


def test_dashboard_keeps_its_own_policy(client, world):
    """The dashboard's pages still get their CSP (scripts from 'self'), not the API's."""
    page = client.get("/login")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
