"""Every job state transition, in one place: web, the worker's runtime and the rescuer all move jobs through here.

::

    queued ──claim──► running ──finish──► succeeded | failed | cancelled
      ▲                  │ └──request_cancel──► cancelling ──finish/requeue_or_end──► cancelled
      └──requeue_or_end──┘   (a transient error, a lost worker, a graceful hand-back)
    queued ──request_cancel──► cancelled

Each function changes one job row that its caller holds: the claim is one atomic ``UPDATE … WHERE status =
'queued'``; the worker's other writes are made on a row it locked with the fencing guard (``worker/fencing.py``),
the rescuer's on rows it selected ``FOR UPDATE SKIP LOCKED``, the web's on a row it locked for the request. Every
transition adds one ``status`` event (:func:`status_event`) with the new status in its data, so the job's timeline
tells its whole life. A transition the job's webhook asks for also adds its outbox row (:func:`shared.webhooks.record`)
in the same transaction; it is published once the caller commits. The caller commits.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cache
from typing import Any

from sqlalchemy import Integer, Row, bindparam, func, insert, inspect, literal, or_, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from shared import webhooks
from shared.models import Job, JobEvent, JobStatus
from shared.models.jobs import TERMINAL
from shared.timeutil import utcnow


class JobFinished(Exception):
    """The job already ended; it cannot be cancelled."""


def status_event(job: Job, message: str, **data: Any) -> JobEvent:
    """The timeline entry of a transition: ``data.status`` is the job's status after it."""
    return JobEvent(
        job_id=job.id, attempt=job.attempt, type="status", message=message, data={"status": str(job.status), **data}
    )


def queued_event(job: Job) -> JobEvent:
    """The first entry of a new job's timeline (the job row is inserted by the web in ``queued``)."""
    return status_event(job, "queued")


class Submitted(enum.Enum):
    """What :func:`submit` did: wrote the job, or nothing (its idempotency key is taken, or the queue cap is full)."""

    CREATED = "created"
    DUPLICATE = "duplicate"  # another job of its owner holds its idempotency key
    OVER_CAP = "over_cap"  # its owner already has ``queued_cap`` queued jobs


def submit(s: Session, job: Job, queued_cap: int = 0) -> Submitted:
    """A new job enters ``queued``: its row and the first entry of its timeline (:func:`queued_event`), with
    ``enqueued_at`` now (its caller publishes it right after the commit).

    One prepared statement, one round trip, whatever the outcome: it counts the owner's queued jobs (up to
    ``queued_cap``; 0 = no cap) and inserts the row only below the cap, does nothing if another job of the owner holds
    ``job.idempotency_key`` (``ON CONFLICT``: a concurrent twin waits for the first to commit, then sees it), and
    inserts the event from the row it wrote. Every job comes this way: separate lookups of the key and of the count,
    and the ORM's unit of work, cost a submission three more round trips and most of its CPU. ``job`` is a transient
    :class:`Job` with every column set but the times; it stays transient, and the times the database sets
    (``created_at``, ``updated_at``) are copied onto it when it is written. The caller commits.
    """
    values = {name: job.__dict__.get(attr) for attr, name in _SUBMITTED}
    event = queued_event(job)
    values.update(event_type=event.type, event_message=event.message, event_data=event.data, queued_cap=queued_cap)
    created_at, waiting = s.execute(_submit_statement(), values).one()
    if created_at is not None:
        job.created_at = job.updated_at = created_at
        return Submitted.CREATED
    if queued_cap > 0 and waiting >= queued_cap:
        return Submitted.OVER_CAP
    return Submitted.DUPLICATE


_SET_BY_SUBMIT = ("created_at", "updated_at", "enqueued_at")
_SUBMITTED = [(a.key, a.columns[0].name) for a in inspect(Job).column_attrs if a.key not in _SET_BY_SUBMIT]


