"""Webhooks: the caller's signing secret (read, rotate), their default URL, and a job's delivery log."""

from __future__ import annotations

from flask import g, jsonify
from pydantic import ValidationError
from sqlalchemy import bindparam, select, update

from shared import webhooks
from shared.models import User, WebhookAttempt, WebhookDelivery
from shared.schemas.api import WebhookSettings
from shared.timeutil import iso
from web.api import bp
from web.db import db_session
from web.errors import Invalid
from web.security import json_body
from web.services.jobs import checked_webhook_url, get_job, pydantic_details


def _me(lock: bool = False) -> User:
    stmt = select(User).where(User.id == g.user.id)
    return db_session().scalars(stmt.with_for_update() if lock else stmt).one()


_NEW_SECRET = (
    update(User)
    .where(User.id == bindparam("user_id"), User.webhook_secret.is_(None))
    .values(webhook_secret=bindparam("s"))
)
_SECRET = select(User.webhook_secret).where(User.id == bindparam("user_id"))


@bp.get("/webhooks/secret")
def webhook_secret():
    """The caller's ``whsec_`` secret, made on first use: one conditional statement, so two first requests at once
    get the same secret (a ``GET`` runs in autocommit, ``web/db.py``: no lock outlives its statement)."""
    s = db_session()
    s.execute(_NEW_SECRET, {"user_id": g.user.id, "s": webhooks.new_secret()})
    s.commit()
    return jsonify({"secret": s.scalar(_SECRET, {"user_id": g.user.id})})


@bp.post("/webhooks/secret")
def rotate_webhook_secret():
    """A new secret; deliveries signed from now on use it (the old one stops verifying at once)."""
    s, user = db_session(), _me(lock=True)
    user.webhook_secret = webhooks.new_secret()
    s.commit()
    return jsonify({"secret": user.webhook_secret})


@bp.get("/webhooks/settings")
def webhook_settings():
    return jsonify({"default_url": _me().webhook_url})


@bp.put("/webhooks/settings")
def update_webhook_settings():
    """Set (or clear, with ``null``) the default webhook URL of jobs that name none; checked like a job's."""
    body = json_body()
    if not isinstance(body, dict):
        raise Invalid("the request body must be a JSON object", code="invalid_body")
    try:
        req = WebhookSettings.model_validate(body)
    except ValidationError as exc:
        raise Invalid("invalid webhook settings", details=pydantic_details(exc)) from exc
    s, user = db_session(), _me(lock=True)
    user.webhook_url = checked_webhook_url(req.default_url)
    s.commit()
    return jsonify({"default_url": user.webhook_url})


@bp.get("/jobs/<job_id>/webhooks")
def job_webhooks(job_id: str):
    """Every delivery of the job's webhook, each with its attempts (outcome, HTTP status, duration, error)."""
    s = db_session()
    get_job(s, g.user, job_id)
    return jsonify({"items": deliveries_json(s, job_id), "next_cursor": None})


def deliveries_json(s, job_id: str) -> list[dict]:
    """A job's deliveries, oldest first, with their attempt log (also shown on the job page)."""
    rows = s.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id == job_id).order_by(WebhookDelivery.id))
    out = []
    for d in rows:
        attempts = s.scalars(
            select(WebhookAttempt).where(WebhookAttempt.delivery_id == d.id).order_by(WebhookAttempt.id)
        )
        out.append(
            {
                "id": d.id,
                "event": d.event,
                "url": d.url,
                "status": d.status,
                "attempts": d.attempts,
                "next_attempt_at": iso(d.next_attempt_at),
                "created_at": iso(d.created_at),
                "attempt_log": [
                    {
                        "number": a.number,
                        "at": iso(a.at),
                        "outcome": a.outcome,
                        "status_code": a.status_code,
                        "duration_ms": a.duration_ms,
                        "error": a.error,
                    }
                    for a in attempts
                ],
            }
        )
    return out
