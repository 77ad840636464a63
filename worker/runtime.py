"""The life of one attempt: claim atomically, run the handler under a lease, finish with a fenced status write.

How an attempt can end, and what becomes of the job:

==========================================  =====================================================================
the handler returns                         ``succeeded``
:class:`UserError`, invalid params          ``failed`` at once (bad input does not get better by retrying)
a transient error (connection, OOM, …)      ``queued`` again with ``attempt + 1`` after a jittered backoff, until
                                            ``max_attempts``; then ``failed``
an unexpected exception                     ``failed`` with ``internal_error`` (and the traceback in the job's log)
cancel requested                            ``cancelled`` at the next report (the loop saves what it has)
past ``timeout_seconds``                    ``failed`` with ``timeout``: at the next report, or, for a handler that
                                            stopped reporting, by the heartbeat thread, which then ends the process
SIGTERM (worker shutting down)              checkpoint at the next report, ``queued`` again at once (not counted as
                                            an attempt) and published for another worker
the process dies                            the lease expires and the rescuer requeues it (``worker/maintenance.py``)
a newer attempt owns the job                nothing: every write of this attempt is fenced off
==========================================  =====================================================================
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError

from shared import lifecycle
from shared.broker import publish, touch_deliveries, withdraw
from shared.db import session_scope
from shared.models import Job, JobStatus
from shared.settings import get_settings
from shared.timeutil import utcnow
from worker import testhooks
from worker.admission import defer_if_over_cap
from worker.context import JobContext, UserError
from worker.fencing import Fenced, guard, ride_out
from worker.ml.common import Stopped

logger = logging.getLogger(__name__)

Handler = Callable[[JobContext], dict[str, Any] | None]

JOINED_IDS = 10_000  # how many joined job ids a pool process remembers (their messages are dropped on arrival)
HUNG_EXIT_CODE = 75  # a pool process ended because its job ran past its timeout without stopping


class TransientError(Exception):
    """A failure worth retrying (lost connection, OOM after batch halving, …)."""


def _base_transient_types() -> tuple[type[BaseException], ...]:
    import torch

    return (TransientError, OperationalError, ConnectionError, torch.OutOfMemoryError)


@dataclass(frozen=True)
class KindPolicy:
    """How the runtime treats one kind's jobs; each task module declares its own (``worker/tasks/``)."""

    default_timeout_seconds: int  # for a job with no ``timeout_seconds`` of its own (the claim writes it in)
    transient: tuple[type[BaseException], ...] = ()  # the kind's own retry-worthy errors, besides the common ones
    # GPUs a job holds from the worker's device on, given its params and that device (default one; see
    # worker.tasks.common.holding_devices): more than one makes the reservation exclusive.
    devices: Callable[[dict[str, Any], Any], int] | None = None

    def transient_types(self) -> tuple[type[BaseException], ...]:
        return (*_base_transient_types(), *self.transient)


def hang_grace_seconds(timeout: int) -> float:
    """How long past its timeout a job that stopped reporting gets before its process is ended."""
    return min(60.0, max(2.0, timeout / 20))


def claim(job_id: str, worker: str, device: str, policy: KindPolicy) -> JobContext | None:
    """Atomically move a queued job to running; None if someone else has it, it was cancelled, or it waits."""
    with session_scope() as s:
        if defer_if_over_cap(s, job_id):
            logger.info("job %s deferred: its owner runs their cap of jobs", job_id)
            return None
        job = lifecycle.claim(
            s,
            job_id,
            worker=worker,
            device=device,
            lease_seconds=get_settings().lease_seconds,
            default_timeout=policy.default_timeout_seconds,
        )
        if job is None:
            return None
        ctx = _context(job)
        ctx.others_waiting = job.others_waiting
        return ctx


def _context(job) -> JobContext:
    """The context of a claimed job, from the row its claim returned (``lifecycle.claim``, ``claim_batch``)."""
    return JobContext(
        job_id=job.id,
        attempt=job.attempt,
        kind=job.kind,
        owner_id=job.owner_id,
        params=dict(job.params),
        started_at=job.started_at,
        timeout_seconds=job.timeout_seconds,
        queue=job.queue,
    )


