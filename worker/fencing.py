"""Fenced writes: every write a worker makes is conditioned on the job's current attempt.

A worker that lost its lease (paused, partitioned, rescued) still holds an old ``attempt``; the guard ``UPDATE``
below matches no row for it, so it raises :class:`Fenced` and its transaction writes nothing. The guard also takes
the job row's lock for the rest of the transaction, so a rescue cannot interleave with a write.

:func:`ride_out` retries a write through a short database outage (a Postgres restart) instead of failing the job;
the guard inside the retried write still decides whether this attempt may write at all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

from sqlalchemy import func, update
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from shared.models import Job, JobStatus

logger = logging.getLogger(__name__)

T = TypeVar("T")

DB_OUTAGE_SECONDS = 60.0  # how long a worker write waits for the database before giving up


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
        # the row comes back from RETURNING: no evaluation of the WHERE clause against the session's objects
        .execution_options(synchronize_session=False)
    ).scalar_one_or_none()
    if row is None:
        raise Fenced(f"job {job_id} attempt {attempt} no longer owns the job")
    return row


def is_connection_error(exc: BaseException) -> bool:
    """A lost or refused database connection (worth waiting out), as opposed to a bad statement."""
    if isinstance(exc, OperationalError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def ride_out(write: Callable[[], T], what: str, budget: float = DB_OUTAGE_SECONDS) -> T:
    """Run ``write`` (one transaction), retrying with backoff while the database is unreachable, for ``budget`` s.

    A write whose commit was lost with the connection may be applied twice; the writes retried here are idempotent
    (results and artifacts skip rows already stored, status writes are fenced) or harmless (a repeated log line).
    """
    deadline = time.monotonic() + budget
    delay = 0.25
    while True:
        try:
            return write()
        except DBAPIError as exc:
            if not is_connection_error(exc) or time.monotonic() + delay > deadline:
                raise
            logger.warning("%s: database unavailable (%s); retrying in %.2fs", what, type(exc.orig).__name__, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
