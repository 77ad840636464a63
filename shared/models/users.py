"""Users and their API tokens (only a token's SHA-256 is stored)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from shared.models.base import Base, created_at_column


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    is_admin: Mapped[bool] = mapped_column(default=False)
    webhook_secret: Mapped[str | None] = mapped_column(String(100))  # ``whsec_…``, made on first use
    webhook_url: Mapped[str | None] = mapped_column(String(2048))  # the default for jobs that name none
    created_at: Mapped[datetime] = created_at_column()


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = created_at_column()
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
