"""``genqueue up``: embedded services (unless URLs are set) + migrations + a supervised worker + the web server."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from shared.cli.lifeline import Lifeline
from shared.settings import get_settings

logger = logging.getLogger(__name__)


def worker_name() -> str:
    """A default worker name unique per process (two workers on one host never share ``worker1@host``)."""
    return f"worker-{uuid.uuid4().hex[:8]}"


def worker_command(name: str | None = None, concurrency: int | None = None, queues: str | None = None) -> list[str]:
    settings = get_settings()
    name = name or worker_name()
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.celery_app",
        "worker",
        "--loglevel",
        "INFO",
        "-Q",
        queues or ",".join(settings.worker_queues),
        "-c",
        str(concurrency or settings.worker_concurrency),
        "-n",
        f"{name}@%h",
        "--without-gossip",
        "--without-mingle",
    ]


def web_command(host: str, port: int, workers: int = 2) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "web.wsgi:app",
        "--bind",
        f"{host}:{port}",
        "--workers",
        str(workers),
        "--threads",
        "4",
        "--worker-class",
        "gthread",
        "--timeout",
        "120",
        "--graceful-timeout",
        "10",
        "--access-logfile",
        "-",
        "--log-level",
        "warning",
        "--config",
        "python:web.gunicorn_conf",
    ]


class Supervisor:
    """Keeps child processes alive: a child that dies is restarted (as docker-compose's restart policy does).

    A child that keeps dying is restarted with exponential backoff (1 s, 2 s, 4 s … at most ``MAX_BACKOFF``), reset
    once it has run ``STABLE_SECONDS``. With a :class:`~shared.cli.lifeline.Lifeline`, every child started is
    registered with it, so the children end with the supervisor even if it is killed outright.
    """

    MAX_BACKOFF = 30.0
    STABLE_SECONDS = 60.0

    def __init__(self, env: dict[str, str], log_dir: Path | None = None, lifeline: Lifeline | None = None):
        self.env, self.children, self.stopping, self.log_dir = env, {}, False, log_dir
        self.lifeline, self.restarts = lifeline, 0
        self._started: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self._restart_at: dict[str, float] = {}

    def start(self, name: str, cmd: list[str]) -> None:
        out = open(self.log_dir / f"{name}.log", "ab") if self.log_dir else None
        try:
            stderr = subprocess.STDOUT if out else None
            proc = subprocess.Popen(cmd, env=self.env, start_new_session=True, stdout=out, stderr=stderr)
        finally:
            if out:
                out.close()
        self.children[name] = (cmd, proc)
        self._started[name] = time.monotonic()
        if self.lifeline is not None:
            self.lifeline.child(name, proc.pid)

    def backoff(self, name: str) -> float:
        """Seconds before restarting ``name`` after its latest exit."""
        return min(self.MAX_BACKOFF, 2.0 ** (self._failures.get(name, 1) - 1))

    def watch_once(self) -> None:
        """Restart the children that exited, each once its backoff has passed (never blocks)."""
        now = time.monotonic()
        for name, (cmd, proc) in list(self.children.items()):
            if proc.poll() is None or self.stopping:
                continue
            if name not in self._restart_at:
                ran = now - self._started.get(name, now)
                self._failures[name] = 1 if ran >= self.STABLE_SECONDS else self._failures.get(name, 0) + 1
                self._restart_at[name] = now + self.backoff(name)
                print(
                    f"genqueue: {name} exited with {proc.returncode}; restarting in {self.backoff(name):.0f}s",
                    flush=True,
                )
            if now >= self._restart_at[name]:
                del self._restart_at[name]
                self.start(name, cmd)
                self.restarts += 1

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM each child's main process, as docker does, then wait, then SIGKILL what is left of each group.

        The worker's main process forwards the SIGTERM to the pool processes running jobs (``worker/celery_app.py``),
        which checkpoint and hand their jobs back; gunicorn's master stops its own workers.
        """
        self.stopping = True
        for _, proc in self.children.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for _, proc in self.children.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _signal_group(proc, signal.SIGKILL)  # stragglers of the group (a pool process left behind)
            proc.wait()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def start_services(data_dir: Path, lifeline: Lifeline | None = None):
    """Start embedded Postgres/Redis where no URL is configured; returns (db_url, redis_url, stoppers)."""
    from shared.embedded import EmbeddedPostgres, EmbeddedRedis

    settings, stoppers = get_settings(), []
    db_url, redis_url = settings.database_url, settings.redis_url
    if not db_url:
        if lifeline is not None:
            lifeline.postgres(data_dir / "pg")  # before it starts: up may die while pg_ctl waits
        pg = EmbeddedPostgres(data_dir / "pg").start()
        db_url, stoppers = pg.url, [*stoppers, pg.stop]
        print(f"genqueue: embedded PostgreSQL on 127.0.0.1:{pg.port} ({data_dir / 'pg'})", flush=True)
    if not redis_url:
        rd = EmbeddedRedis(data_dir / "redis").start()
        if lifeline is not None and rd.process is not None:
            lifeline.child("redis", rd.process.pid)
        redis_url, stoppers = rd.url, [*stoppers, rd.stop]
        print(f"genqueue: embedded Redis on 127.0.0.1:{rd.port} ({data_dir / 'redis'})", flush=True)
    return db_url, redis_url, stoppers


def ensure_admin(data_dir: Path) -> str | None:
    """On first start create an admin user and save its token in the data dir (0600); returns the token."""
    from sqlalchemy import select

    from shared.db import session_scope
    from shared.models import User
    from shared.users import create_user, issue_token

    token_file = data_dir / "admin_token"
    with session_scope() as s:
        if s.scalars(select(User).where(User.is_admin.is_(True))).first() is not None:
            return token_file.read_text().strip() if token_file.exists() else None
        token = issue_token(s, create_user(s, "admin", is_admin=True), name="first-start")
    tmp = token_file.with_suffix(".tmp")
    tmp.write_text(token + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, token_file)
    return token


class AlreadyRunning(RuntimeError):
    pass


def claim_data_dir(data_dir: Path):
    """Hold ``data_dir/up.lock`` for this process's life (returns the open file, which keeps the lock).

    Two ``genqueue up`` on one data dir would share its Postgres (the second stopping it under the first) and run two
    Redis servers on one dump file; the second one refuses instead. The lock goes with the process, even on SIGKILL.
    """
    f = open(data_dir / "up.lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        f.seek(0)
        pid = f.read().strip() or "?"
        f.close()
        raise AlreadyRunning(f"another `genqueue up` is running on {data_dir} (pid {pid})") from exc
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds: TIME_WAIT is no conflict
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def up(no_worker: bool = False) -> int:
    """Services (embedded unless their URLs are set), migrations, the web and, unless ``no_worker``, a worker."""
    settings = get_settings()
    data_dir = settings.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        lock = claim_data_dir(data_dir)
    except AlreadyRunning as exc:
        print(f"genqueue: {exc}. Stop it first, or give this one its own GENQUEUE_DATA_DIR.", file=sys.stderr)
        return 1
    try:
        if not port_free(settings.host, settings.port):
            print(
                f"genqueue: {settings.host}:{settings.port} is already in use; set GENQUEUE_PORT to another port.",
                file=sys.stderr,
            )
            return 1
        return _run(settings, data_dir, Lifeline(keep_fds=(lock.fileno(),)), no_worker)
    finally:
        lock.close()


def _run(settings, data_dir: Path, lifeline: Lifeline, no_worker: bool = False) -> int:
    db_url, redis_url, stoppers = start_services(data_dir, lifeline)  # if this fails, the lifeline cleans up
    from shared.embedded import remove_services, write_services

    os.environ["DATABASE_URL"], os.environ["REDIS_URL"] = db_url, redis_url
    if stoppers:
        write_services(data_dir, db_url, redis_url)
    get_settings.cache_clear()
    sup = Supervisor(dict(os.environ), lifeline=lifeline)
    stop_requested = []
    signal.signal(signal.SIGTERM, lambda *_: stop_requested.append(1))
    try:
        from shared.migrate import upgrade

        upgrade(db_url)
        token = ensure_admin(data_dir)
        if not no_worker:
            sup.start("worker", worker_command())
        sup.start("web", web_command(settings.host, settings.port))
        _banner(settings, token, no_worker)
        while not stop_requested:
            time.sleep(0.5)
            sup.watch_once()
    except KeyboardInterrupt:
        pass
    finally:
        print("genqueue: stopping…", flush=True)
        sup.stop()
        for stop in reversed(stoppers):
            stop()
        remove_services(data_dir)
        lifeline.release()
        print("genqueue: stopped", flush=True)
    return 0


def _banner(settings, token: str | None, no_worker: bool = False) -> None:
    url = f"http://{settings.host}:{settings.port}/"
    lines = ["", f"genqueue is up: {url}", f"  API:   {url}api/v1/health"]
    if no_worker:
        lines.append(
            "  no worker here (--no-worker): start `genqueue worker` on the worker hosts (README: Scaling out)"
        )
    if token:
        lines.append(f"  admin token: {token}   (also in {settings.data_dir / 'admin_token'})")
    lines += ["  Try:   genqueue demo      (in another terminal)", "  Stop:  Ctrl-C", ""]
    print("\n".join(lines), flush=True)
