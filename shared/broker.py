"""The Redis broker address and the Celery app used to *send* work (the worker side configures the same app)."""

from __future__ import annotations

import logging
from functools import lru_cache

from celery import Celery

from shared.settings import get_settings

logger = logging.getLogger(__name__)

TASK_BY_KIND = {
    "text.generate": "genqueue.text.generate",
    "text.train": "genqueue.text.train",
    "image.train_gan": "genqueue.image.train_gan",
    "image.generate": "genqueue.image.generate",
}
QUEUES = ("gpu", "cpu")


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


def configure(app: Celery, broker: str) -> Celery:
    """Celery settings shared by sender and worker: JSON only, late acks, prefetch 1, no result backend."""
    settings = get_settings()
    app.conf.update(
        broker_url=broker,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue="gpu",
        task_create_missing_queues=True,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=3,
        broker_transport_options={
            # Postgres decides who runs a job; a redelivered message is absorbed by the atomic claim, so the
            # visibility timeout only needs to exceed a job's queue wait. Long jobs hold a lease, not a message.
            "visibility_timeout": settings.extra.get("visibility_timeout", 12 * 3600),
            "queue_order_strategy": "priority",
            "priority_steps": list(range(10)),
            "socket_timeout": 5,
            "socket_connect_timeout": 3,
        },
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        worker_enable_remote_control=True,
    )
    return app


@lru_cache(maxsize=1)
def sender() -> Celery:
    """A Celery app used only to publish job ids (web, reconciler)."""
    return configure(Celery("genqueue"), redis_url())


def celery_priority(priority: int) -> int:
    """Map genqueue's -100..100 (higher first) onto Redis priority steps 0..9 (lower first)."""
    return max(0, min(9, 4 - round(priority / 25)))


def publish(job_id: str, kind: str, queue: str, priority: int) -> bool:
    """Send the job id; False (logged) when the broker is unreachable — the reconciler sends it later."""
    try:
        sender().send_task(
            TASK_BY_KIND[kind], args=[job_id], queue=queue, priority=celery_priority(priority), retry=False
        )
        return True
    except Exception as exc:  # noqa: BLE001 - any broker failure: the job row is committed, the reconciler resends
        logger.warning("could not publish job %s (%s); the reconciler will send it", job_id, exc)
        return False
