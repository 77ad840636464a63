"""Uploaded datasets (text corpora, prompt files, image archives), deduplicated per owner by SHA-256."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from shared.models.base import Base, created_at_column


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("owner_id", "sha256", name="uq_datasets_owner_sha256"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(20))  # text | images
    format: Mapped[str] = mapped_column(String(20))  # txt | jsonl | idx | zip
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    stats: Mapped[dict[str, Any]]
    path: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime] = created_at_column()
