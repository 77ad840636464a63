"""``genqueue up`` owns its children: when it is killed outright (``kill -9``, the OOM killer, a closed terminal),
every process it started (gunicorn and its workers, the Celery worker and its pool, Redis, the daemonised PostgreSQL)
ends within seconds, the port and the data dir are free again, and the next ``genqueue up`` starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

from shared.embedded import free_port
from tests.faults.helpers import wait_for

pytestmark = pytest.mark.faults


def _stat(pid: str) -> tuple[int, str] | None:
    """(parent pid, state) of a process, or None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), fields[0]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
    except OSError:
        return ""


def processes_of(data_dir: Path) -> dict[int, str]:
    """Live processes started for ``data_dir``: those that inherited its ``GENQUEUE_DATA_DIR``, their descendants
    (Redis and PostgreSQL rewrite their environment for their process titles), and the embedded PostgreSQL's
    postmaster (daemonised by pg_ctl) with its children; with their commands."""
    marker = f"GENQUEUE_DATA_DIR={data_dir}".encode()
    live = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(entry.name)) and st[1] != "Z":
            live[int(entry.name)] = st[0]
    ours = set()
    for pid in live:
        try:
            if marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                ours.add(pid)
        except OSError:
            continue
    try:
        ours.add(int((data_dir / "pg" / "postmaster.pid").read_text().split()[0]))
    except (OSError, ValueError, IndexError):
        pass
    grew = True
    while grew:
        children = {pid for pid, parent in live.items() if parent in ours} - ours
        ours |= children
        grew = bool(children)
    return {pid: _cmdline(pid) for pid in ours if pid in live}


def alive(pids) -> dict[int, str]:
    return {pid: _cmdline(pid) for pid in pids if (st := _stat(str(pid))) and st[1] != "Z"}


def start_up(data_dir: Path, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(GENQUEUE_DATA_DIR=str(data_dir), GENQUEUE_PORT=str(port), HF_HUB_OFFLINE="1")
    log = open(data_dir.parent / "up.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "shared.cli.main", "up"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    return proc


def healthy(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=2).json().get("workers", 0) >= 1
    except (requests.RequestException, ValueError):
        return False


def test_kill_9_of_genqueue_up_ends_every_child(tmp_path):
    root = Path(tempfile.mkdtemp(prefix="gq-up-", dir="/tmp"))  # short: the Postgres socket path must fit
    data_dir, port = root / "data", free_port()
    data_dir.mkdir()
    up = start_up(data_dir, port)
    try:
        wait_for(lambda: healthy(port), 180, "genqueue up to serve with a worker")
        before = processes_of(data_dir)
        names = " ".join(before.values())
        assert len(before) >= 7 and "postgres" in names and "redis-server" in names and "gunicorn" in names, before

        started = time.monotonic()
        up.send_signal(signal.SIGKILL)
        up.wait(10)
        wait_for(lambda: not alive(before) and not processes_of(data_dir), 30, "every child of genqueue up to end")
        assert time.monotonic() - started < 30
        assert not healthy(port)

        again = start_up(data_dir, port)  # the data dir's lock and the port are free again
        try:
            wait_for(lambda: healthy(port), 180, "a new genqueue up on the same data dir")
        finally:
            again.send_signal(signal.SIGTERM)
            again.wait(60)
        wait_for(lambda: not processes_of(data_dir), 30, "a clean stop after SIGTERM")
    finally:
        for pid in processes_of(data_dir):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        print((root / "up.log").read_text()[-3000:] if (root / "up.log").exists() else "")


def test_a_crash_looping_child_is_restarted_with_backoff(tmp_path):
    from shared.cli.up import Supervisor

    sup = Supervisor(dict(os.environ))
    sup.start("crasher", [sys.executable, "-c", "raise SystemExit(3)"])
    deadline = time.monotonic() + 6.5
    while time.monotonic() < deadline:
        sup.watch_once()
        time.sleep(0.05)
    sup.stop(timeout=5)
    # delays 1 + 2 + 4 s: at most three restarts in 6.5 s (a fixed 1 s delay would have made about six)
    assert 2 <= sup.restarts <= 3, sup.restarts
    assert sup.backoff("crasher") >= 4
