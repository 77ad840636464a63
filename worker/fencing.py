"""Fenced writes: every write a worker makes is conditioned on the job's current attempt.

A worker that lost its lease (paused, partitioned, rescued) still holds an old ``attempt``; the guard ``UPDATE``
below matches no row for it, so it raises :class:`Fenced` and its transaction writes nothing. The guard also takes
the job row's lock for the rest of the transaction, so a rescue cannot interleave with a write.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, update
from sqlalchemy.orm import Session

from shared.models import Job, JobStatus


class Fenced(Exception):
    """This worker no longer owns the job (a newer attempt does, or it was finalized)."""


def guard(session: Session, job_id: str, attempt: int, lease_seconds: int | None = None) -> Job:
    """Lock the job row if ``attempt`` still owns it (renewing the lease); raise :class:`Fenced` otherwise."""
    values: dict = {"heartbeat_at": func.now(), "updated_at": func.now()}
    if lease_seconds:
        values["lease_expires_at"] = func.now() + timedelta(seconds=lease_seconds)
    row = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.attempt == attempt, Job.status.in_([JobStatus.RUNNING, JobStatus.CANCELLING]))
        .values(**values)
        .returning(Job)
    ).scalar_one_or_none()
    if row is None:
        raise Fenced(f"job {job_id} attempt {attempt} no longer owns the job")
    return row
