"""The platform's real services for the benchmarks that drive it end to end, started tolerantly and always stopped.

:class:`Platform` starts embedded PostgreSQL and Redis (the test stack), Celery workers and a gunicorn web, waits
for each however slowly it comes up (a loaded machine may take seconds to answer its first ``/health``), and stops
everything it started when the ``with`` block ends: on success, on an exception, on Ctrl-C or on SIGTERM.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

os.environ.setdefault("GENQUEUE_DATA_DIR", tempfile.mkdtemp(prefix="gq-bench-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import requests

from tests.stack import Stack, WorkerProcess

START_SECONDS = 180.0  # how long a service may take to come up on a busy machine


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``values``."""
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def seconds(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


class Platform:
    """``with Platform() as p:`` the stack, ``p.worker(...)``, ``p.web()`` and an authenticated ``p.http``."""

    def __init__(self, prefix: str = "gq-bench-"):
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        self.stack: Stack | None = None
        self.workers: list[WorkerProcess] = []
        self.webs: list[subprocess.Popen] = []
        self.http = requests.Session()
        self.base = ""
        self._previous_sigterm = None

    def __enter__(self) -> Platform:
        self._previous_sigterm = signal.signal(signal.SIGTERM, _raise_interrupt)
        self.stack = Stack(self.root)
        try:
            self.stack.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def worker(self, name: str, **env: str) -> WorkerProcess:
        w = WorkerProcess(self.stack, name=name, **env)
        self.workers.append(w)
        w.start(wait=False)
        w.wait_ready(timeout=START_SECONDS)
        return w

    def web(self, token: str, workers: int = 2) -> str:
        """Start gunicorn and wait until ``/health`` answers (any status, any delay); returns the API base URL."""
        from shared.cli.up import web_command
        from shared.embedded import free_port

        port = free_port()
        proc = subprocess.Popen(
            web_command("127.0.0.1", port, workers=workers),
            env=self.stack.env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.webs.append(proc)
        self.base = f"http://127.0.0.1:{port}/api/v1"
        deadline = time.monotonic() + START_SECONDS
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the web exited with {proc.returncode} before answering")
            try:
                self.http.get(f"{self.base}/health", timeout=10)
                break
            except requests.RequestException:  # refused, reset, or slower than 10 s: still starting
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the web did not answer /health in {START_SECONDS:.0f}s") from None
                time.sleep(0.2)
        self.http.headers["Authorization"] = f"Bearer {token}"
        return self.base

    def wait_jobs(self, ids: list[str], timeout: float = 900) -> list[dict]:
        """Wait until every job of ``ids`` ended; returns them (as the API shows them) in the order of ``ids``.

        The wait itself reads Postgres (one indexed count every 20 ms), not the API: polling the job list at that
        rate would cost the web more CPU than the submissions being measured, on the same cores. The jobs are then
        read once through the API.
        """
        from sqlalchemy import text

        from shared.db import get_engine

        ended = "status IN ('succeeded', 'failed', 'cancelled')"
        count = text(f"SELECT count(*) FROM jobs WHERE id = ANY(:ids) AND {ended}")
        deadline = time.monotonic() + timeout
        with get_engine().connect() as conn:
            while conn.execute(count, {"ids": ids}).scalar() < len(set(ids)):
                conn.rollback()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"jobs unfinished after {timeout:.0f}s")
                time.sleep(0.02)
        return self.jobs(ids)

    def jobs(self, ids: list[str]) -> list[dict]:
        """The jobs ``ids`` through the API (the job list, newest first, paged), in the order of ``ids``."""
        pending, found, params = set(ids), {}, {"limit": 200}
        while pending:
            page = self.http.get(f"{self.base}/jobs", params=params, timeout=60).json()
            for j in page["items"]:
                if j["id"] in pending:
                    found[j["id"]] = j
                    pending.discard(j["id"])
            if not page.get("next_cursor"):
                break
            params["cursor"] = page["next_cursor"]
        if pending:
            raise LookupError(f"{len(pending)} jobs not in the job list")
        return [found[i] for i in ids]

    def wait_idle(self, timeout: float = 300, settle: float = 0.5) -> None:
        """Until the broker holds no message for the workers: none queued (any queue, any priority step) and none
        delivered but unacknowledged. Jobs that ran in another job's batch still have their own Celery message,
        which the worker drops on receipt; after a burst of them the worker is not idle until they are drained."""
        import redis

        from shared.broker import QUEUES

        client = redis.Redis.from_url(self.stack.redis.url)
        deadline = time.monotonic() + timeout
        try:
            while True:
                keys = [k for q in QUEUES for k in client.scan_iter(match=f"{q}*")]
                queued = sum(client.llen(k) for k in keys if client.type(k) == b"list")
                if not queued and not client.hlen("unacked"):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the workers were still busy after {timeout:.0f}s ({queued} queued)")
                time.sleep(0.1)
        finally:
            client.close()
        time.sleep(settle)

    def close(self) -> None:
        """Stop every process started here (web, workers, Redis, PostgreSQL), whatever state they are in."""
        for proc in self.webs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for w in self.workers:
            try:
                w.stop()
            except Exception as exc:  # noqa: BLE001 - stop the others anyway; say what failed
                print(f"could not stop worker {w.name}: {exc}")
        if self.stack is not None:
            self.stack.stop()
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None
        shutil.rmtree(self.root, ignore_errors=True)
