"""The Celery app of the worker processes: broker from the settings, one thin task module per job kind."""

from __future__ import annotations

import logging
import os

from celery import Celery, signals

from shared.broker import configure, redis_url
from shared.settings import get_settings

logger = logging.getLogger(__name__)

TASK_MODULES = [
    "worker.tasks.text_generate",
    "worker.tasks.text_train",
    "worker.tasks.image_train_gan",
    "worker.tasks.image_generate",
]

app = configure(Celery("genqueue", include=TASK_MODULES), redis_url())

_maintenance = None


def host_device() -> str:
    """What the main process reports before a child has touched CUDA (initialising CUDA before fork breaks it)."""
    return "cuda" if os.path.exists("/dev/nvidia0") else "cpu"


@signals.worker_process_init.connect
def _after_fork(**_: object) -> None:
    """Each pool child opens its own database connections."""
    from shared.db import reset_engines

    reset_engines()


@signals.worker_ready.connect
def _start_maintenance(sender=None, **_: object) -> None:
    global _maintenance
    from worker.maintenance import Maintenance

    queues = ",".join(get_settings().worker_queues)
    _maintenance = Maintenance(sender.hostname if sender else "worker", queues, host_device(), os.getpid())
    _maintenance.start()


@signals.worker_shutting_down.connect
def _stop_maintenance(**_: object) -> None:
    if _maintenance is not None:
        _maintenance.stop_event.set()