def claim_more(ctx: JobContext, policy: KindPolicy, key: str, limit: int) -> list[JobContext]:
    """Claim up to ``limit`` more queued jobs with the batch key ``key`` on ``ctx``'s queue (cross-job batching).

    One statement (:func:`shared.lifecycle.claim_batch`): priority order, the per-user running cap, ``not_before``.
    Each claimed job is adopted at once (its lease is renewed with the running job's, SIGTERM hands it back); the
    caller runs it and ends it with :func:`settle`.
    """
    settings = get_settings()
    with session_scope() as s:
        jobs = lifecycle.claim_batch(
            s,
            key=key,
            queue=ctx.queue,
            limit=limit,
            cap=settings.max_running_per_user,
            worker=ctx.worker,
            device=ctx.device,
            lease_seconds=settings.lease_seconds,
            default_timeout=policy.default_timeout_seconds,
        )
        contexts = [_context(job) for job in jobs]
    for joined in contexts:
        joined.worker, joined.device = ctx.worker, ctx.device
        process.adopt(joined)
    if jobs:  # their messages would only be delivered to be dropped: take them out of the queue now
        withdraw(ctx.queue, [(job.id, job.priority) for job in jobs])
    return contexts


def settle(ctx: JobContext, policy: KindPolicy, summary: dict | None = None, error: BaseException | None = None) -> str:
    """End a job its handler ran itself (a job that joined another's batch): the status ``run_job`` would write.

    ``error`` is what stopped it (``Stopped``, ``UserError``, a transient error, …) or None for success. A job
    handed back on shutdown is published again at once. Returns the status written (or ``fenced``).
    """

    def outcome(_: JobContext) -> dict | None:
        if error is not None:
            raise error
        return summary

    try:
        status = _run_claimed(ctx, outcome, policy)
    finally:
        process.release(ctx)
    if status not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED):  # handed back, or fenced off
        process.joined_ids.pop(ctx.job_id, None)  # (rescued): its next message must be run, not dropped
    ctx.settled = status
    if status == JobStatus.QUEUED and ctx.stop_reason == "shutdown" and ctx is not process.running:
        _publish_quietly(ctx.job_id)  # (run_job publishes the job it claimed itself)
    return status


def settle_succeeded(done: list[tuple[JobContext, dict | None]], policy: KindPolicy) -> None:
    """End jobs of one batch that succeeded together: what :func:`settle` writes for each, in one fenced statement
    and one commit for all of them (:func:`shared.lifecycle.finish_attempts`) rather than one per job.

    A job whose attempt no longer owns it is left out of the write (it ends ``fenced``, as alone). If the shared
    write fails for another reason than the database being away, each job is settled alone, so that whatever one
    job's rows did fails that job only.
    """
    if len(done) == 1:
        settle(done[0][0], policy, summary=done[0][1])
        return
    taken = {ctx.job_id: ctx.take_buffered() for ctx, _ in done}

    def write() -> dict:
        with session_scope() as s:
            return lifecycle.finish_attempts(
                s, [_attempt_end(ctx, JobStatus.SUCCEEDED, taken[ctx.job_id], summary=summary) for ctx, summary in done]
            )

    try:
        owned = ride_out(write, f"finish {len(done)} jobs of a batch")
    except Exception as exc:  # noqa: BLE001 - each job then tries alone, and fails alone if it must
        logger.warning("could not end %d jobs of a batch together (%s); ending each alone", len(done), exc)
        for ctx, _ in done:
            ctx.restore_buffered(taken[ctx.job_id])
        for ctx, summary in done:
            try:
                settle(ctx, policy, summary=summary)
            except Exception:  # its lease runs out and the rescuer ends it; the others go on
                logger.exception("%s: could not write its end", ctx.job_id)
        return
    for ctx, _ in done:
        process.release(ctx)
        if ctx.job_id in owned:
            ctx.settled = JobStatus.SUCCEEDED
        else:
            logger.warning("%s: stale attempt, nothing written", ctx.job_id)
            process.joined_ids.pop(ctx.job_id, None)  # (rescued): its next message must be run, not dropped
            ctx.settled = "fenced"


def _attempt_end(ctx: JobContext, status: JobStatus, taken, **outcome) -> lifecycle.AttemptEnd:
    """How ``ctx``'s attempt ends, with what :meth:`JobContext.take_buffered` took from it."""
    events, progress, results = taken
    return lifecycle.AttemptEnd(
        ctx.job_id, ctx.attempt, status, progress=progress, events=events, results=results, **outcome
    )


