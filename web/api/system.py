"""``GET /system``: health, the workers seen by their heartbeat, and how many messages wait in each queue."""

from __future__ import annotations

import logging

from flask import g, jsonify
from sqlalchemy import select, text

from shared.broker import QUEUES, redis_url
from shared.models import Job, Worker
from shared.timeutil import iso, utcnow
from web.api import bp
from web.api.health import WORKER_FRESH
from web.db import db_session

logger = logging.getLogger(__name__)


def queue_depths() -> list[dict] | None:
    """Messages waiting per Celery queue (priority variants are separate lists named after the queue); None if down."""
    import redis

    try:
        client = redis.Redis.from_url(redis_url(), socket_timeout=2, socket_connect_timeout=2)
        out = []
        for queue in QUEUES:
            depth = 0
            for key in client.scan_iter(match=f"{queue}*", count=100):
                if client.type(key) == b"list":
                    depth += client.llen(key)
            out.append({"name": queue, "depth": depth})
        return out
    except Exception as exc:  # noqa: BLE001 - a broker that is down is reported, not raised
        logger.warning("cannot read queue depths: %s", exc)
        return None


def _visible_job_ids(job_ids: set[str]) -> set[str]:
    """Which of the workers' current jobs this user may see (admins: all)."""
    if g.user.is_admin or not job_ids:
        return job_ids
    stmt = select(Job.id).where(Job.id.in_(job_ids), Job.owner_id == g.user.id)
    return set(db_session().scalars(stmt))


def workers_json() -> list[dict]:
    rows = db_session().scalars(select(Worker).order_by(Worker.last_seen.desc()).limit(200)).all()
    visible = _visible_job_ids({w.current_job_id for w in rows if w.current_job_id})
    now = utcnow()
    return [
        {
            "id": w.id,
            "queues": [q for q in w.queues.split(",") if q],
            "device": w.device,
            "pid": w.pid,
            "busy": w.current_job_id is not None,
            "current_job_id": w.current_job_id if w.current_job_id in visible else None,
            "started_at": iso(w.started_at),
            "last_seen": iso(w.last_seen),
            "alive": now - w.last_seen < WORKER_FRESH,
        }
        for w in rows
    ]


@bp.get("/system")
def system():
    """Health of the database and broker, workers (alive when seen in the last 30 s) and queue depths."""
    db_ok, workers = True, []
    try:
        db_session().execute(text("SELECT 1"))
        workers = workers_json()
    except Exception:
        logger.exception("database check failed")
        db_ok = False
        db_session().rollback()
    queues = queue_depths()
    broker_ok = queues is not None
    body = {
        "status": "ok" if db_ok and broker_ok else "degraded",
        "db": "ok" if db_ok else "down",
        "broker": "ok" if broker_ok else "down",
        "workers": workers,
        "workers_alive": sum(1 for w in workers if w["alive"]),
        "queues": queues or [{"name": q, "depth": None} for q in QUEUES],
        "checked_at": iso(utcnow()),
    }
    return jsonify(body)
