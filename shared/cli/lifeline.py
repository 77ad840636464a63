"""The lifeline of ``genqueue up``: a small watcher process that stops everything ``up`` started if ``up`` dies.

``genqueue up`` stops its children itself on Ctrl-C or SIGTERM. When it is killed outright (``kill -9``, the OOM
killer, a closed terminal) it cannot, and its children (gunicorn and its workers, the Celery worker and its pool,
Redis, PostgreSQL, which ``pg_ctl`` daemonises) would keep serving the port and holding the data dir.

So ``up`` starts this watcher first, in a session of its own, and keeps the write end of a pipe whose read end is the
watcher's standard input. Over the pipe ``up`` tells it what to stop (a JSON line per child it starts, and the
embedded PostgreSQL's data dir). The kernel closes the pipe when ``up`` dies, however it dies; the watcher reads end
of file and stops the children as ``up`` would have: SIGTERM to each main process, SIGKILL to what is left of each
process group after a grace period, then the embedded services. After a normal stop ``up`` sends ``release`` and the
watcher exits doing nothing. The watcher also inherits ``up``'s data-dir lock, so a new ``genqueue up`` on the same
data dir refuses until the cleanup is over.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

GRACE_SECONDS = 8.0  # after SIGTERM, before SIGKILL: enough for a job to checkpoint and be handed back


class Lifeline:
    """The ``up`` side: starts the watcher and tells it what to stop."""

    def __init__(self, keep_fds: tuple[int, ...] = ()):
        read_end, write_end = os.pipe()  # not inherited by the children started later (PEP 446)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "shared.cli.lifeline"],
                stdin=read_end,
                start_new_session=True,  # a closed terminal's SIGHUP must not reach it
                pass_fds=keep_fds,
            )
        finally:
            os.close(read_end)
        self._pipe: IO[str] = os.fdopen(write_end, "w", buffering=1)

    def _send(self, **message: object) -> None:
        self._pipe.write(json.dumps(message) + "\n")

    def child(self, name: str, pid: int) -> None:
        """Stop ``pid`` (and its process group) if ``up`` dies; a restarted child replaces the old entry."""
        self._send(name=name, pid=pid)

    def postgres(self, pgdata: Path) -> None:
        """Stop the embedded PostgreSQL of ``pgdata`` (fast shutdown) if ``up`` dies."""
        self._send(name="postgres", pgdata=str(pgdata))

    def release(self) -> None:
        """``up`` stopped everything itself: the watcher exits without touching anything."""
        self._send(release=True)
        self._pipe.close()
        self.proc.wait(10)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (our child, not reaped) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _signal(pid: int, sig: int, group: bool = False) -> None:
    try:
        os.killpg(pid, sig) if group else os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_gone(pids: list[int], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)


def _postmaster_pid(pgdata: str) -> int | None:
    try:
        return int(Path(pgdata, "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def stop_all(children: dict[str, dict]) -> None:
    """Stop the children as ``up`` would: the apps first (they use the services), then Redis and PostgreSQL."""
    services = ("redis", "postgres")
    for wave in (
        [c for n, c in children.items() if n not in services],
        [children[n] for n in services if n in children],
    ):
        pids = []
        for child in wave:
            pid = child.get("pid") or (_postmaster_pid(child["pgdata"]) if "pgdata" in child else None)
            if pid:
                # SIGINT is PostgreSQL's fast shutdown; SIGTERM everything else's graceful one
                _signal(pid, signal.SIGINT if "pgdata" in child else signal.SIGTERM)
                pids.append(pid)
        _wait_gone(pids, GRACE_SECONDS)
        for pid in pids:
            _signal(pid, signal.SIGKILL, group=True)  # stragglers of the group (a pool process, a gunicorn worker)
            _signal(pid, signal.SIGKILL)
        _wait_gone(pids, 2.0)


def main() -> int:
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # Ctrl-C and a closed terminal reach `up`; the pipe's end tells us
    children: dict[str, dict] = {}
    for line in sys.stdin:
        message = json.loads(line)
        if message.get("release"):
            return 0
        children[message["name"]] = message
    stop_all(children)  # end of file without release: `genqueue up` is gone
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