def finish(ctx: JobContext, status: JobStatus, *, error: dict | None = None, summary: dict | None = None) -> None:
    """The terminal, fenced status write (retried through a short database outage), with the job's buffered events,
    progress and deferred results: one statement and one commit end the job (:func:`shared.lifecycle.finish_attempt`).
    """

    def write() -> None:
        with session_scope() as s:
            ended = lifecycle.finish_attempt(s, _attempt_end(ctx, status, taken, error=error, summary=summary))
            if ended is None:
                raise Fenced(f"job {ctx.job_id} attempt {ctx.attempt} no longer owns the job")

    taken = ctx.take_buffered()
    try:
        ride_out(write, f"finish {ctx.job_id}")
    except Exception:
        ctx.restore_buffered(taken)
        raise


def retry_or_fail(ctx: JobContext, code: str, message: str, count_attempt: bool = True) -> JobStatus:
    """Hand the job back to the queue with ``attempt + 1``, or end it (:func:`shared.lifecycle.requeue_or_end`)."""

    def write() -> JobStatus:
        with session_scope() as s:
            job = guard(s, ctx.job_id, ctx.attempt)
            return lifecycle.requeue_or_end(s, job, code, message, count_attempt=count_attempt)

    return ride_out(write, f"requeue {ctx.job_id}")


def publish_now(job_id: str) -> None:
    """Send a job that was just handed back, rather than wait for the reconciler's next pass."""
    with session_scope() as s:
        job = s.execute(select(Job.kind, Job.queue, Job.priority, Job.status).where(Job.id == job_id)).one()
        if job.status == JobStatus.QUEUED and publish(job_id, job.kind, job.queue, job.priority):
            s.execute(update(Job).where(Job.id == job_id).values(enqueued_at=func.now()))


class Heartbeat(threading.Thread):
    """Renews the lease of the job this process runs, and of the jobs that joined its batch, independently of the ML
    loop; notices cancel requests, fencing and the timeout. One thread per process for its whole life, started with
    its first job: a job's start costs no thread.

    A handler past its timeout is asked to stop at its next report; one that has not stopped ``hang_grace_seconds``
    later (stuck, not reporting) is failed with ``timeout`` from here, and its pool process is ended to free the
    worker (Celery starts a fresh one; the message's redelivery is absorbed by the claim).
    """

    def __init__(self, interval: float):
        super().__init__(daemon=True, name="genqueue-heartbeat")
        self.interval = interval
        self._lock = threading.Lock()
        self._job: tuple[JobContext, str | None] | None = None  # the running job and its broker message's tag
        self._redis = None

    def watch(self, ctx: JobContext, delivery_tag: str | None) -> None:
        """Renew ``ctx`` (and the jobs that join its batch) from the next beat on, and its message's delivery."""
        with self._lock:
            self._job = (ctx, delivery_tag)

    def unwatch(self, ctx: JobContext) -> None:
        with self._lock:
            if self._job is not None and self._job[0] is ctx:
                self._job = None

    def watching(self, ctx: JobContext) -> bool:
        with self._lock:
            return self._job is not None and self._job[0] is ctx

    def run(self) -> None:
        while True:
            time.sleep(self.interval)
            with self._lock:
                job = self._job
            if job is None:
                continue
            ctx, tag = job
            for one in process.leased(ctx):  # the job this task claimed, and those that joined its batch
                self._renew(one, ctx)
            self._touch_delivery(ctx, tag)

    def _renew(self, ctx: JobContext, running: JobContext) -> None:
        if ctx.stop_reason == "fenced" or ctx.settled:
            return
        try:
            with session_scope() as s:
                job = guard(s, ctx.job_id, ctx.attempt, get_settings().lease_seconds)
                if job.cancel_requested and ctx.stop_reason is None:
                    ctx.stop_reason = "cancelled"
        except Fenced:
            ctx.stop_reason = "fenced"
            return
        except Exception as exc:  # noqa: BLE001 - the DB may be briefly down; the lease has slack
            logger.warning("lease renewal for %s failed: %s", ctx.job_id, exc)
        if ctx.deadline_passed:
            self._enforce_timeout(ctx, running)

    def _touch_delivery(self, ctx: JobContext, tag: str | None) -> None:
        """Keep this job's broker message invisible while the job runs (item: no redelivery to a live worker)."""
        if not tag:
            return
        try:
            if self._redis is None:
                from shared.broker import redis_client

                self._redis = redis_client(timeout=1)
            touch_deliveries([tag], self._redis)
        except Exception as exc:  # noqa: BLE001 - Redis briefly down: the claim absorbs a redelivery anyway
            logger.warning("could not renew the delivery of %s: %s", ctx.job_id, exc)

    def _enforce_timeout(self, ctx: JobContext, running: JobContext) -> None:
        if ctx.stop_reason is None:
            ctx.stop_reason = "timeout"
        over = (utcnow() - ctx.started_at).total_seconds() - ctx.timeout_seconds
        if over < hang_grace_seconds(ctx.timeout_seconds) or not self.watching(running):
            return
        logger.error("%s ran %.0fs past its timeout without stopping; failing it", ctx.job_id, over)
        try:
            finish(
                ctx,
                JobStatus.FAILED,
                error={
                    "code": "timeout",
                    "message": (f"ran past {ctx.timeout_seconds}s and did not stop; its worker process was ended"),
                },
            )
        except Exception as exc:  # noqa: BLE001 - if this write fails, the rescuer fails it once the lease expires
            logger.warning("could not record the timeout of %s: %s", ctx.job_id, exc)
        if process.exit_on_hung:
            logging.shutdown()
            os._exit(HUNG_EXIT_CODE)
        self.unwatch(running)


