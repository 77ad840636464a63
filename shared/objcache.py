"""A host's local cache of stored objects: content-addressed, sha256-verified, size-capped, least recently used out.

Entries live in ``<cache dir>/objects/<sha256>/``: a file entry holds ``data``, a directory entry (a model, a
checkpoint) the directory itself, addressed by its manifest's sha256. An entry is complete once its ``.complete``
marker exists; it is used in place (read-only by convention) and touched on every use, which is the LRU order.

Several pool processes (and the web's threads) share a cache: filling and evicting happen under an exclusive
``fcntl`` lock on ``<cache dir>/.lock``, so two processes never download the same entry at once nor evict one while
it is being filled. Entries touched within ``GRACE_SECONDS`` are not evicted (a job may be reading one), so the
cache may exceed its cap for that long.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from shared.settings import get_settings
from shared.storage import Storage, get_storage

logger = logging.getLogger(__name__)

GRACE_SECONDS = 60.0
_thread_lock = threading.Lock()  # flock is per open file; threads of one process also take this


class ObjectCache:
    def __init__(self, root: Path, max_bytes: int, storage: Storage, grace_seconds: float = GRACE_SECONDS):
        self.root, self.max_bytes, self.storage = Path(root), max_bytes, storage
        self.grace_seconds = grace_seconds
        self.objects = self.root / "objects"

    @contextmanager
    def _locked(self):
        self.objects.mkdir(parents=True, exist_ok=True)
        with _thread_lock, open(self.root / ".lock", "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def file(self, key: str, sha256: str) -> Path:
        """A local copy of the object ``key`` whose content is ``sha256`` (downloaded once, verified)."""
        entry = self.objects / sha256
        if not self._hit(entry):
            with self._locked():
                if not self._hit(entry):
                    self._fill(entry, lambda tmp: self.storage.get_to_path(key, tmp / "data", sha256=sha256))
                    self._evict(keep=entry)
        return entry / "data"

    def tree(self, prefix: str) -> Path:
        """A local copy of the stored directory ``prefix`` (by its manifest's sha256; every file verified)."""
        manifest, digest = self.storage.manifest(prefix)
        entry = self.objects / digest
        if not self._hit(entry):
            with self._locked():
                if not self._hit(entry):
                    self._fill(entry, lambda tmp: self.storage.get_dir(prefix, tmp, manifest))
                    self._evict(keep=entry)
        return entry

    def _hit(self, entry: Path) -> bool:
        if not (entry / ".complete").exists():
            return False
        now = time.time()
        try:  # the marker's mtime is the LRU clock (not the directory's: the model cache keys loaded models by it)
            os.utime(entry / ".complete", (now, now))
        except FileNotFoundError:  # evicted by another process just now
            return False
        return True

    def _fill(self, entry: Path, fetch) -> None:
        tmp = entry.with_name(f".{entry.name}.{os.getpid()}.part")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            fetch(tmp)
            (tmp / ".complete").touch()
            shutil.rmtree(entry, ignore_errors=True)
            os.replace(tmp, entry)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def entries(self) -> list[tuple[float, int, Path]]:
        """(last use, size, path) of each complete entry, least recently used first."""
        out = []
        for e in self.objects.iterdir() if self.objects.exists() else ():
            if e.name.startswith(".") or not (e / ".complete").exists():
                continue
            size = sum(f.stat().st_size for f in e.rglob("*") if f.is_file())
            out.append(((e / ".complete").stat().st_mtime, size, e))
        return sorted(out)

    def _evict(self, keep: Path) -> None:
        entries = self.entries()
        total = sum(size for _, size, _ in entries)
        now = time.time()
        for used, size, path in entries:
            if total <= self.max_bytes:
                break
            if path == keep or now - used < self.grace_seconds:
                continue
            shutil.rmtree(path, ignore_errors=True)
            total -= size
            logger.info("cache: evicted %s (%d bytes)", path.name, size)


_caches: dict[int, ObjectCache] = {}


def get_cache() -> ObjectCache:
    """This process's cache (from the settings)."""
    pid = os.getpid()
    if pid not in _caches:
        settings = get_settings()
        _caches[pid] = ObjectCache(settings.local_cache_dir, settings.cache_max_bytes, get_storage())
    return _caches[pid]
