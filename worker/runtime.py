"""The life of one attempt: claim atomically, run the handler under a lease, finish with a fenced status write."""

from __future__ import annotations

import logging
import random
import threading
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import func, update
from sqlalchemy.exc import OperationalError

from shared.db import session_scope
from shared.models import Job, JobEvent, JobStatus
from shared.settings import get_settings
from shared.timeutil import utcnow
from worker.context import JobContext, UserError
from worker.fencing import Fenced, guard
from worker.ml.common import Stopped

logger = logging.getLogger(__name__)

Handler = Callable[[JobContext], dict[str, Any] | None]


class TransientError(Exception):
    """A failure worth retrying (lost connection, OOM after batch halving, …)."""


def transient_types() -> tuple[type[BaseException], ...]:
    import torch

    from worker.ml.generate import GenerationOOM

    return (TransientError, OperationalError, ConnectionError, torch.OutOfMemoryError, GenerationOOM)


def status_event(job_id: str, attempt: int, message: str, **data: Any) -> JobEvent:
    return JobEvent(job_id=job_id, attempt=attempt, type="status", message=message, data=data or None)


def claim(job_id: str, worker: str, device: str) -> JobContext | None:
    """Atomically move a queued job to running; None if someone else has it, it was cancelled, or it waits."""
    settings = get_settings()
    with session_scope() as s:
        job = s.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
            .where((Job.not_before.is_(None)) | (Job.not_before <= func.now()))
            .values(
                status=JobStatus.RUNNING,
                started_at=func.coalesce(Job.started_at, func.now()),
                lease_expires_at=func.now() + timedelta(seconds=settings.lease_seconds),
                heartbeat_at=func.now(),
                worker=worker,
                device=device,
                not_before=None,
                updated_at=func.now(),
            )  # fmt: skip
            .returning(Job)
        ).scalar_one_or_none()
        if job is None:
            return None
        s.add(status_event(job.id, job.attempt, f"running (attempt {job.attempt} on {worker}, {device})",
                           status="running", worker=worker, device=device))  # fmt: skip
        return JobContext(
            job_id=job.id, attempt=job.attempt, kind=job.kind, owner_id=job.owner_id, params=dict(job.params),
            started_at=utcnow(), timeout_seconds=job.timeout_seconds,
        )  # fmt: skip


def finish(ctx: JobContext, status: str, *, error: dict | None = None, summary: dict | None = None) -> None:
    """The terminal, fenced status write."""
    with session_scope() as s:
        job = guard(s, ctx.job_id, ctx.attempt)
        job.status = status
        job.finished_at = func.now()
        job.lease_expires_at = None
        job.error = error
        if summary:
            job.model_id = summary.pop("model_id", job.model_id)
            job.summary = summary
        if status == JobStatus.SUCCEEDED and job.progress_total:
            job.progress_done = job.progress_total
        message = status if error is None else f"{status}: {error['code']}: {error['message']}"
        s.add(status_event(ctx.job_id, ctx.attempt, message, status=status))