@cache
def _submit_statement():
    jobs, events = Job.__table__, JobEvent.__table__
    cap = bindparam("queued_cap", type_=Integer)
    mine = select(literal(1)).where(jobs.c.owner_id == bindparam("owner_id"), jobs.c.status == JobStatus.QUEUED)
    waiting = select(func.count().label("n")).select_from(mine.limit(cap).subquery()).cte("waiting")
    names = [name for _, name in _SUBMITTED]
    row = select(*[bindparam(name, type_=jobs.c[name].type) for name in names], func.now()).where(
        or_(cap <= 0, waiting.c.n < cap)
    )
    new = (
        pg_insert(jobs)
        .from_select([*names, "enqueued_at"], row)
        .on_conflict_do_nothing(constraint="uq_jobs_owner_idempotency")
        .returning(jobs.c.id, jobs.c.attempt, jobs.c.created_at)
        .cte("new_job")
    )
    first = select(
        new.c.id,
        new.c.attempt,
        *(bindparam(f"event_{c}", type_=events.c[c].type) for c in ("type", "message", "data")),
        new.c.created_at,
    )
    columns = ["job_id", "attempt", "type", "message", "data", "at"]
    event = insert(events).from_select(columns, first).returning(events.c.at).cte("event")  # at = created_at
    return select(select(event.c.at).scalar_subquery(), select(waiting.c.n).scalar_subquery())


