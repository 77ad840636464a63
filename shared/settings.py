"""One source of settings: a frozen object read from the environment once, used by web, worker, Alembic and CLI."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from exc


@dataclass(frozen=True)
class Settings:
    """Everything configurable, with the defaults of DESIGN.md's configuration table."""

    data_dir: Path
    database_url: str | None  # None → embedded PostgreSQL under data_dir/pg
    redis_url: str | None  # None → embedded Redis under data_dir/redis
    host: str = "127.0.0.1"
    port: int = 5000
    secret_key: str = ""
    api_url: str = ""
    token: str | None = None
    max_body_bytes: int = 64 * 1024 * 1024
    max_prompts: int = 10_000
    max_prompt_chars: int = 20_000
    max_text_upload_bytes: int = 50 * 1024 * 1024
    max_image_upload_bytes: int = 200 * 1024 * 1024
    # Per-user limits on submissions (POST /jobs, retry, dataset uploads): a fixed one-minute window counted in Redis
    # (0 disables it), and caps on the user's jobs waiting in the queue and (enforced when a worker claims) running.
    rate_limit_per_minute: int = 600
    max_queued_per_user: int = 1000
    max_running_per_user: int = 0  # 0: no cap; enforced by the worker's claim (worker/admission.py)
    default_max_attempts: int = 3
    lease_seconds: int = 60
    heartbeat_seconds: int = 10
    rescue_interval_seconds: int = 15
    # Jobs go to "gpu" (ML work, CPU fallback) or "cpu"; by default a worker serves both, so one box runs everything.
    worker_queues: tuple[str, ...] = ("gpu", "cpu")
    worker_concurrency: int = 1
    retention_days: int = 0  # > 0: the maintenance loop deletes jobs that finished longer ago (web/services/cleanup.py)
    extra: dict = field(default_factory=dict)

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def embedded(self) -> bool:
        return self.database_url is None or self.redis_url is None


def _secret(data_dir: Path) -> str:
    """GENQUEUE_SECRET_KEY, else a random key generated once into the data dir (never a hard-coded fallback)."""
    env = os.environ.get("GENQUEUE_SECRET_KEY")
    if env:
        return env
    path = data_dir / "secret_key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(secrets.token_urlsafe(48))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    return path.read_text().strip()


def _token(data_dir: Path) -> str | None:
    env = os.environ.get("GENQUEUE_TOKEN")
    if env:
        return env
    path = data_dir / "admin_token"
    return path.read_text().strip() if path.exists() else None


def load_settings(*, client: bool = False) -> Settings:
    """Parse the environment into a :class:`Settings` (no caching; see :func:`get_settings`).

    ``client``: the view of a CLI client command, which only talks to the API: it never writes the web's secret into
    the data dir (``./var`` by default, relative to wherever the command runs)."""
    data_dir = Path(os.environ.get("GENQUEUE_DATA_DIR", "./var")).resolve()
    port = _int("GENQUEUE_PORT", 5000)
    queues = os.environ.get("GENQUEUE_WORKER_QUEUES")
    return Settings(
        data_dir=data_dir,
        database_url=os.environ.get("DATABASE_URL") or None,
        redis_url=os.environ.get("REDIS_URL") or None,
        host=os.environ.get("GENQUEUE_HOST", "127.0.0.1"),
        port=port,
        secret_key="" if client else _secret(data_dir),
        api_url=os.environ.get("GENQUEUE_URL", f"http://127.0.0.1:{port}"),
        token=_token(data_dir),
        max_body_bytes=_int("GENQUEUE_MAX_BODY_BYTES", 64 * 1024 * 1024),
        max_prompts=_int("GENQUEUE_MAX_PROMPTS", 10_000),
        max_text_upload_bytes=_int("GENQUEUE_MAX_TEXT_UPLOAD_BYTES", 50 * 1024 * 1024),
        max_image_upload_bytes=_int("GENQUEUE_MAX_IMAGE_UPLOAD_BYTES", 200 * 1024 * 1024),
        rate_limit_per_minute=_int("GENQUEUE_RATE_LIMIT_PER_MINUTE", 600),
        max_queued_per_user=_int("GENQUEUE_MAX_QUEUED_PER_USER", 1000),
        max_running_per_user=_int("GENQUEUE_MAX_RUNNING_PER_USER", 0),
        default_max_attempts=_int("GENQUEUE_MAX_ATTEMPTS", 3),
        lease_seconds=_int("GENQUEUE_LEASE_SECONDS", 60),
        heartbeat_seconds=_int("GENQUEUE_HEARTBEAT_SECONDS", 10),
        rescue_interval_seconds=_int("GENQUEUE_RESCUE_INTERVAL_SECONDS", 15),
        worker_queues=tuple(q for q in (queues or "gpu,cpu").split(",") if q),
        worker_concurrency=_int("GENQUEUE_WORKER_CONCURRENCY", 1),
        retention_days=_int("GENQUEUE_RETENTION_DAYS", 0),
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
