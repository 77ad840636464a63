"""Shared fixtures: a real PostgreSQL and a real Redis (embedded, started once), real Celery worker processes.

Unit tests use none of these; integration tests ask for ``client``/``worker`` and get the real stack.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from tests.stack import S3Server, Stack, WorkerProcess, use_isolated_settings, use_storage_env

# One data dir for the whole session, set before anything reads the settings.
_ROOT = Path(tempfile.mkdtemp(prefix="genqueue-test-"))
use_isolated_settings(_ROOT)


_s3: list[S3Server] = []


def _s3_server() -> S3Server:
    """The session's S3 API server (moto's, a child process), started on first use, stopped at the end."""
    if not _s3:
        _s3.append(S3Server(_ROOT / "s3").start())
    return _s3[0]


@pytest.fixture(scope="session")
def stack():
    """Embedded PostgreSQL + Redis for the session, migrated, with DATABASE_URL/REDIS_URL exported.

    ``GENQUEUE_TEST_STORAGE=s3`` runs the whole session with its store on the S3 server (default: ``file://``).
    """
    try:
        if os.environ.get("GENQUEUE_TEST_STORAGE") == "s3":
            from shared.storage import S3Storage, get_storage

            use_storage_env(_s3_server().env("suite"))
            assert isinstance(get_storage(), S3Storage)
        s = Stack(_ROOT).start()
        yield s
        s.stop()
    finally:
        for srv in _s3:
            srv.stop()
        shutil.rmtree(_ROOT, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_server():
    """The S3 API server (moto's) for tests that use S3 explicitly; stopped at the end of the session."""
    srv = _s3_server()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def worker(stack):
    """One real Celery worker process for the session (tests that kill workers start their own)."""
    w = WorkerProcess(stack, name="w-session").start()
    _session_workers.append(w)
    yield w
    _session_workers.remove(w)
    w.stop()


_session_workers: list[WorkerProcess] = []


@pytest.fixture
def held_queue(stack):
    """Jobs submitted during the test stay ``queued``: a session worker already started stops consuming meanwhile."""
    for w in _session_workers:
        w.consume(False)
    yield
    if _session_workers:  # what the test left queued is not for the session's worker (a demo's long training)
        from sqlalchemy import text

        with stack.engine().begin() as conn:
            conn.execute(text("UPDATE jobs SET status = 'cancelled', finished_at = now() WHERE status = 'queued'"))
    for w in _session_workers:
        w.consume(True)


@pytest.fixture
def clean_db(stack):
    """Empty the job tables and the users before a test (keeps the built-in models)."""
    stack.truncate()
    yield


@pytest.fixture
def app(stack, clean_db):
    from web.app import create_app

    return create_app({"TESTING": True})


@pytest.fixture
def admin(stack, clean_db):
    return stack.make_user("admin", admin=True)


@pytest.fixture
def user(stack, clean_db):
    return stack.make_user("alice")


@pytest.fixture
def client(app, user):
    """A Flask test client sending alice's bearer token."""
    c = app.test_client()
    c.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {user.token}"
    return c


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny GPT-2 saved with save_pretrained (once per session)."""
    from tests.tiny import make_tiny_gpt2

    return make_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture
def tiny_model(clean_db, tiny_model_dir):
    """The tiny GPT-2 registered as an operator would with `genqueue models add NAME PATH`."""
    from shared.registration import register_local_model

    return register_local_model(f"tiny-{int(time.time() * 1000)}", str(tiny_model_dir))
