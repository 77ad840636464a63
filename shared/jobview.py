"""A job as the API shows it: the web's responses and the worker's webhook payloads use the same shape."""

from __future__ import annotations

from typing import Any

from shared.models import Job
from shared.models.jobs import ACTIVE
from shared.timeutil import iso, utcnow


def eta_seconds(job: Job) -> float | None:
    """Remaining time, extrapolated from the rate since the job started (None until there is a rate)."""
    if job.status not in ACTIVE or not job.started_at or job.progress_done <= 0 or not job.progress_total:
        return None
    elapsed = (utcnow() - job.started_at).total_seconds()
    remaining = job.progress_total - job.progress_done
    return round(max(0.0, elapsed / job.progress_done * remaining), 1)


def job_json(job: Job) -> dict[str, Any]:
    """The job object of ``GET /jobs/{id}`` (shape: ``shared.schemas.api.JobOut``)."""
    return {
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "params": job.params,
        "priority": job.priority,
        "queue": job.queue,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "progress": {"done": job.progress_done, "total": job.progress_total, "eta_seconds": eta_seconds(job)},
        "error": job.error,
        "summary": job.summary,
        "model_id": job.model_id,
        "dataset_id": job.dataset_id,
        "retry_of": job.retry_of,
        "worker": job.worker,
        "device": job.device,
        "cancel_requested": job.cancel_requested,
        "metadata": dict(job.meta or {}),
        "webhook_url": job.webhook_url,
        "webhook_events": job.webhook_events,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
    }
