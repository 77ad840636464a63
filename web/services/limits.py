"""Per-user limits on submissions: the rate limit (Redis), checked first, and the queued-jobs cap.

Both are :class:`~web.errors.TooMany` (429 with ``Retry-After``). The rate limit fails open when Redis is down
(see :mod:`web.ratelimit`); the cap is counted in Postgres, the source of truth, by the statement that writes the job
(:func:`shared.lifecycle.submit`), so a request that would pass it costs no extra round trip.
"""

from __future__ import annotations

import logging

from shared.models import User
from shared.settings import get_settings
from web import ratelimit
from web.errors import TooMany

logger = logging.getLogger(__name__)

QUEUED_RETRY_AFTER = 30  # seconds: a hint only; the queue drains as fast as the workers do


def check_rate(user: User) -> None:
    """What every submission passes first, before it is validated: count it against ``user``'s per-minute budget;
    429 ``rate_limited`` past it."""
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


def too_many_queued(cap: int) -> TooMany:
    """429 ``too_many_queued``: the owner already has ``cap`` queued jobs (counted by the submission statement,
    :func:`shared.lifecycle.submit`, in the same round trip that writes the job)."""
    message = f"you already have {cap} queued jobs, the most allowed; wait for some to start or cancel some"
    return TooMany(
        message,
        code="too_many_queued",
        details=[{"msg": message, "limit": cap}],
        headers={"Retry-After": str(QUEUED_RETRY_AFTER)},
    )
