"""A bare Celery app with a no-op task: the baseline round trip for benchmarks/queue_overhead.py."""

from __future__ import annotations

import os

from celery import Celery

app = Celery("echo", broker=os.environ["REDIS_URL"], backend=os.environ["REDIS_URL"])
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_default_queue="echo",
)


@app.task(name="echo")
def echo(x: str) -> str:
    return x
