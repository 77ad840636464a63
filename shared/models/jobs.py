"""Jobs and their event log (logs, metric points, status changes)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Identity, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from shared.models.base import Base, created_at_column


class JobStatus(StrEnum):
    """A job's states (``shared/lifecycle.py`` owns every move between them; see docs/architecture.md)."""

    QUEUED = "queued"
    RUNNING = "running"
    CANCELLING = "cancelling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.CANCELLING)
TERMINAL = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class Job(Base):
    """A unit of work. Postgres is the source of truth; the Celery message carries only ``id``.

    ``attempt`` is the fencing token: a worker's writes are conditioned on it, so a stale worker whose lease
    was taken over cannot overwrite the job.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_owner_created", "owner_id", "id"),
        Index("ix_jobs_status_lease", "status", "lease_expires_at"),
        UniqueConstraint("owner_id", "idempotency_key", name="uq_jobs_owner_idempotency"),
        Index("ix_jobs_metadata", "metadata", postgresql_using="gin", postgresql_ops={"metadata": "jsonb_path_ops"}),
        # cross-job batching: the queued jobs that may join a running batch, in claim order
        Index(
            "ix_jobs_queued_batch",
            "batch_key",
            text("priority DESC"),
            "created_at",
            "id",
            postgresql_where=text("status = 'queued' AND batch_key IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    kind: Mapped[str] = mapped_column(String(40), index=True)
    status: Mapped[str] = mapped_column(String(20), index=True, default=JobStatus.QUEUED)
    params: Mapped[dict[str, Any]]
    priority: Mapped[int] = mapped_column(default=0)
    queue: Mapped[str] = mapped_column(String(40), default="gpu")
    attempt: Mapped[int] = mapped_column(default=1)
    max_attempts: Mapped[int] = mapped_column(default=3)
    timeout_seconds: Mapped[int | None]
    progress_done: Mapped[int] = mapped_column(default=0)
    progress_total: Mapped[int] = mapped_column(default=0)
    error: Mapped[dict[str, Any] | None]
    summary: Mapped[dict[str, Any] | None]  # final metrics, counts
    cancel_requested: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    worker: Mapped[str | None] = mapped_column(String(200))
    device: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    enqueued_at: Mapped[datetime | None]
    not_before: Mapped[datetime | None]  # retry backoff: not claimed before this time
    model_id: Mapped[str | None] = mapped_column(String(40))
    # The stored checkpoint a retry resumes from; moved only by a fenced write of the attempt that wrote it.
    checkpoint_key: Mapped[str | None] = mapped_column(String(500))
    dataset_id: Mapped[str | None] = mapped_column(String(40))
    # shared.kinds.batch_key of its params (null: runs alone): jobs with one key may share a running batch
    batch_key: Mapped[str | None] = mapped_column(String(64))
    retry_of: Mapped[str | None] = mapped_column(String(40))
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    search_text: Mapped[str] = mapped_column(Text, default="")
    # The caller's labels (``metadata`` in the API; the attribute name ``metadata`` is SQLAlchemy's own).
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict, server_default=text("'{}'::jsonb"))
    webhook_url: Mapped[str | None] = mapped_column(String(2048))
    webhook_events: Mapped[list[Any] | None]  # statuses that are POSTed to ``webhook_url``
    created_at: Mapped[datetime] = created_at_column()
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = created_at_column()


class JobEvent(Base):
    """A log line, a metric point or a status change; ``id`` orders them for ``?after=`` polling."""

    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_job_id_id", "job_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(default=1)
    at: Mapped[datetime] = created_at_column()
    type: Mapped[str] = mapped_column(String(20))  # log | metric | status
    step: Mapped[int | None]
    message: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None]
