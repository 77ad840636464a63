"""Training checkpoints in the object store, fenced: what lets a job killed on one host resume on another.

The ML loops (``worker/ml``) keep writing checkpoints to a local directory (``<root>/checkpoints/step-*``); this
module, at the task boundary, uploads each new one as a *snapshot* of the root (the newest checkpoint plus whatever
else the loop keeps there, e.g. a scratch tokenizer; the final model is not part of it) under an attempt-specific key
``jobs/<job>/checkpoints/a<attempt>-step-<n>/``, and then moves the job's pointer (``jobs.checkpoint_key``) to it in
a transaction that starts with :func:`worker.fencing.guard`. A stale attempt's guard fails, so its snapshot never
becomes the pointer and is deleted; a new attempt restores only from the pointer.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import select

from shared.db import session_scope
from shared.models import Job
from shared.objcache import get_cache
from shared.storage import Storage, dir_files, get_storage
from worker.context import JobContext
from worker.fencing import Fenced, guard, ride_out
from worker.ml.checkpoints import latest_checkpoint
from worker.ml.common import Stopped

logger = logging.getLogger(__name__)


class CheckpointSync:
    def __init__(self, job_id: str, attempt: int, root: Path, leave_out: tuple[str, ...] = ("model", "generator")):
        self.job_id, self.attempt, self.root, self.leave_out = job_id, attempt, Path(root), leave_out
        self.store: Storage = get_storage()
        self.synced: str | None = None  # the newest checkpoint's name already in the store

    def restore(self) -> str | None:
        """Fill ``root`` from the job's pointed-to snapshot (through the cache, verified); its key, or None."""
        with session_scope() as s:
            key = s.scalar(select(Job.checkpoint_key).where(Job.id == self.job_id))
        if not key:
            return None
        local = get_cache().tree(key)
        shutil.copytree(local, self.root, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".complete"))
        newest = latest_checkpoint(self.root / "checkpoints")
        self.synced = newest.name if newest else None
        logger.info("job %s attempt %d: restored checkpoint %s", self.job_id, self.attempt, key)
        return key

    def snapshot_files(self, newest: Path) -> list[Path]:
        ckpts = self.root / "checkpoints"
        out = []
        for p in dir_files(self.root):
            top = p.relative_to(self.root).parts[0]
            if top in self.leave_out or (p.is_relative_to(ckpts) and not p.is_relative_to(newest)):
                continue
            out.append(p)
        return out

    def sync(self) -> str | None:
        """Upload the newest local checkpoint if it is not in the store yet and point the job at it (fenced)."""
        newest = latest_checkpoint(self.root / "checkpoints")
        if newest is None or newest.name == self.synced:
            return None
        key = f"jobs/{self.job_id}/checkpoints/a{self.attempt}-{newest.name}"
        self.store.put_dir(key, self.root, only=self.snapshot_files(newest))
        try:
            old = ride_out(lambda: self._point(key), f"checkpoint pointer of {self.job_id}")
        except Fenced:
            self.store.delete(key)  # never resumed from: a newer attempt owns the job
            raise
        self.synced = newest.name
        if old and old != key:
            self.store.delete(old)
        logger.info("job %s attempt %d: checkpoint %s stored", self.job_id, self.attempt, key)
        return key

    def _point(self, key: str) -> str | None:
        with session_scope() as s:
            job = guard(s, self.job_id, self.attempt)
            old, job.checkpoint_key = job.checkpoint_key, key
            return old


@contextmanager
def stored_checkpoints(ctx: JobContext, root: Path) -> Iterator[CheckpointSync]:
    """Around a training call: restore from the job's pointer, upload each new checkpoint as the loop reports, and
    the last one when the loop stops (cancel, shutdown, timeout: it saves one before raising ``Stopped``)."""
    _drop_other_attempts(ctx)
    sync = CheckpointSync(ctx.job_id, ctx.attempt, root)
    if (key := sync.restore()) is not None:
        ctx.log(f"resuming from stored checkpoint {key.rsplit('/', 1)[-1]}")
    ctx.on_flush.append(sync.sync)
    try:
        yield sync
    except Stopped:
        sync.sync()
        raise
    finally:
        ctx.on_flush.remove(sync.sync)


def _drop_other_attempts(ctx: JobContext) -> None:
    """Working directories an earlier attempt of this job left on this host (it was killed); the store has the rest."""
    for d in ctx.work_dir.parent.glob(f"{ctx.job_id}-a*"):
        if d != ctx.work_dir:
            shutil.rmtree(d, ignore_errors=True)
