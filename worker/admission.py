"""The per-user cap on running jobs (``GENQUEUE_MAX_RUNNING_PER_USER``), enforced where a job starts: the claim.

The web can only cap what waits (``queued``); how many of a user's jobs run at once is decided by the workers, so the
check sits in the claim's transaction, under a per-owner advisory lock that makes two workers claiming two jobs of
the same user at the same moment take turns (the second one sees the first one's job as running).

A job over the cap is not failed and not dropped: it stays ``queued`` with ``not_before`` a few seconds ahead, and the
reconciler publishes it again once that passes, by which time one of the user's jobs may have finished.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from shared.models import Job, JobStatus
from shared.settings import get_settings
from shared.timeutil import utcnow

DEFER_SECONDS = 3.0  # how long a job over its owner's cap waits before the reconciler offers it again


def defer_if_over_cap(s: Session, job_id: str) -> bool:
    """True (and ``not_before`` pushed) when the job's owner already runs their cap of jobs; False to claim it.

    Must run in the claim's transaction, before the ``UPDATE``: the advisory lock is held until it commits.
    """
    cap = get_settings().max_running_per_user
    if cap <= 0:
        return False
    owner = s.scalar(select(Job.owner_id).where(Job.id == job_id, Job.status == JobStatus.QUEUED))
    if owner is None:
        return False  # not claimable anyway: the UPDATE that follows matches nothing
    s.execute(text("SELECT pg_advisory_xact_lock(hashtext('genqueue-running:' || :owner))"), {"owner": owner})
    running = s.scalar(
        select(func.count())
        .select_from(Job)
        .where(Job.owner_id == owner, Job.status.in_((JobStatus.RUNNING, JobStatus.CANCELLING)))
    )
    if running < cap:
        return False
    s.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
        .values(not_before=utcnow() + timedelta(seconds=DEFER_SECONDS), updated_at=func.now())
    )
    return True
