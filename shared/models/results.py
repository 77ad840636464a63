"""Generation results: one row per (prompt index, returned sequence); the primary key forbids duplicates."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from shared.models.base import Base, created_at_column


class GenerationResult(Base):
    __tablename__ = "generation_results"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    prompt_index: Mapped[int] = mapped_column(primary_key=True)
    sequence: Mapped[int] = mapped_column(primary_key=True, default=0)
    prompt_id: Mapped[str | None] = mapped_column(String(200))
    prompt: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    tokens: Mapped[int]
    finish_reason: Mapped[str] = mapped_column(String(20))
    attempt: Mapped[int]
    created_at: Mapped[datetime] = created_at_column()
