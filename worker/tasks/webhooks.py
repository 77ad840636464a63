"""``genqueue.webhooks.deliver``: one attempt of one webhook delivery (see ``shared/webhooks.py``).

The message carries the delivery id and how many attempts it had when it was published: a duplicate message (the
sweep published it again while the first waited) finds the count moved on and does nothing. The delivery row stays
locked while its one POST runs (bounded by the webhook timeouts), so two workers never send the same attempt.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select, update

from shared import webhooks
from shared.db import session_scope
from shared.jobview import job_json
from shared.models import DeliveryStatus, Job, User, WebhookAttempt, WebhookDelivery
from shared.timeutil import utcnow
from worker.celery_app import app

logger = logging.getLogger(__name__)


def secret_for(s, owner_id: str) -> str:
    """The owner's ``whsec_`` secret, made now if they never asked for one (they can read it with the API).

    Read without a lock: the delivery's transaction stays open during the POST, and must not hold up the owner's
    other deliveries or their secret's rotation. A missing secret is made in its own short transaction.
    """
    secret = s.scalar(select(User.webhook_secret).where(User.id == owner_id))
    if secret:
        return secret
    with session_scope() as other:
        other.execute(
            update(User)
            .where(User.id == owner_id, User.webhook_secret.is_(None))
            .values(webhook_secret=webhooks.new_secret())
        )
    with session_scope() as other:
        return other.scalar(select(User.webhook_secret).where(User.id == owner_id))


def deliver(delivery_id: str, attempts: int) -> str:
    """Make attempt ``attempts + 1`` of the delivery if it is still pending at that count; returns what happened."""
    with session_scope() as s:
        d = s.scalars(
            select(WebhookDelivery).where(WebhookDelivery.id == delivery_id).with_for_update(skip_locked=True)
        ).first()
        if d is None or d.status != DeliveryStatus.PENDING or d.attempts != attempts:
            return "skipped"
        if d.payload is None:  # built once, at the first attempt: every retry sends the same body
            d.payload = webhooks.payload(d.event, job_json(s.get(Job, d.job_id))).decode()
        body = d.payload.encode()
        result = webhooks.post(d.url, body, webhooks.headers(secret_for(s, d.owner_id), d.id, body))
        d.attempts += 1
        s.add(
            WebhookAttempt(
                delivery_id=d.id,
                number=d.attempts,
                outcome=result.outcome,
                status_code=result.status_code,
                duration_ms=result.duration_ms,
                error=result.error,
                response=(result.response or "")[:1000] or None,
            )
        )
        delay = None if result.outcome in ("success", "refused") else webhooks.next_attempt_delay(d.attempts)
        if result.outcome == "success":
            d.status, d.next_attempt_at = DeliveryStatus.SUCCEEDED, None
        elif delay is None:
            d.status, d.next_attempt_at = DeliveryStatus.FAILED, None
        else:
            d.next_attempt_at = utcnow() + timedelta(seconds=delay)
        d.updated_at = utcnow()
    logger.info("webhook %s (%s) attempt %d: %s", delivery_id, d.event, d.attempts, result.outcome)
    return result.outcome


@app.task(name=webhooks.TASK, ignore_result=True)
def deliver_task(delivery_id: str, attempts: int) -> str:
    return deliver(delivery_id, attempts)
