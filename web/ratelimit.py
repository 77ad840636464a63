"""A per-user rate limit on submissions, counted in Redis so that every web process shares one budget.

A fixed one-minute window: ``INCR genqueue:rl:<user id>:<unix minute>`` with an ``EXPIRE`` in the same pipeline.
A burst at a window's edge can reach twice the limit over two windows; that is the usual trade for one round trip
and one key per user per minute.

Redis is only a wake-up signal (docs/architecture.md): when it cannot be reached the limiter *fails open*, so
submissions still succeed while Postgres is up, and it stops trying for ``BREAKER_SECONDS`` so a dead Redis costs at
most one short connect timeout now and then rather than one per request.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import lru_cache

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from shared.breaker import Breaker

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 60
KEY = "genqueue:rl:{user}:{window}"
TIMEOUT_SECONDS = 0.5
BREAKER_SECONDS = 5.0

_breaker = Breaker(BREAKER_SECONDS)  # clocked by time.time(), like the windows (tests pass ``now``)


@dataclass(frozen=True)
class Decision:
    """The outcome of counting one request: allowed or not, and when the current window ends."""

    allowed: bool
    count: int
    limit: int
    retry_after: int  # whole seconds until the window resets (≥ 1)


@lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    """One client (connection pool) per URL: short timeouts and no retries, since failing open must be quick."""
    return redis.Redis.from_url(
        url,
        socket_timeout=TIMEOUT_SECONDS,
        socket_connect_timeout=TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=30,
    )


def _redis_url() -> str:
    from shared.broker import redis_url

    return redis_url()


def hit(user_id: str, limit: int, now: float | None = None) -> Decision | None:
    """Count one request of ``user_id``; None when the limit is off (``limit <= 0``) or Redis is unreachable."""
    if limit <= 0:
        return None
    now = time.time() if now is None else now
    if _breaker.is_open(now):
        return None
    window = int(now // WINDOW_SECONDS)
    key = KEY.format(user=user_id, window=window)
    try:
        pipe = _client(_redis_url()).pipeline(transaction=True)
        pipe.incr(key)
        pipe.expire(key, WINDOW_SECONDS * 2)
        count = int(pipe.execute()[0])
    except (redis.RedisError, OSError, RuntimeError) as exc:  # RuntimeError: no broker configured at all
        _breaker.trip(now)
        logger.warning("rate limiter: Redis unavailable (%s); allowing requests for %.0f s", exc, BREAKER_SECONDS)
        return None
    retry_after = max(1, int((window + 1) * WINDOW_SECONDS - now + 0.999))
    return Decision(allowed=count <= limit, count=count, limit=limit, retry_after=retry_after)


def reset_breaker() -> None:
    """Forget a recorded Redis outage (tests, or after an operator fixed Redis and does not want to wait)."""
    _breaker.reset()
