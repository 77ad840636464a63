"""Background duties of every worker's main process, one worker at a time across the cluster.

- **rescue**: jobs whose lease expired (worker killed, machine gone) go back to ``queued`` with ``attempt + 1``, or
  to ``failed`` when their attempts ran out (``cancelled`` if a cancel was pending).
- **reconcile**: ``queued`` jobs with no message in the broker (Redis was down at submit, a message was lost, a
  retry's backoff elapsed, the message was held by a worker that died) are published again. Redis is only a
  wake-up signal; Postgres says what must run.
- **webhooks**: deliveries whose retry is due, or whose message was lost, are published again
  (:func:`shared.webhooks.sweep`).

A Postgres advisory lock makes sure only one worker does this at a time.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from shared import lifecycle, webhooks
from shared.broker import JOB_ID, QUEUES, publish, redis_client, unacked_deliveries
from shared.cleanup import prune_expired
from shared.db import get_engine, session_scope
from shared.models import Job, JobEvent, JobStatus, Worker
from shared.settings import get_settings
from shared.timeutil import utcnow
from worker.gpu_memory import gpu_memory_used

logger = logging.getLogger(__name__)

LOCK_KEY = 727275
RESEND_GRACE = timedelta(seconds=5)


def rescue_expired() -> int:
    """Return expired-lease jobs to the queue (or end them); returns how many were rescued."""
    with session_scope() as s:
        jobs = s.scalars(
            select(Job)
            .where(Job.status.in_([JobStatus.RUNNING, JobStatus.CANCELLING]), Job.lease_expires_at < func.now())
            .with_for_update(skip_locked=True)
        ).all()
        for job in jobs:
            _rescue_one(s, job)
        return len(jobs)


def _rescue_one(s, job: Job) -> None:
    worker = job.worker
    lifecycle.requeue_or_end(s, job, "worker_lost", f"worker {worker} lost")
    logger.warning("rescued job %s from %s -> %s", job.id, worker, job.status)


def stale_delivery_seconds() -> float:
    """How long a delivered message may go unrenewed before its holder is presumed dead or frozen.

    A running job's heartbeat renews its message every ``heartbeat_seconds``; one lease without a renewal is the same
    evidence the rescuer acts on for the job itself.
    """
    settings = get_settings()
    return float(max(settings.lease_seconds, 3 * settings.heartbeat_seconds))


def worker_process_lost(job_id: str, worker: str, why: str) -> bool:
    """The pool process running ``job_id`` on ``worker`` died (killed, crashed, out of memory): end its lease now.

    Called from the worker's main process (:class:`worker.celery_app.JobRequest`), so the rescuer requeues the job
    (or fails it once its attempts are used up) on its next pass instead of one lease later. Only a job still
    ``running`` on this worker is touched; the rescuer's own rules then apply.
    """
    with session_scope() as s:
        job = s.execute(
            update(Job)
            .where(Job.id == job_id, Job.worker == worker, Job.lease_expires_at > func.now())
            .where(Job.status.in_([JobStatus.RUNNING, JobStatus.CANCELLING]))
            .values(lease_expires_at=func.now(), updated_at=func.now())
            .returning(Job.attempt)
        ).scalar_one_or_none()
        if job is None:
            return False
        s.add(JobEvent(job_id=job_id, attempt=job, type="log", message=f"worker process lost on {worker}: {why}"))
    logger.warning("job %s: its worker process was lost (%s); lease ended for the rescuer", job_id, why)
    return True


def broker_job_ids() -> set[str]:
    """Job ids with a live message in the broker: waiting in a queue, or delivered to a worker that still renews it.

    Delivered messages nobody renews any more (their worker was killed or is frozen) are dropped on the way
    (:func:`shared.broker.unacked_deliveries`), so their jobs, once rescued, are published again instead of waiting
    for the broker's visibility timeout.
    """
    client = redis_client()
    found: set[bytes] = set()
    for queue in QUEUES:
        for key in client.scan_iter(match=f"{queue}*", count=100):
            if client.type(key) == b"list":
                for raw in client.lrange(key, 0, -1):
                    found.update(JOB_ID.findall(raw))
    held, dropped = unacked_deliveries(stale_delivery_seconds(), client)
    if dropped:
        logger.warning("dropped %d delivered message(s) no live worker renews", dropped)
    for raw in held:
        found.update(JOB_ID.findall(raw))
    return {f.decode() for f in found}


def reconcile() -> int:
    """Publish queued, due jobs that have no message in flight; returns how many were sent."""
    now = utcnow()
    with session_scope() as s:
        due = s.execute(
            select(Job.id, Job.kind, Job.queue, Job.priority)
            .where(Job.status == JobStatus.QUEUED)
            .where((Job.not_before.is_(None)) | (Job.not_before <= now))
            .where(func.coalesce(Job.enqueued_at, Job.created_at) < now - RESEND_GRACE)
            .order_by(Job.priority.desc(), Job.id)
            .limit(1000)
        ).all()
    in_flight = broker_job_ids()  # every pass, so orphaned deliveries are cleared even with nothing to send
    if not due:
        return 0
    sent = [j.id for j in due if j.id not in in_flight and publish(j.id, j.kind, j.queue, j.priority)]
    if sent:
        with session_scope() as s:
            s.execute(update(Job).where(Job.id.in_(sent)).values(enqueued_at=func.now()))
        logger.info("reconciler published %d job(s)", len(sent))
    return len(sent)


def run_once() -> tuple[int, int] | None:
    """One pass of rescue + reconcile if this process wins the cluster-wide lock, else None."""
    with get_engine().connect() as conn:
        if not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}).scalar():
            return None
        try:
            result = rescue_expired(), reconcile()
            prune_expired()  # GENQUEUE_RETENTION_DAYS: finished jobs past it are deleted (off by default)
            sweep_webhooks()
            return result
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
            conn.commit()


def sweep_webhooks() -> int:
    """Publish the webhook deliveries that are due; a failure is logged and retried at the next pass."""
    try:
        with session_scope() as s:
            return webhooks.sweep(s)
    except Exception as exc:  # noqa: BLE001 - the rescuer and reconciler must keep running whatever this hits
        logger.warning("webhook sweep failed: %s", exc)
        return 0


def beat(
    worker_id: str, queues: str, device: str, pid: int, current_job: str | None = None, gpu_memory: int | None = None
) -> None:
    """Record this worker as alive (the system page and /health count workers seen recently)."""
    with session_scope() as s:
        stmt = pg_insert(Worker).values(
            id=worker_id,
            queues=queues,
            device=device,
            pid=pid,
            last_seen=func.now(),
            current_job_id=current_job,
            gpu_memory_bytes=gpu_memory,
        )
        s.execute(
            stmt.on_conflict_do_update(
                index_elements=[Worker.id],
                set_={
                    "last_seen": func.now(),
                    "pid": pid,
                    "queues": queues,
                    "device": device,
                    "gpu_memory_bytes": gpu_memory,
                },
            )
        )


class Maintenance(threading.Thread):
    """Runs :func:`beat` and :func:`run_once` periodically in the worker's main process."""

    def __init__(self, worker_id: str, queues: str, device: str, pid: int):
        super().__init__(daemon=True, name="genqueue-maintenance")
        self.worker_id, self.queues, self.device, self.pid = worker_id, queues, device, pid
        self.stop_event = threading.Event()

    def run(self) -> None:
        interval = get_settings().rescue_interval_seconds
        while not self.stop_event.is_set():
            try:
                beat(self.worker_id, self.queues, self.device, self.pid, gpu_memory=gpu_memory_used(self.device))
                run_once()
            except Exception as exc:  # noqa: BLE001 - Postgres or Redis briefly down: try again next tick
                logger.warning("maintenance pass failed: %s", exc)
            self.stop_event.wait(min(interval, 5))