class ProcessState:
    """What this worker process knows about the job it runs, for the SIGTERM handler and the hang watchdog.

    SIGTERM while a job runs means "checkpoint and hand it back", not "die now"; between a task's start and its
    job's claim, a SIGTERM is kept for the claimed job. One instance per process (:data:`process`).
    """

    def __init__(self) -> None:
        self.running: JobContext | None = None
        self.joined: list[JobContext] = []  # jobs that joined the running job's batch (cross-job batching)
        # Jobs this process ran in another job's batch: their own broker messages, still queued, are dropped
        # without a database round trip when they arrive (a requeued job leaves this set before it is published).
        self.joined_ids: dict[str, None] = {}
        self._joined_lock = threading.Lock()
        self.claiming = False
        self.shutdown_pending = False
        # Set in Celery pool processes (worker/celery_app.py): only there may the heartbeat end a hung job's process,
        # since the pool replaces it; anywhere else a hung handler is only marked and failed.
        self.exit_on_hung = False
        self._previous_sigterm: Any = None
        self._sigterm_installed = False
        self._heartbeat: tuple[int, Heartbeat] | None = None  # (pid, thread): a forked child starts its own

    @property
    def heartbeat(self) -> Heartbeat:
        """This process's :class:`Heartbeat`, started on first use."""
        if self._heartbeat is None or self._heartbeat[0] != os.getpid():
            beat = Heartbeat(get_settings().heartbeat_seconds)
            beat.start()
            self._heartbeat = (os.getpid(), beat)
        return self._heartbeat[1]

    def adopt(self, ctx: JobContext) -> None:
        with self._joined_lock:
            self.joined.append(ctx)
            self.joined_ids[ctx.job_id] = None
            while len(self.joined_ids) > JOINED_IDS:
                del self.joined_ids[next(iter(self.joined_ids))]
        if self.shutdown_pending and ctx.stop_reason is None:
            ctx.stop_reason = "shutdown"

    def release(self, ctx: JobContext) -> None:
        with self._joined_lock:
            self.joined = [one for one in self.joined if one is not ctx]

    def leased(self, ctx: JobContext) -> list[JobContext]:
        """``ctx`` and every job that joined its batch: the heartbeat renews them all."""
        with self._joined_lock:
            return [ctx, *self.joined]

    def on_sigterm(self, signum: int, frame: Any) -> None:
        ctx = self.running
        if ctx is not None:
            self.shutdown_pending = True
            for one in self.leased(ctx):
                if one.stop_reason is None:
                    one.stop_reason = "shutdown"
            return
        if self.claiming:
            self.shutdown_pending = True  # the job, once claimed, is handed back at its first report
            return
        previous = self._previous_sigterm  # no job here: behave as before (a pool process exits)
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    def install_sigterm_handler(self) -> None:
        """Chain our handler in front of the pool's (installed lazily: billiard sets its own after process init)."""
        if self._sigterm_installed or threading.current_thread() is not threading.main_thread():
            return
        current = signal.getsignal(signal.SIGTERM)
        if current != self.on_sigterm:
            self._previous_sigterm = current
            signal.signal(signal.SIGTERM, self.on_sigterm)
        self._sigterm_installed = True


process = ProcessState()


def delivery_tag_of(request: Any) -> str | None:
    """The broker's tag of the message a Celery task request came in (None outside a worker)."""
    properties = getattr(request, "properties", None) or {}
    return properties.get("delivery_tag")


