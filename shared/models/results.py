"""Job results: generation (one row per prompt index and returned sequence) and tagging (one row per text); the
primary keys forbid duplicates, so a retried job skips what is stored."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from shared.models.base import Base, created_at_column


class TagResult(Base):
    """``text.tag``: one row per input text, with its entities (label, text, start, end, score)."""

    __tablename__ = "tag_results"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    text_index: Mapped[int] = mapped_column(primary_key=True)
    text_id: Mapped[str | None] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)
    entities: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    attempt: Mapped[int]
    created_at: Mapped[datetime] = created_at_column()


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
