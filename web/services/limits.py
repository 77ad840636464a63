"""Per-user limits checked before a submission becomes a job: the rate limit (Redis) and the queued-jobs cap.

Both raise :class:`~web.errors.TooMany` (429 with ``Retry-After``). The rate limit fails open when Redis is down
(see :mod:`web.ratelimit`); the cap is counted in Postgres, the source of truth.
"""

from __future__ import annotations

import logging

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from shared.models import Job, JobStatus, User
from shared.settings import get_settings
from web import ratelimit
from web.errors import TooMany

logger = logging.getLogger(__name__)

QUEUED_RETRY_AFTER = 30  # seconds: a hint only; the queue drains as fast as the workers do


def check_rate(user: User) -> None:
    """Count one submission against ``user``'s per-minute budget; 429 ``rate_limited`` past it."""
    decision = ratelimit.hit(user.id, get_settings().rate_limit_per_minute)
    if decision is None or decision.allowed:
        return
    logger.info("rate limit: %s made %d submissions this minute (limit %d)", user.name, decision.count, decision.limit)
    message = f"too many submissions: the limit is {decision.limit} a minute; retry in {decision.retry_after} s"
    raise TooMany(
        message,
        details=[{"msg": message, "limit": decision.limit, "window_seconds": ratelimit.WINDOW_SECONDS}],
        headers={"Retry-After": str(decision.retry_after)},
    )


# Built once: every submission counts (building the statement anew cost more CPU than running it).
_WAITING = (
    select(Job.id).where(Job.owner_id == bindparam("owner"), Job.status == JobStatus.QUEUED).limit(bindparam("cap"))
)
_QUEUED_COUNT = select(func.count()).select_from(_WAITING.subquery())


def queued_count(s: Session, user: User, cap: int) -> int:
    """How many of ``user``'s jobs wait in the queue, counted up to ``cap`` (so the query stays cheap)."""
    return s.scalar(_QUEUED_COUNT, {"owner": user.id, "cap": cap}) or 0


def check_queued(s: Session, user: User) -> None:
    """429 ``too_many_queued`` when ``user`` already has the maximum number of queued jobs."""
    cap = get_settings().max_queued_per_user
    if cap > 0 and queued_count(s, user, cap) >= cap:
        message = f"you already have {cap} queued jobs, the most allowed; wait for some to start or cancel some"
        raise TooMany(
            message,
            code="too_many_queued",
            details=[{"msg": message, "limit": cap}],
            headers={"Retry-After": str(QUEUED_RETRY_AFTER)},
        )


def check_submission(s: Session, user: User) -> None:
    """Everything a new job must pass before it is validated and stored: the rate limit, then the queue cap."""
    check_rate(user)
    check_queued(s, user)