def backoff_seconds(attempt: int, base: float = 2.0, cap: float = 300.0) -> float:
    """Exponential backoff with full jitter."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))


def retry_or_fail(ctx: JobContext, code: str, message: str, count_attempt: bool = True) -> str:
    """Hand the job back to the queue with ``attempt + 1`` (after a backoff), or fail it when attempts ran out."""
    with session_scope() as s:
        job = guard(s, ctx.job_id, ctx.attempt)
        if count_attempt and job.attempt >= job.max_attempts:
            job.status, job.finished_at, job.lease_expires_at = JobStatus.FAILED, func.now(), None
            job.error = {"code": code, "message": f"{message} (after {job.attempt} attempts)"}
            s.add(status_event(job.id, job.attempt, f"failed: {code}: attempts exhausted", status="failed"))
            return JobStatus.FAILED
        delay = backoff_seconds(job.attempt) if count_attempt else 0.0
        if not count_attempt:
            job.max_attempts += 1  # a graceful hand-back does not use up the retry budget
        job.status, job.attempt, job.lease_expires_at, job.enqueued_at = JobStatus.QUEUED, job.attempt + 1, None, None
        job.cancel_requested = False
        job.not_before = utcnow() + timedelta(seconds=delay)
        s.add(status_event(job.id, job.attempt, f"queued again (attempt {job.attempt}): {code}: {message}",
                           status="queued", reason=code, delay_s=round(delay, 2)))  # fmt: skip
    return JobStatus.QUEUED


class LeaseKeeper(threading.Thread):
    """Renews the lease independently of the ML loop, and notices cancel requests, timeouts and fencing."""

    def __init__(self, ctx: JobContext, interval: float):
        super().__init__(daemon=True, name=f"lease-{ctx.job_id}")
        self.ctx, self.interval, self._stop_event = ctx, interval, threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            try:
                with session_scope() as s:
                    job = guard(s, self.ctx.job_id, self.ctx.attempt, get_settings().lease_seconds)
                    if job.cancel_requested and self.ctx.stop_reason is None:
                        self.ctx.stop_reason = "cancelled"
            except Fenced:
                self.ctx.stop_reason = "fenced"
                return
            except Exception as exc:  # noqa: BLE001 - the DB may be briefly down; the lease has slack
                logger.warning("lease renewal for %s failed: %s", self.ctx.job_id, exc)

    def stop(self) -> None:
        self._stop_event.set()


def run_job(job_id: str, handler: Handler, worker: str, device: str) -> str:
    """Claim and run one job; returns the status it ended in (or ``skipped``)."""
    ctx = claim(job_id, worker, device)
    if ctx is None:
        logger.info("job %s not claimable (already taken, cancelled, or waiting); message dropped", job_id)
        return "skipped"
    keeper = LeaseKeeper(ctx, get_settings().heartbeat_seconds)
    keeper.start()
    try:
        return _run_claimed(ctx, handler)
    finally:
        keeper.stop()


def _run_claimed(ctx: JobContext, handler: Handler) -> str:
    try:
        summary = handler(ctx)
        ctx.flush()
        finish(ctx, JobStatus.SUCCEEDED, summary=summary)
        return JobStatus.SUCCEEDED
    except Stopped as stop:
        return _stopped(ctx, stop.reason)
    except Fenced as exc:
        logger.warning("%s: stale attempt, nothing written: %s", ctx.job_id, exc)
        return "fenced"
    except UserError as exc:
        _flush_quietly(ctx)
        finish(ctx, JobStatus.FAILED, error={"code": exc.code, "message": exc.message})
        return JobStatus.FAILED
    except transient_types() as exc:
        logger.warning("%s: transient failure: %s", ctx.job_id, exc)
        _flush_quietly(ctx)
        return retry_or_fail(ctx, "transient_error", f"{type(exc).__name__}: {exc}"[:2000])
    except Exception as exc:
        logger.exception("%s failed", ctx.job_id)
        ctx.log(traceback.format_exc()[-4000:])
        _flush_quietly(ctx)
        finish(ctx, JobStatus.FAILED, error={"code": "internal_error", "message": f"{type(exc).__name__}: {exc}"})
        return JobStatus.FAILED


def _stopped(ctx: JobContext, reason: str) -> str:
    if reason == "fenced":
        return "fenced"
    _flush_quietly(ctx)
    if reason == "cancelled":
        finish(ctx, JobStatus.CANCELLED)
        return JobStatus.CANCELLED
    if reason == "timeout":
        finish(ctx, JobStatus.FAILED, error={"code": "timeout", "message": f"ran past {ctx.timeout_seconds}s"})
        return JobStatus.FAILED
    return retry_or_fail(ctx, "worker_shutdown", "the worker shut down; handed back", count_attempt=False)


def _flush_quietly(ctx: JobContext) -> None:
    try:
        ctx.flush()
    except Fenced:
        raise
    except Exception as exc:  # noqa: BLE001 - best effort before the status write, which reports its own errors
        logger.warning("final flush for %s failed: %s", ctx.job_id, exc)
