"""``GET /health``: database, broker and workers seen recently; 503 when a dependency is down."""

from __future__ import annotations

from datetime import timedelta

from flask import jsonify
from sqlalchemy import func, select, text

from shared.models import Worker
from web.api import bp
from web.db import db_session

WORKER_FRESH = timedelta(seconds=30)


def _broker_ok() -> bool:
    import redis

    from shared.broker import redis_url

    try:
        return bool(redis.Redis.from_url(redis_url(), socket_timeout=2, socket_connect_timeout=2).ping())
    except Exception:  # noqa: BLE001 - any failure means "down" here
        return False


def worker_count() -> int:
    return db_session().scalar(select(func.count()).where(Worker.last_seen > func.now() - WORKER_FRESH)) or 0


@bp.get("/health")
def health():
    db_ok, workers = True, 0
    try:
        db_session().execute(text("SELECT 1"))
        workers = worker_count()
    except Exception:  # noqa: BLE001
        db_ok = False
        db_session().rollback()
    broker_ok = _broker_ok()
    ok = db_ok and broker_ok
    body = {
        "status": "ok" if ok else "degraded",
        "db": "ok" if db_ok else "down",
        "broker": "ok" if broker_ok else "down",
        "workers": workers,
    }
    return jsonify(body), 200 if ok else 503
