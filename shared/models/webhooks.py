"""Webhook deliveries (an outbox row per job event, written with the transition) and each attempt to deliver one."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, ForeignKey, Identity, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from shared.models.base import Base, created_at_column


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # an attempt is due at ``next_attempt_at`` (or in flight until then)
    SUCCEEDED = "succeeded"  # the receiver answered 2xx
    FAILED = "failed"  # every attempt of the retry schedule failed, or the URL was refused


class WebhookDelivery(Base):
    """One event of one job to one URL. ``id`` is the Standard Webhooks ``webhook-id``: the same on every retry."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(40))  # job.running | job.succeeded | job.failed | job.cancelled
    url: Mapped[str] = mapped_column(String(2048))
    status: Mapped[str] = mapped_column(String(20), default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None]
    payload: Mapped[str | None] = mapped_column(Text)  # the body, built at the first attempt, resent byte for byte
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = created_at_column()


class WebhookAttempt(Base):
    """One HTTP attempt: its outcome (``success``, ``http_error``, ``timeout``, ``connection_error``, ``refused``)."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_delivery_id_id", "delivery_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    delivery_id: Mapped[str] = mapped_column(ForeignKey("webhook_deliveries.id", ondelete="CASCADE"))
    number: Mapped[int]
    at: Mapped[datetime] = created_at_column()
    outcome: Mapped[str] = mapped_column(String(20))
    status_code: Mapped[int | None]
    duration_ms: Mapped[int]
    error: Mapped[str | None] = mapped_column(Text)
    response: Mapped[str | None] = mapped_column(Text)  # the start of the receiver's answer
