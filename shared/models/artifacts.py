"""Files a job produced (sample grids, images, zips, checkpoints' final models), kept in the artifact store."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from shared.models.base import Base, created_at_column


class Artifact(Base):
    __tablename__ = "artifacts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(40), default="output")  # sample | image | grid | archive | output
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    step: Mapped[int | None]
    path: Mapped[str] = mapped_column(String(500))  # relative to the artifact store root
    attempt: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = created_at_column()
