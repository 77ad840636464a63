"""Workers seen by their heartbeat (for /health and the system page)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from shared.models.base import Base, created_at_column


class Worker(Base):
    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)  # celery hostname, e.g. worker@host
    queues: Mapped[str] = mapped_column(String(200))
    device: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int]
    current_job_id: Mapped[str | None] = mapped_column(String(40))
    started_at: Mapped[datetime] = created_at_column()
    last_seen: Mapped[datetime]
    gpu_memory_bytes: Mapped[int | None] = mapped_column(BigInteger)  # device memory used (nvidia-smi), CUDA only
