"""Deleting finished jobs and unused datasets: rows and stored files, one code path for the API and retention.

A job's row goes with its events, results and artifact rows (``ON DELETE CASCADE``); its stored objects (artifacts,
checkpoints: everything under ``jobs/<id>/``) go from the object store once the transaction has committed, so a
failed delete never leaves rows pointing at missing objects. A registry model the job trained lives apart, under
``models/<id>/``: it is kept unless the caller asks for it to go too.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, literal_column, or_, select
from sqlalchemy.orm import Session

from shared.db import session_scope
from shared.models import Artifact, Dataset, Job, Model, ModelSource
from shared.models.jobs import ACTIVE, TERMINAL
from shared.settings import get_settings
from shared.storage import get_storage

logger = logging.getLogger(__name__)

PRUNE_BATCH = 50
PRUNE_EVERY_SECONDS = 60.0
_last_periodic = -PRUNE_EVERY_SECONDS
ANY_STRING_EQUAL = literal_column("'$.** ? (@ == $ref)'::jsonpath")  # any value, at any depth, equal to $ref


def jobs_using(s: Session, *refs: str) -> list[str]:
    """Ids of queued or running jobs whose params (at any depth) or dataset name one of ``refs``."""
    refs = tuple(r for r in refs if r)
    if not refs:
        return []
    # jsonb_path_exists: any string in the params equal to one of the refs (a model id or name, a dataset id).
    in_params = [
        func.jsonb_path_exists(Job.params, ANY_STRING_EQUAL, func.jsonb_build_object("ref", ref)) for ref in refs
    ]
    stmt = select(Job.id).where(Job.status.in_(ACTIVE), or_(Job.dataset_id.in_(refs), *in_params))
    return list(s.scalars(stmt.limit(20)))


def _store_legacy_model(model: Model, store) -> None:
    """A model trained before the object store kept its files in its job's directory (``model.path``), which is
    about to go: store them under ``models/<id>/`` first, as models are stored now."""
    if (
        model.object_key
        or not model.path
        or f"/jobs/{model.job_id}/" not in model.path
        or not Path(model.path).is_dir()
    ):
        return
    key = f"models/{model.id}"
    store.put_dir(key, Path(model.path))
    model.object_key, model.path = key, None


def purge_job(s: Session, job: Job, *, with_model: bool = False) -> dict:
    """Delete a finished ``job`` (the caller checked it is finished and locked its row) and commit.

    Returns what went: ``{"job_id", "artifacts", "model_ids", "models_deleted"}``.
    """
    artifacts = list(s.scalars(select(Artifact.path).where(Artifact.job_id == job.id)))
    keys = [f"jobs/{job.id}", *artifacts]
    models = s.scalars(select(Model).where(Model.job_id == job.id, Model.source == ModelSource.TRAINED)).all()
    store = get_storage()
    try:
        for model in models:
            if with_model:
                if model.object_key:
                    keys.append(model.object_key)
                s.delete(model)
            else:
                _store_legacy_model(model, store)
        s.delete(job)
        s.commit()
    except BaseException:
        s.rollback()
        raise
    for key in dict.fromkeys(keys):
        store.delete(key)
    logger.info("deleted job %s (%d stored keys)", job.id, len(keys))
    return {
        "job_id": job.id,
        "artifacts": len(artifacts),
        "model_ids": [m.id for m in models],
        "models_deleted": with_model and bool(models),
    }


def purge_dataset(s: Session, ds: Dataset) -> None:
    """Delete a dataset's row and its stored file (the caller checked no active job uses it) and commit."""
    rel = str(Path(ds.path).parent) if Path(ds.path).parent.name == ds.id else ds.path
    s.delete(ds)
    s.commit()
    get_storage().delete(rel)


def prune_expired(days: int | None = None) -> int:
    """Delete up to ``PRUNE_BATCH`` jobs that finished more than ``days`` (``GENQUEUE_RETENTION_DAYS``) ago.

    Off when the setting is 0. Their registry models are kept. Run by the maintenance loop (one worker at a time,
    at most once a minute per process when ``days`` comes from the setting); returns how many jobs were deleted.
    """
    global _last_periodic
    periodic = days is None
    days = get_settings().retention_days if periodic else days
    if days <= 0:
        return 0
    if periodic:  # the maintenance loop passes every few seconds; a retention of days needs no more than a minute
        if time.monotonic() - _last_periodic < PRUNE_EVERY_SECONDS:
            return 0
        _last_periodic = time.monotonic()
    cutoff = func.now() - timedelta(days=days)
    finished = select(Job).where(Job.status.in_(TERMINAL), Job.finished_at < cutoff)
    deleted = 0
    with session_scope() as s:
        ids = list(s.scalars(finished.with_only_columns(Job.id).order_by(Job.finished_at).limit(PRUNE_BATCH)))
        for job_id in ids:  # one transaction each, the row locked (a concurrent DELETE of the same job skips it)
            job = s.scalars(finished.where(Job.id == job_id).with_for_update(skip_locked=True)).first()
            if job is not None:
                purge_job(s, job)
                deleted += 1
            else:
                s.rollback()
    if periodic and deleted == PRUNE_BATCH:  # a backlog: the next pass goes on at once
        _last_periodic = -PRUNE_EVERY_SECONDS
    if deleted:
        logger.info("retention: deleted %d job(s) finished over %d day(s) ago", deleted, days)
    return deleted
