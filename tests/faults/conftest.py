"""Fixtures of the fault-injection suite: a PostgreSQL + Redis of its own, so they can be stopped and restarted.

The suite never touches the session stack (``tests/conftest.py``): it starts a second embedded PostgreSQL and Redis
for the package, points this process at them while it runs, and points it back afterwards. Worker processes are
started per test (they are killed, stopped and frozen on purpose) and SIGKILLed at the end of each test.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest

from tests.stack import Stack, WorkerProcess

_EXPORTED = ("DATABASE_URL", "REDIS_URL")


def _reset_caches() -> None:
    from shared.broker import sender
    from shared.db import reset_engines
    from shared.settings import get_settings

    get_settings.cache_clear()
    sender.cache_clear()
    reset_engines()


@pytest.fixture(scope="package")
def fstack():
    """Embedded PostgreSQL + Redis for the fault suite only (migrated); restored env afterwards."""
    saved = {k: os.environ.get(k) for k in _EXPORTED}
    root = Path(tempfile.mkdtemp(prefix="genqueue-faults-"))
    s = Stack(root).start()
    try:
        yield s
    finally:
        s.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _reset_caches()
        if os.environ.get("GENQUEUE_KEEP_FAULT_LOGS") != "1":
            shutil.rmtree(root, ignore_errors=True)


class Workers:
    """Worker processes of one test; whatever is left is SIGKILLed (with its pool) when the test ends."""

    def __init__(self, stack: Stack):
        self.stack, self.started = stack, []

    def start(self, name: str, wait: bool = True, concurrency: int = 1, **env: str) -> WorkerProcess:
        env.setdefault("GENQUEUE_TEST_HOOKS", "1")
        w = WorkerProcess(self.stack, name=f"{name}-{int(time.time() * 1000) % 100000}", concurrency=concurrency, **env)
        self.started.append(w)
        return w.start(wait=wait)

    def cleanup(self) -> None:
        for w in self.started:
            if w.proc is not None and w.proc.poll() is None:
                try:
                    os.killpg(w.proc.pid, signal.SIGCONT)  # a frozen worker must be able to die
                    os.killpg(w.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                w.proc.wait(30)

    def logs(self) -> str:
        return "\n".join(f"===== {w.name} =====\n{w.log()[-6000:]}" for w in self.started)


@pytest.fixture
def workers(fstack, request):
    """Start workers with ``workers.start(name, **env)``; on failure their logs are printed."""
    fstack.truncate()
    ws = Workers(fstack)
    yield ws
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        print(ws.logs())
    ws.cleanup()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    if rep.when == "call":
        item.rep_call = rep
    return rep


@pytest.fixture
def fapp(fstack):
    from web.app import create_app

    return create_app({"TESTING": True})


@pytest.fixture
def fuser(fstack, workers):
    return fstack.make_user(f"u{int(time.time() * 1000)}")


@pytest.fixture
def fclient(fapp, fuser):
    c = fapp.test_client()
    c.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {fuser.token}"
    return c


@pytest.fixture
def fmodel(fstack, workers, tiny_model_dir):
    """The tiny GPT-2 registered in the fault suite's database."""
    from shared.registration import register_local_model

    return register_local_model(f"tiny-{int(time.time() * 1000)}", str(tiny_model_dir))
