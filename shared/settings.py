"""One source of settings: every variable is declared once here (name, type, default, meaning), read from the
environment once, and used by web, worker, Alembic and the CLI. README's configuration table is checked against this
class by ``tests/unit/test_settings.py``.

Each field is read from ``GENQUEUE_<FIELD>`` unless its ``validation_alias`` names another variable. An empty
variable counts as unset; a value of the wrong type stops the process with one line naming the variable.
"""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MiB = 1024 * 1024


class Settings(BaseSettings):
    """Everything configurable. ``description`` is what the README's configuration table says of it."""

    model_config = SettingsConfigDict(env_prefix="GENQUEUE_", frozen=True, extra="ignore", env_ignore_empty=True)

    data_dir: Path = Field(Path("./var"), description="embedded servers, artifact store, generated secret, admin token")
    database_url: str | None = Field(
        None,
        validation_alias="DATABASE_URL",
        description="SQLAlchemy URL; unset: embedded PostgreSQL under the data dir",
    )
    redis_url: str | None = Field(
        None, validation_alias="REDIS_URL", description="Celery broker; unset: embedded Redis under the data dir"
    )
    host: str = Field("127.0.0.1", description="web bind address")
    port: int = Field(5000, description="web port")
    secret_key: str | None = Field(None, description="Flask session secret; unset: generated into the data dir")
    api_url: str | None = Field(
        None, validation_alias="GENQUEUE_URL", description="where the CLI's client commands send requests"
    )
    token: str | None = Field(None, description="the CLI's API token; unset: the admin token in the data dir")
    log_level: str = Field("WARNING", description="log level of the CLI and the processes it starts")
    max_body_bytes: int = Field(64 * MiB, description="JSON request body cap (413 above)")
    max_prompts: int = Field(10_000, description="prompts per generation job (422 above)")
    max_prompt_chars: int = Field(20_000, description="characters per prompt (422 above)")
    max_text_upload_bytes: int = Field(50 * MiB, description="text dataset upload cap (413 above)")
    max_image_upload_bytes: int = Field(200 * MiB, description="image dataset upload cap (413 above)")
    rate_limit_per_minute: int = Field(600, description="submissions per user per minute (429 above; 0: off)")
    max_queued_per_user: int = Field(1000, description="a user's jobs waiting in `queued` (429 above; 0: off)")
    max_running_per_user: int = Field(0, description="a user's jobs running at once, enforced by the claim (0: off)")
    max_attempts: int = Field(3, description="default attempts per job (a job's `max_attempts` param overrides)")
    coalesce_seconds: float = Field(
        30.0, ge=0, description="how long a text.generate batch keeps admitting other queued jobs of its model (0: off)"
    )
    lease_seconds: int = Field(60, description="a running job's lease; a worker silent this long is presumed lost")
    heartbeat_seconds: int = Field(10, description="how often a running job renews its lease")
    rescue_interval_seconds: int = Field(15, description="how often the rescuer and reconciler run (at most 5 s)")
    visibility_timeout: int = Field(12 * 3600, ge=1, description="seconds before Redis redelivers an unacked message")
    worker_queues: Annotated[tuple[str, ...], NoDecode] = Field(
        ("gpu", "cpu"), description="queues a worker consumes, comma-separated (ML jobs go to `gpu`)"
    )
    worker_concurrency: int = Field(1, description="pool processes per worker")
    model_cache_size: int = Field(2, ge=1, description="loaded models a worker process keeps in memory")
    device: str | None = Field(None, description="`cpu`, `cuda` or `cuda:N`; unset: CUDA if present, else CPU")
    gan_cpu_bf16: bool = Field(True, description="GAN training autocasts to bf16 on CPUs with native bf16")
    metrics_token: str | None = Field(
        None, description="a bearer token that may read `/metrics` (besides admin tokens); unset: admins only"
    )
    webhook_allow_nets: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="CIDRs webhooks may reach although private/loopback, comma-separated; empty: public only"
    )
    webhook_timeout_seconds: float = Field(
        10.0, gt=0, le=60, description="connect and read timeout of one webhook attempt"
    )
    storage_url: str | None = Field(
        None,
        description="`file:///dir` or `s3://bucket/prefix` (S3 settings: the standard `AWS_*` variables); "
        "unset: `file://` under the data dir",
    )
    cache_dir: Path | None = Field(
        None, description="a worker's local cache of stored objects; unset: `<data dir>/cache`"
    )
    cache_max_bytes: int = Field(
        20 * 1024 * MiB, ge=0, description="the cache's size cap; least recently used entries go first"
    )
    retention_days: int = Field(0, ge=0, description="> 0: finished jobs older than this are deleted (0: kept)")

    @field_validator("worker_queues", "webhook_allow_nets", mode="before")
    @classmethod
    def _csv(cls, v: object) -> object:
        return tuple(q.strip() for q in v.split(",") if q.strip()) if isinstance(v, str) else v

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def local_cache_dir(self) -> Path:
        return (self.cache_dir or self.data_dir / "cache").resolve()

    @property
    def embedded(self) -> bool:
        return self.database_url is None or self.redis_url is None

    @property
    def client_url(self) -> str:
        return self.api_url or f"http://127.0.0.1:{self.port}"

    def client_token(self) -> str | None:
        """``GENQUEUE_TOKEN``, else the admin token a local ``genqueue up`` saved in the data dir."""
        if self.token:
            return self.token
        path = self.data_dir / "admin_token"
        return path.read_text().strip() if path.exists() else None

    def session_secret(self) -> str:
        """``GENQUEUE_SECRET_KEY``, else a random key generated once into the data dir (never a hard-coded fallback).

        Only the web asks for it, so a client command never creates files.
        """
        if self.secret_key:
            return self.secret_key
        path = self.data_dir / "secret_key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(secrets.token_urlsafe(48))
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        return path.read_text().strip()


def env_name(name: str) -> str:
    """The environment variable a :class:`Settings` field is read from."""
    alias = Settings.model_fields[name].validation_alias
    return alias if isinstance(alias, str) else f"GENQUEUE_{name.upper()}"


def load_settings() -> Settings:
    """Parse the environment into a :class:`Settings` (no caching; see :func:`get_settings`)."""
    try:
        settings = Settings()
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        name = env_name(str(err["loc"][0])) if err["loc"] and err["loc"][0] in Settings.model_fields else "settings"
        raise SystemExit(f"{name}: {err['msg']} (got {err.get('input')!r})") from exc
    return settings.model_copy(update={"data_dir": settings.data_dir.resolve()})


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
