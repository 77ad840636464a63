"""The device of this worker process, picked once (in the pool child, after fork)."""

from __future__ import annotations

from functools import lru_cache

from worker.ml.common import Device, pick_device


@lru_cache(maxsize=1)
def current_device() -> Device:
    import os

    return pick_device(os.environ.get("GENQUEUE_DEVICE"))
