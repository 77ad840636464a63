"""The Redis broker address and the Celery app used to *send* work (the worker side configures the same app).

Redis is only a wake-up signal: a message carries a job id and nothing else, and losing it loses no job (the
reconciler in ``worker/maintenance.py`` publishes again whatever Postgres says is queued with no message in flight).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable
from functools import lru_cache

from celery import Celery

from shared.breaker import Breaker
from shared.ids import HEX_DIGITS
from shared.kinds import TASK_BY_KIND
from shared.settings import get_settings

logger = logging.getLogger(__name__)

QUEUES = ("gpu", "cpu")

# kombu's Redis transport keeps a delivered, not yet acknowledged message in the hash UNACKED_KEY and its delivery
# time in the sorted set UNACKED_INDEX_KEY; a message older than the visibility timeout there is put back in its
# queue (redelivered).
UNACKED_KEY = "unacked"
UNACKED_INDEX_KEY = "unacked_index"
# After a failed publish, skip the broker for this long (the reconciler sends what was skipped), so a dead Redis
# costs one failed attempt now and then rather than one per request.
_publish_breaker = Breaker(open_seconds=2.0)


def redis_url() -> str:
    """``REDIS_URL``, else the embedded server recorded by a running ``genqueue up``."""
    settings = get_settings()
    if settings.redis_url:
        return settings.redis_url
    from shared.embedded import read_services

    info = read_services(settings.data_dir)
    if info:
        return info["redis_url"]
    raise RuntimeError("No broker: set REDIS_URL, or start the embedded services with `genqueue up`.")


def visibility_timeout() -> int:
    """Seconds before an unacknowledged message is redelivered (``GENQUEUE_VISIBILITY_TIMEOUT``, default 12 h).

    Long jobs outlive it safely: a live worker keeps renewing its messages (:func:`touch_deliveries`), and a message
    redelivered anyway is absorbed by the atomic claim. Tests set it low to prove exactly that.
    """
    return get_settings().visibility_timeout


def _transport_options() -> dict:
    vt = visibility_timeout()
    options = {
        "visibility_timeout": vt,
        "queue_order_strategy": "priority",
        "priority_steps": list(range(10)),
        "socket_timeout": 5,
        "socket_connect_timeout": 3,
    }
    if vt < 600:  # a short timeout only means something if kombu also looks for overdue messages often
        options.update(unacked_restore_interval=max(1, vt // 3), unacked_restore_throttle=1)
    return options


def configure(app: Celery, broker: str) -> Celery:
    """Celery settings shared by sender and worker: JSON only, late acks, prefetch 1, no result backend."""
    app.conf.update(
        broker_url=broker,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_backend=None,
        # A message is acknowledged only when its task returns, and requeued if the pool process running it dies:
        # the window between delivery and the claim in Postgres is covered by the broker, the rest by the lease.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue="gpu",
        task_create_missing_queues=True,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=3,
        broker_transport_options=_transport_options(),
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        worker_enable_remote_control=True,
    )
    if broker.startswith("redis://"):  # kombu's Redis transport, one client per channel (TLS, sentinel: kombu's own)
        app.conf.broker_transport = "shared.kombu_redis:Transport"
    return app


@lru_cache(maxsize=1)
def sender() -> Celery:
    """A Celery app used only to publish job ids (web, reconciler, a worker handing a job back).

    It tries the broker once per publish (no connection retry loop): a submission must not wait on a dead Redis.
    """
    app = configure(Celery("genqueue"), redis_url())
    app.conf.broker_transport_options = {**app.conf.broker_transport_options, "max_retries": 0}
    return app


def celery_priority(priority: int) -> int:
    """Map genqueue's -100..100 (higher first) onto Redis priority steps 0..9 (lower first)."""
    return max(0, min(9, 4 - round(priority / 25)))


def publish(job_id: str, kind: str, queue: str, priority: int) -> bool:
    """Send the job id; False (logged) when the broker is unreachable — the reconciler sends it later.

    A kind no worker has a task for (a row written by a newer or older version) is logged and not sent; it is not a
    broker failure, so it never trips the breaker that would hold back every other kind's jobs.
    """
    task = TASK_BY_KIND.get(kind)
    if task is None:
        logger.error("job %s has unknown kind %r: not published (known: %s)", job_id, kind, ", ".join(TASK_BY_KIND))
        return False
    if _publish_breaker.is_open():
        return False
    try:
        sender().send_task(task, args=[job_id], queue=queue, priority=celery_priority(priority), retry=False)
        return True
    except Exception as exc:  # noqa: BLE001 - any broker failure: the job row is committed, the reconciler resends
        _publish_breaker.trip()
        logger.warning("could not publish job %s (%s); the reconciler will send it", job_id, exc)
        return False


def redis_client(timeout: float = 5):
    """A plain Redis client on the broker with short timeouts (for the reconciler's scan and delivery renewal)."""
    import redis

    return redis.Redis.from_url(redis_url(), socket_timeout=timeout, socket_connect_timeout=min(3, timeout))


