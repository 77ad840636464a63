"""ORM rows → API JSON (shapes in shared/schemas/api.py)."""

from __future__ import annotations

from typing import Any

from shared.models import Artifact, Dataset, GenerationResult, Job, JobEvent, Model
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
    return {
        "id": job.id, "kind": job.kind, "status": job.status, "params": job.params, "priority": job.priority,
        "queue": job.queue, "attempt": job.attempt, "max_attempts": job.max_attempts,
        "progress": {"done": job.progress_done, "total": job.progress_total, "eta_seconds": eta_seconds(job)},
        "error": job.error, "summary": job.summary, "model_id": job.model_id, "dataset_id": job.dataset_id,
        "retry_of": job.retry_of, "worker": job.worker, "device": job.device,
        "cancel_requested": job.cancel_requested, "created_at": iso(job.created_at),
        "started_at": iso(job.started_at), "finished_at": iso(job.finished_at),
    }  # fmt: skip


def event_json(e: JobEvent) -> dict[str, Any]:
    return {"id": e.id, "at": iso(e.at), "type": e.type, "attempt": e.attempt, "step": e.step,
            "message": e.message, "data": e.data}  # fmt: skip


def result_json(r: GenerationResult) -> dict[str, Any]:
    return {"index": r.prompt_index, "sequence": r.sequence, "id": r.prompt_id, "prompt": r.prompt, "text": r.text,
            "tokens": r.tokens, "finish_reason": r.finish_reason}  # fmt: skip


def artifact_json(a: Artifact) -> dict[str, Any]:
    return {"id": a.id, "job_id": a.job_id, "name": a.name, "role": a.role, "content_type": a.content_type,
            "size": a.size, "sha256": a.sha256, "step": a.step, "created_at": iso(a.created_at)}  # fmt: skip


def model_json(m: Model) -> dict[str, Any]:
    return {"id": m.id, "name": m.name, "kind": m.kind, "source": m.source, "base": m.base, "job_id": m.job_id,
            "dataset_id": m.dataset_id, "config": m.config, "metrics": m.metrics, "size_bytes": m.size_bytes,
            "created_at": iso(m.created_at)}  # fmt: skip


def dataset_json(d: Dataset) -> dict[str, Any]:
    return {"id": d.id, "name": d.name, "kind": d.kind, "format": d.format, "size": d.size, "sha256": d.sha256,
            "stats": d.stats, "created_at": iso(d.created_at)}  # fmt: skip