def backoff_seconds(attempt: int, base: float = 2.0, cap: float = 300.0) -> float:
    """Exponential backoff with full jitter before attempt ``attempt + 1``."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))


# What both claims set on a job they take (queued -> running, the lease from now), what they return of it (what a
# worker needs), and the status event they add with it (``:note`` says how it was claimed).
_RUNNING = """status = 'running', started_at = coalesce(jobs.started_at, now()),
    lease_expires_at = now() + make_interval(secs => :lease), heartbeat_at = now(), worker = :worker,
    device = :device, not_before = NULL, timeout_seconds = coalesce(jobs.timeout_seconds, :default_timeout),
    updated_at = now()"""
_CLAIMED_COLUMNS = """jobs.id, jobs.attempt, jobs.kind, jobs.owner_id, jobs.params, jobs.queue, jobs.priority,
    jobs.created_at, jobs.started_at, jobs.timeout_seconds, jobs.batch_key, jobs.webhook_url, jobs.webhook_events"""
_RUNNING_EVENT = """INSERT INTO job_events (job_id, attempt, type, message, data)
    SELECT id, attempt, 'status', format('running (attempt %s on %s, %s%s)', attempt, :worker, :device, :note),
           jsonb_build_object('status', 'running', 'worker', :worker, 'device', :device)
    FROM claimed"""

# One job, and whether other queued jobs share its batch key.
_CLAIM = text(f"""
WITH claimed AS (
    UPDATE jobs SET {_RUNNING}
    WHERE id = :id AND status = 'queued' AND (not_before IS NULL OR not_before <= now())
    RETURNING {_CLAIMED_COLUMNS}
), event AS ({_RUNNING_EVENT})
SELECT claimed.*, EXISTS (
    SELECT 1 FROM jobs other WHERE other.status = 'queued' AND other.batch_key = claimed.batch_key
        AND other.queue = claimed.queue AND other.id <> claimed.id
) AS others_waiting
FROM claimed
""").bindparams(note="")


def claim(s: Session, job_id: str, *, worker: str, device: str, lease_seconds: int, default_timeout: int) -> Row | None:
    """``queued`` → ``running`` atomically (None if taken, cancelled or not due yet); the lease starts now.

    A job with no ``timeout_seconds`` of its own gets ``default_timeout`` (its kind's) written into the row. The row
    and its status event are written by one statement (every job starts here), which returns what a worker needs of
    the job (its id, attempt, kind, owner, params, queue, start, timeout, webhook) and ``others_waiting``: whether
    other queued jobs shared its batch key (cross-job batching: a batch with nobody to join it need not look).
    """
    params = {"id": job_id, "worker": worker, "device": device, "lease": float(lease_seconds)}
    job = s.execute(_CLAIM, {**params, "default_timeout": default_timeout}).one_or_none()
    if job is not None:
        webhooks.record(s, job, JobStatus.RUNNING)
    return job


# Queued, due jobs with one batch key on one queue, best first (priority, then age: the order of the partial index
# ix_jobs_queued_batch), locked without waiting; then at most :cap running per owner (counting what already runs),
# then :limit of them claimed.
_CLAIM_BATCH = text(f"""
WITH candidates AS (
    SELECT id, owner_id, priority, created_at FROM jobs
    WHERE status = 'queued' AND batch_key = :key AND queue = :queue AND (not_before IS NULL OR not_before <= now())
    ORDER BY priority DESC, created_at, id
    LIMIT :scan
    FOR UPDATE SKIP LOCKED
), ranked AS (
    SELECT c.id, c.priority, c.created_at,
           row_number() OVER (PARTITION BY c.owner_id ORDER BY c.priority DESC, c.created_at, c.id) AS nth,
           (SELECT count(*) FROM jobs r
             WHERE r.owner_id = c.owner_id AND r.status IN ('running', 'cancelling')) AS already
    FROM candidates c
), chosen AS (
    SELECT id FROM ranked WHERE :cap <= 0 OR already + nth <= :cap
    ORDER BY priority DESC, created_at, id
    LIMIT :limit
), claimed AS (
    UPDATE jobs SET {_RUNNING}
    FROM chosen WHERE jobs.id = chosen.id
    RETURNING {_CLAIMED_COLUMNS}
), event AS ({_RUNNING_EVENT})
SELECT * FROM claimed ORDER BY priority DESC, created_at, id
""").bindparams(note="; batched")
# The owners of the jobs a batch claim may take, in one order (their advisory locks are taken in it: no deadlock).
_BATCH_OWNERS = (
    select(Job.owner_id)
    .where(Job.status == JobStatus.QUEUED, Job.batch_key == bindparam("key"), Job.queue == bindparam("queue"))
    .distinct()
    .order_by(Job.owner_id)
)


def claim_batch(
    s: Session,
    *,
    key: str,
    queue: str,
    limit: int,
    cap: int,
    worker: str,
    device: str,
    lease_seconds: int,
    default_timeout: int,
) -> list[Row]:
    """Claim up to ``limit`` queued jobs with the batch key ``key`` (:func:`shared.kinds.batch_key`) on ``queue``, in
    one statement.

    ``FOR UPDATE SKIP LOCKED`` over the due jobs in priority order (then oldest first), through the partial index of
    queued jobs by batch key (so a join costs what it finds, not the length of the queue); with ``cap`` > 0 an owner
    gets at most ``cap`` jobs running, counting those already running. Each claimed job gets what :func:`claim` gives
    one: ``running``, a lease, its timeout, a status event, its webhook outbox row; they come back as :func:`claim`
    returns one, in claim order. The caller commits.
    """
    if limit <= 0:
        return []
    if cap > 0:  # the per-owner locks of the single claim (worker/admission.py), taken in one order: no deadlock
        for owner in s.scalars(_BATCH_OWNERS, {"key": key, "queue": queue}):
            s.execute(text("SELECT pg_advisory_xact_lock(hashtext('genqueue-running:' || :owner))"), {"owner": owner})
    params = {
        "key": key,
        "queue": queue,
        "scan": max(limit * 4, 64),
        "limit": limit,
        "cap": cap,
        "lease": float(lease_seconds),
        "worker": worker,
        "device": device,
        "default_timeout": default_timeout,
    }
    jobs = list(s.execute(_CLAIM_BATCH, params))
    for job in jobs:
        webhooks.record(s, job, JobStatus.RUNNING)
    return jobs


def finish(s: Session, job: Job, status: JobStatus, *, error: dict | None = None, summary: dict | None = None) -> None:
    """A running (or cancelling) job ends ``succeeded``, ``failed`` or ``cancelled`` (a row the caller holds; the
    worker ends the attempts it runs with :func:`finish_attempt`, which writes the same)."""
    job.status = status
    job.finished_at = func.now()
    job.lease_expires_at = None
    job.error = error
    if summary:
        job.summary = dict(summary)
        job.model_id = job.summary.pop("model_id", job.model_id)
    if status == JobStatus.SUCCEEDED and job.progress_total:
        job.progress_done = job.progress_total
    s.add(status_event(job, _end_message(status, error)))
    webhooks.record(s, job, status)


def _end_message(status: str, error: dict | None) -> str:
    return status if error is None else f"{status}: {error['code']}: {error['message']}"


# finish() for each attempt of :ends that still owns its job (one not returned was fenced off: a newer attempt owns
# the job, or it ended), with each attempt's last progress, results and events (its status event last) written in
# the same round trip.
_FINISH = text("""
WITH ends AS (
    SELECT * FROM jsonb_to_recordset(:ends) AS e(id text, attempt int, status text, error jsonb, summary jsonb,
                                                 model_id text, done int, total int)
), job AS (
    UPDATE jobs SET status = ends.status, finished_at = now(), lease_expires_at = NULL, heartbeat_at = now(),
        updated_at = now(), error = ends.error, summary = coalesce(ends.summary, jobs.summary),
        model_id = coalesce(ends.model_id, jobs.model_id), progress_total = coalesce(ends.total, jobs.progress_total),
        progress_done = CASE WHEN ends.status = 'succeeded' AND coalesce(ends.total, jobs.progress_total) > 0
                             THEN coalesce(ends.total, jobs.progress_total)
                             ELSE coalesce(ends.done, jobs.progress_done) END
    FROM ends
    WHERE jobs.id = ends.id AND jobs.attempt = ends.attempt AND jobs.status IN ('running', 'cancelling')
    RETURNING jobs.id, jobs.attempt, jobs.status, jobs.owner_id, jobs.webhook_url, jobs.webhook_events
), results AS (
    INSERT INTO generation_results (job_id, attempt, prompt_index, sequence, prompt, prompt_id, text, tokens,
                                    finish_reason)
    SELECT job.id, job.attempt, r.prompt_index, r.sequence, r.prompt, r.prompt_id, r.text, r.tokens, r.finish_reason
    FROM jsonb_to_recordset(:results) AS r(job_id text, prompt_index int, sequence int, prompt text, prompt_id text,
                                           text text, tokens int, finish_reason text)
    JOIN job ON job.id = r.job_id
    ON CONFLICT DO NOTHING
), events AS (
    INSERT INTO job_events (job_id, attempt, type, step, message, data, at)
    SELECT job.id, job.attempt, e.type, e.step, e.message, e.data, coalesce(e.at, now())
    FROM jsonb_to_recordset(:events) AS e(job_id text, n int, type text, step int, message text, data jsonb,
                                          at timestamptz)
    JOIN job ON job.id = e.job_id
    ORDER BY e.n
)
SELECT * FROM job
""").bindparams(*(bindparam(name, type_=JSONB) for name in ("ends", "results", "events")))


@dataclass
class AttemptEnd:
    """How one attempt a worker ran ends (:func:`finish_attempts`): its status and error or summary, and what it
    still holds: its last ``progress`` (done, total), ``events`` (dicts of ``type``, ``step``, ``message``, ``data``,
    ``at``, in order) and generation ``results``."""

    job_id: str
    attempt: int
    status: JobStatus
    error: dict | None = None
    summary: dict | None = None
    progress: tuple[int, int] | None = None
    events: list[dict] = field(default_factory=list)
    results: list[dict] = field(default_factory=list)


def finish_attempts(s: Session, ends: list[AttemptEnd]) -> dict[str, Row]:
    """:func:`finish` for attempts a worker ran, fenced, all in one statement: each job row whose attempt still owns
    it, with its last progress, events, results and its status event. Returns the ended jobs (id, status, owner and
    webhook) by id; a job missing from it was fenced off, and nothing of it was written. The caller commits.
    """
    rows, events, results = [], [], []
    for end in ends:
        summary = dict(end.summary) if end.summary else None
        model_id = summary.pop("model_id", None) if summary else None
        done, total = end.progress if end.progress is not None else (None, None)
        rows.append(
            {
                "id": end.job_id,
                "attempt": end.attempt,
                "status": str(end.status),
                "error": end.error,
                "summary": summary,
                "model_id": model_id,
                "done": done,
                "total": total,
            }
        )
        timeline = [{**e, "at": e["at"].isoformat() if e.get("at") else None} for e in end.events]
        timeline.append(
            {"type": "status", "message": _end_message(end.status, end.error), "data": {"status": end.status}}
        )
        first = len(events)
        events += ({**e, "job_id": end.job_id, "n": first + n} for n, e in enumerate(timeline))
        results += ({**r, "job_id": end.job_id} for r in end.results)
    ended = {job.id: job for job in s.execute(_FINISH, {"ends": rows, "events": events, "results": results})}
    for job in ended.values():
        webhooks.record(s, job, job.status)
    return ended


def finish_attempt(s: Session, end: AttemptEnd) -> Row | None:
    """:func:`finish_attempts` for one attempt: the ended job, or None when it was fenced off."""
    return finish_attempts(s, [end]).get(end.job_id)


def past_timeout(job: Job) -> bool:
    """The job has run longer than ``timeout_seconds`` since it first started (across attempts)."""
    started, limit = job.started_at, job.timeout_seconds
    return bool(limit and started and utcnow() - started > timedelta(seconds=limit))


def requeue_or_end(s: Session, job: Job, code: str, message: str, *, count_attempt: bool = True) -> JobStatus:
    """An attempt ended without a result (``code``: ``transient_error``, ``worker_lost``, ``worker_shutdown``…).

    The job is ``cancelled`` if a cancel was requested meanwhile (a cancelled job is never restarted), ``failed``
    with ``timeout`` past its time limit, ``failed`` when its attempts ran out, else ``queued`` again with
    ``attempt + 1`` after a jittered backoff. ``count_attempt=False`` (a graceful hand-back) requeues at once
    without using up the retry budget.
    """
    if job.cancel_requested or job.status == JobStatus.CANCELLING:
        finish(s, job, JobStatus.CANCELLED)
    elif past_timeout(job):
        finish(
            s,
            job,
            JobStatus.FAILED,
            error={"code": "timeout", "message": f"ran past {job.timeout_seconds}s ({code}: {message})"},
        )
    elif count_attempt and job.attempt >= job.max_attempts:
        finish(
            s, job, JobStatus.FAILED, error={"code": code, "message": f"{message} (attempts exhausted: {job.attempt})"}
        )
    else:
        delay = backoff_seconds(job.attempt) if count_attempt else 0.0
        if not count_attempt:
            job.max_attempts += 1  # a graceful hand-back does not use up the retry budget
        job.status, job.attempt, job.lease_expires_at, job.enqueued_at = JobStatus.QUEUED, job.attempt + 1, None, None
        job.not_before = utcnow() + timedelta(seconds=delay)
        job.updated_at = func.now()
        s.add(
            status_event(
                job, f"queued again (attempt {job.attempt}): {code}: {message}", reason=code, delay_s=round(delay, 2)
            )
        )
    return JobStatus(job.status)


def request_cancel(s: Session, job: Job) -> JobStatus:
    """``queued`` → ``cancelled`` at once; ``running`` → ``cancelling`` (its worker stops at its next report).

    Raises :class:`JobFinished` for a job that already ended; asking twice is harmless.
    """
    if job.status in TERMINAL:
        raise JobFinished(f"job {job.id} already {job.status}")
    job.cancel_requested = True
    job.updated_at = func.now()
    if job.status == JobStatus.QUEUED:
        job.status, job.finished_at = JobStatus.CANCELLED, func.now()
        s.add(status_event(job, "cancelled before it started"))
        webhooks.record(s, job, JobStatus.CANCELLED)
    elif job.status == JobStatus.RUNNING:
        job.status = JobStatus.CANCELLING
        s.add(status_event(job, "cancel requested"))
    return JobStatus(job.status)