def run_job(
    job_id: str, handler: Handler, policy: KindPolicy, worker: str, device: str, delivery_tag: str | None = None
) -> str:
    """Claim and run one job; returns the status it ended in (or ``skipped``).

    ``delivery_tag`` (the broker message's) is renewed by the heartbeat while the job runs, so the broker's
    visibility timeout never hands the message to another worker while this one is alive.
    """
    if job_id in process.joined_ids:
        logger.info("job %s already ran in another job's batch here; message dropped", job_id)
        return "skipped"
    process.install_sigterm_handler()
    process.claiming, process.shutdown_pending = True, False
    try:
        ctx = ride_out(lambda: claim(job_id, worker, device, policy), f"claim {job_id}")
        if ctx is None:
            logger.info("job %s not claimable (already taken, cancelled, or waiting); message dropped", job_id)
            return "skipped"
        ctx.worker, ctx.device = worker, device
        process.heartbeat.watch(ctx, delivery_tag)
        process.running = ctx
        if process.shutdown_pending:
            ctx.stop_reason = "shutdown"
        try:
            status = _run_claimed(ctx, testhooks.wrap(handler), policy)
        finally:
            process.running = None
            with process._joined_lock:  # a joined job its handler left unsettled: its lease expires, it is rescued
                process.joined = []
            process.heartbeat.unwatch(ctx)
    finally:
        process.claiming = False
    if status == JobStatus.QUEUED and ctx.stop_reason == "shutdown":
        _publish_quietly(job_id)
    return status


def _publish_quietly(job_id: str) -> None:
    logger.warning("%s handed back on shutdown", job_id)
    try:
        publish_now(job_id)
    except Exception as exc:  # noqa: BLE001 - the reconciler publishes it on its next pass
        logger.warning("could not publish %s after handing it back: %s", job_id, exc)


def _run_claimed(ctx: JobContext, handler: Handler, policy: KindPolicy) -> str:
    try:
        summary = handler(ctx)
        if ctx.settled:  # the handler ended the job itself (a batch it shared with other jobs went on after it)
            return ctx.settled
        finish(ctx, JobStatus.SUCCEEDED, summary=summary)  # with the buffered events and results
        return JobStatus.SUCCEEDED
    except Stopped as stop:
        return _stopped(ctx, stop.reason)
    except Fenced as exc:
        logger.warning("%s: stale attempt, nothing written: %s", ctx.job_id, exc)
        return "fenced"
    except (UserError, ValidationError) as exc:
        error = (
            {"code": exc.code, "message": exc.message}
            if isinstance(exc, UserError)
            else {"code": "invalid_params", "message": str(exc)[:2000]}
        )
        _flush_quietly(ctx)
        return _finish_unless_fenced(ctx, JobStatus.FAILED, error)
    except policy.transient_types() as exc:
        logger.warning("%s: transient failure: %s", ctx.job_id, exc)
        _flush_quietly(ctx)
        message = f"{type(exc).__name__}: {exc}"[:2000]
        return _unless_fenced(ctx, lambda: retry_or_fail(ctx, "transient_error", message))
    except Exception as exc:
        logger.exception("%s failed", ctx.job_id)
        ctx.log(traceback.format_exc()[-4000:])
        _flush_quietly(ctx)
        error = {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}"[:2000]}
        return _finish_unless_fenced(ctx, JobStatus.FAILED, error)


def _stopped(ctx: JobContext, reason: str) -> str:
    if reason == "fenced":
        return "fenced"
    _flush_quietly(ctx)
    if reason == "cancelled":
        return _finish_unless_fenced(ctx, JobStatus.CANCELLED)
    if reason == "timeout":
        return _finish_unless_fenced(
            ctx, JobStatus.FAILED, {"code": "timeout", "message": f"ran past {ctx.timeout_seconds}s"}
        )
    return _unless_fenced(
        ctx, lambda: retry_or_fail(ctx, "worker_shutdown", "the worker shut down; handed back", count_attempt=False)
    )


def _finish_unless_fenced(ctx: JobContext, status: str, error: dict | None = None) -> str:
    def write() -> str:
        finish(ctx, status, error=error)
        return status

    return _unless_fenced(ctx, write)


def _unless_fenced(ctx: JobContext, write: Callable[[], str]) -> str:
    """A final write; a newer attempt (or the timeout watchdog) may have taken the job meanwhile."""
    try:
        return write()
    except Fenced as exc:
        logger.warning("%s: final write fenced off: %s", ctx.job_id, exc)
        return "fenced"


def _flush_quietly(ctx: JobContext) -> None:
    try:
        ctx.flush()
    except Fenced:
        return  # the status write that follows is fenced too, and says so
    except Exception as exc:  # noqa: BLE001 - best effort before the status write, which reports its own errors
        logger.warning("final flush for %s failed: %s", ctx.job_id, exc)
