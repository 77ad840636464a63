"""A minimal circuit breaker: after a failure, skip the remote call for a while instead of failing on every request.

Used where a dead Redis must cost one short failed attempt now and then rather than one per request (publishing a
job id, counting a rate-limited request); what is skipped is recovered elsewhere (the reconciler, failing open).
"""

from __future__ import annotations

import threading
import time


class Breaker:
    def __init__(self, open_seconds: float):
        self.open_seconds = open_seconds
        self._lock = threading.Lock()
        self._open_until = 0.0

    def is_open(self, now: float | None = None) -> bool:
        """True while calls should be skipped (``now`` defaults to ``time.monotonic()``)."""
        return (time.monotonic() if now is None else now) < self._open_until

    def trip(self, now: float | None = None) -> None:
        """Record a failure: skip calls for ``open_seconds`` from ``now``."""
        with self._lock:
            self._open_until = (time.monotonic() if now is None else now) + self.open_seconds

    def reset(self) -> None:
        with self._lock:
            self._open_until = 0.0
