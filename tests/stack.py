"""The real services under test: embedded PostgreSQL and Redis, an S3 API server (moto's), Celery worker processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text


def use_isolated_settings(root: Path) -> None:
    """Point genqueue at a private data dir and embedded services under ``root``, offline, with short leases (a lost
    worker is noticed within seconds rather than a minute). Call before anything reads the settings."""
    os.environ["GENQUEUE_DATA_DIR"] = str(root / "data")
    os.environ.setdefault("GENQUEUE_LEASE_SECONDS", "8")
    os.environ.setdefault("GENQUEUE_HEARTBEAT_SECONDS", "1")
    os.environ.setdefault("GENQUEUE_RESCUE_INTERVAL_SECONDS", "1")
    # Webhook receivers in the tests are HTTP servers on 127.0.0.1, which the SSRF guard refuses unless allowed;
    # tests/unit/test_webhooks.py checks that it is refused without this.
    os.environ.setdefault("GENQUEUE_WEBHOOK_ALLOW_NETS", "127.0.0.0/8")
    os.environ.setdefault("GENQUEUE_WEBHOOK_TIMEOUT_SECONDS", "2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("REDIS_URL", None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class S3Server:
    """moto's standalone S3 API server as a child process on a free port: an emulator speaking the S3 protocol over
    HTTP, so boto3 in every process (web, workers) talks to it as it would to AWS S3, MinIO or Ceph RGW."""

    ACCESS = {"AWS_ACCESS_KEY_ID": "genqueue-test", "AWS_SECRET_ACCESS_KEY": "genqueue-test-secret"}

    def __init__(self, root: Path, bucket: str = "genqueue-test"):
        self.root, self.bucket = root, bucket
        self.proc: subprocess.Popen | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, prefix: str = "store") -> dict[str, str]:
        """What a process needs to use this server: the standard AWS variables and the storage URL."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": "us-east-1",
            **self.ACCESS,
            "GENQUEUE_STORAGE_URL": f"s3://{self.bucket}/{prefix}",
        }

    def start(self, timeout: float = 60) -> S3Server:
        import sys

        import requests

        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        log = open(self.root / "moto.log", "ab")
        cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto server exited: {(self.root / 'moto.log').read_text()[-2000:]}")
            try:
                requests.get(f"{self.endpoint}/moto-api/", timeout=1)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"moto server not up in {timeout}s") from None
                time.sleep(0.2)
        self.client().create_bucket(Bucket=self.bucket)
        return self

    def client(self):
        import boto3

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.ACCESS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.ACCESS["AWS_SECRET_ACCESS_KEY"],
        )

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def use_storage_env(env: dict[str, str]) -> None:
    """Point this process at another store (its settings, store and cache are read again)."""
    from shared import objcache
    from shared.settings import get_settings
    from shared.storage import get_storage

    os.environ.update(env)
    get_settings.cache_clear()
    get_storage.cache_clear()
    objcache._caches.clear()


@dataclass
class TestUser:
    id: str
    name: str
    token: str
    is_admin: bool


class Stack:
    def __init__(self, root: Path):
        self.root = root
        self.data_dir = root / "data"
        self.pg = self.redis = None

    def start(self) -> Stack:
        from shared.embedded import EmbeddedPostgres, EmbeddedRedis

        self.pg = EmbeddedPostgres(self.root / "pg").start()
        self.redis = EmbeddedRedis(self.root / "redis").start()
        self._export()
        from shared.migrate import upgrade

        upgrade(self.pg.url)
        return self

    def _export(self) -> None:
        os.environ["DATABASE_URL"], os.environ["REDIS_URL"] = self.pg.url, self.redis.url
        from shared.broker import sender
        from shared.db import reset_engines
        from shared.settings import get_settings

        get_settings.cache_clear()
        sender.cache_clear()
        reset_engines()

    def stop(self) -> None:
        if self.redis:
            self.redis.stop()
        if self.pg:
            self.pg.stop()

    # -- faults ------------------------------------------------------------------------------------------------
    def restart_redis(self, down_seconds: float = 0.0) -> None:
        port = self.redis.port
        self.redis.stop()
        time.sleep(down_seconds)
        self.redis.port = port
        self.redis.start()

    def restart_postgres(self, down_seconds: float = 0.0) -> None:
        port = self.pg.port
        self.pg.stop(mode="fast")
        time.sleep(down_seconds)
        self.pg.port = port
        self.pg.start()

    # -- data ---------------------------------------------------------------------------------------------------
    def engine(self):
        from shared.db import get_engine

        return get_engine()

    def truncate(self) -> None:
        with self.engine().begin() as c:
            c.execute(
                text("TRUNCATE jobs, job_events, generation_results, artifacts, datasets, api_tokens, workers CASCADE")
            )
            c.execute(text("DELETE FROM models WHERE source <> 'hub'"))
            c.execute(text("DELETE FROM users"))
        import redis

        redis.Redis.from_url(self.redis.url).flushall()

    def make_user(self, name: str, admin: bool = False) -> TestUser:
        from shared.db import session_scope
        from shared.users import create_user, issue_token

        with session_scope() as s:
            u = create_user(s, name, is_admin=admin)
            token = issue_token(s, u, "test")
            return TestUser(u.id, name, token, admin)

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update({"DATABASE_URL": self.pg.url, "REDIS_URL": self.redis.url, "PYTHONUNBUFFERED": "1"})
        env.update(extra)
        return env


class WorkerProcess:
    """``celery worker`` as a real child process (prefork, concurrency 1), like ``genqueue worker``."""

    def __init__(self, stack: Stack, name: str = "w1", concurrency: int = 1, **env: str):
        self.stack, self.name, self.concurrency, self.extra_env = stack, name, concurrency, env
        self.proc: subprocess.Popen | None = None
        self.log_path = stack.root / f"{name}.log"

    def start(self, wait: bool = True) -> WorkerProcess:
        from shared.cli.up import worker_command

        cmd = worker_command(self.name, self.concurrency, "gpu,cpu")  # what `genqueue worker` runs
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            cmd,
            env=self.stack.env(**self.extra_env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log()[-3000:]}")
            if "ready." in self.log():
                return
            time.sleep(0.2)
        raise TimeoutError(f"worker not ready in {timeout}s:\n{self.log()[-3000:]}")

    @property
    def hostname(self) -> str:
        return f"{self.name}@{socket.gethostname()}"

    def consume(self, on: bool) -> None:
        """Stop (or resume) taking messages from both queues, through Celery's remote control; the process stays up.

        Waits for the worker's acknowledgement, so a job submitted afterwards stays ``queued``.
        """
        from shared.broker import QUEUES, sender

        control = sender().control
        for queue in QUEUES:
            call = control.add_consumer if on else control.cancel_consumer
            replies = call(queue, destination=[self.hostname], reply=True, timeout=10)
            if not replies:
                raise RuntimeError(f"{self.hostname} did not answer the {'add' if on else 'cancel'}_consumer request")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole worker (main process and pool children)."""
        os.killpg(self.proc.pid, sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            self.proc.wait(60)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
