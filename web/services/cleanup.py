"""``DELETE`` of jobs and datasets: the owner's (or an admin's) finished job, a dataset no active job uses."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.cleanup import jobs_using, purge_dataset, purge_job
from shared.models import Dataset, Model, ModelSource, User
from shared.models.jobs import TERMINAL
from web.errors import Conflict, NotFound
from web.services.jobs import get_job


def delete_job(s: Session, user: User, job_id: str, with_model: bool = False) -> dict:
    """Delete a finished job's results, events and artifacts; 404 for someone else's, 409 while it is active."""
    job = get_job(s, user, job_id, lock=True)
    if job.status not in TERMINAL:
        raise Conflict(f"job {job_id} is {job.status}: cancel it and wait until it ends", code="job_active")
    if with_model:
        models = s.scalars(select(Model).where(Model.job_id == job.id, Model.source == ModelSource.TRAINED)).all()
        refs = [r for m in models for r in (m.id, m.name)]
        if users := jobs_using(s, *refs):
            raise Conflict(f"the job's model is used by active job(s) {', '.join(users)}", code="model_in_use")
    return purge_job(s, job, with_model=with_model)


def delete_dataset(s: Session, user: User, dataset_id: str) -> None:
    """Delete a dataset unless a queued or running job uses it (409); someone else's is a 404."""
    stmt = select(Dataset).where(Dataset.id == dataset_id)
    if not user.is_admin:
        stmt = stmt.where(Dataset.owner_id == user.id)
    ds = s.scalars(stmt.with_for_update()).first()  # a submission naming it waits (admission reads it FOR SHARE)
    if ds is None:
        raise NotFound(f"no dataset {dataset_id!r}")
    if users := jobs_using(s, ds.id):
        raise Conflict(f"dataset {dataset_id} is used by active job(s) {', '.join(users)}", code="dataset_in_use")
    purge_dataset(s, ds)