# The waiting messages of jobs a running batch just claimed (cross-job batching), taken out of their list: each would
# otherwise be delivered later only for the claim to drop it, a Celery round trip of the worker's time each (~1.5 ms
# here; after a burst of 1,000 joined jobs, seconds in which the worker serves nothing else). A message is only a
# wake-up (the job's row says what runs), so one not found here (already delivered, or not yet published) is dropped
# on delivery as before. KEYS[1] is one list (a queue at one priority step); ARGV[1] how many of its entries to look
# at, from the oldest end (where the oldest jobs, the ones a batch claims, wait); ARGV[2..] the job ids. A message's
# first job id (:data:`JOB_ID`) is its job's: the id is its only argument.
JOB_ID = re.compile(rb"job_[0-9a-f]{%d}" % HEX_DIGITS)  # a job id in a raw broker message
_WITHDRAW = """
local want, left = {}, 0
for i = 2, #ARGV do want[ARGV[i]] = true; left = left + 1 end
local budget = math.min(tonumber(ARGV[1]), redis.call('LLEN', KEYS[1]))
local removed, seen = 0, 0
while left > 0 and seen < budget do
  local n = math.min(64, budget - seen)
  local chunk = redis.call('LRANGE', KEYS[1], -(seen + n) + removed, -(seen + 1) + removed)
  for i = #chunk, 1, -1 do
    local id = string.match(chunk[i], 'job_' .. string.rep('%x', HEX_DIGITS))
    if id and want[id] then
      removed = removed + redis.call('LREM', KEYS[1], -1, chunk[i])
      want[id] = nil
      left = left - 1
    end
  end
  seen = seen + n
end
return removed
""".replace("HEX_DIGITS", str(HEX_DIGITS))
WITHDRAW_SCAN = 1024  # entries looked at per list and call: bounds the time Redis spends on one withdrawal


def queue_list(queue: str, priority: int) -> str:
    """The Redis list that holds ``queue``'s messages published with genqueue ``priority`` (kombu's naming: one
    list per priority step, the queue's own name for step 0)."""
    from kombu.transport.redis import Channel

    step = celery_priority(priority)
    return f"{queue}{Channel.sep}{step}" if step else queue


@lru_cache(maxsize=1)
def _withdraw_script():
    return redis_client().register_script(_WITHDRAW)


def withdraw(queue: str, jobs: Iterable[tuple[str, int]]) -> int:
    """Take the waiting messages of ``jobs`` (id, priority) out of ``queue``; returns how many were found. Never
    raises: a broker error only means the messages are delivered and dropped later, as before."""
    by_list: dict[str, list[str]] = {}
    for job_id, priority in jobs:
        by_list.setdefault(queue_list(queue, priority), []).append(job_id)
    removed = 0
    try:
        script = _withdraw_script()
        for key, ids in by_list.items():
            removed += int(script(keys=[key], args=[WITHDRAW_SCAN, *ids]))
    except Exception as exc:  # noqa: BLE001 - an optimisation only
        logger.debug("could not withdraw the messages of %d joined job(s): %s", sum(map(len, by_list.values())), exc)
    return removed


def touch_deliveries(tags: Iterable[str], client=None) -> int:
    """Mark messages this (live) worker holds as just delivered, so the visibility timeout never redelivers them.

    ``ZADD XX`` only updates tags still in the index: a message already restored to its queue is not resurrected.
    Called by the heartbeat of a running job (``worker/runtime.py``), so a message stays invisible exactly as long as
    its job's lease is kept.
    """
    tags = [t for t in tags if t]
    if not tags:
        return 0
    client = client or redis_client()
    return int(client.zadd(UNACKED_INDEX_KEY, dict.fromkeys(tags, time.time()), xx=True, ch=True) or 0)


# Remove delivered-but-unacknowledged messages whose holder stopped renewing them (score older than ARGV[1]); the
# score is re-read here, inside Redis, so a message renewed since the caller looked at it is kept.
_DROP_STALE = """
local n = 0
for i = 2, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if (not score) or tonumber(score) < tonumber(ARGV[1]) then
    redis.call('ZREM', KEYS[1], ARGV[i])
    redis.call('HDEL', KEYS[2], ARGV[i])
    n = n + 1
  end
end
return n
"""


def unacked_deliveries(stale_after: float, client=None) -> tuple[list[bytes], int]:
    """The raw unacknowledged messages still held by a live worker, and how many orphaned ones were dropped.

    A message counts as held while its delivery was made or renewed (:func:`touch_deliveries`) within
    ``stale_after`` seconds. Older ones belong to a worker that died or froze: kombu would put them back only after
    the visibility timeout (hours), so they are dropped here and the reconciler publishes their jobs again if
    Postgres says they are still ``queued`` (a frozen worker that wakes up acknowledges a tag that is gone: a no-op).
    """
    client = client or redis_client()
    cutoff = time.time() - stale_after
    fresh = set(client.zrange(UNACKED_INDEX_KEY, cutoff, "+inf", byscore=True))
    held, stale = [], []
    for tag, raw in client.hgetall(UNACKED_KEY).items():
        if tag in fresh:
            held.append(raw)
        else:
            stale.append(tag)
    dropped = int(client.eval(_DROP_STALE, 2, UNACKED_INDEX_KEY, UNACKED_KEY, cutoff, *stale)) if stale else 0
    return held, dropped
