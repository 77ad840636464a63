"""Loaded models kept in the worker process, so a second job on the same model does not load it again.

Keyed by where the weights live (directory + its modification time, or hub id), so a newly registered or
retrained model is picked up without a restart. Least recently used entries are evicted past ``capacity``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from shared.settings import get_settings

logger = logging.getLogger(__name__)


class ModelCache:
    def __init__(self, capacity: int = 2):
        self.capacity = capacity
        self._items: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0

    @staticmethod
    def key(source: str, kind: str) -> tuple:
        stamp = os.stat(source).st_mtime_ns if os.path.isdir(source) else 0
        return (kind, source, stamp)

    def get(self, source: str, kind: str, loader: Callable[[], Any]) -> Any:
        """The cached model for ``source``, loading it with ``loader()`` on a miss."""
        key = self.key(source, kind)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = loader()
        with self._lock:
            self.loads += 1
            self._items[key] = value
            while len(self._items) > self.capacity:
                evicted, _ = self._items.popitem(last=False)
                logger.info("model cache evicted %s", evicted)
        return value


cache = ModelCache(capacity=get_settings().model_cache_size)
