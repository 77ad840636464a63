"""ORM rows → API JSON (shapes in shared/schemas/api.py); the job object lives in shared/jobview.py."""

from __future__ import annotations

from typing import Any

from shared.jobview import eta_seconds, job_json
from shared.models import Artifact, Dataset, GenerationResult, JobEvent, Model
from shared.timeutil import iso

__all__ = ["artifact_json", "dataset_json", "eta_seconds", "event_json", "job_json", "model_json", "result_json"]


def event_json(e: JobEvent) -> dict[str, Any]:
    return {
        "id": e.id,
        "at": iso(e.at),
        "type": e.type,
        "attempt": e.attempt,
        "step": e.step,
        "message": e.message,
        "data": e.data,
    }


def result_json(r: GenerationResult) -> dict[str, Any]:
    return {
        "index": r.prompt_index,
        "sequence": r.sequence,
        "id": r.prompt_id,
        "prompt": r.prompt,
        "text": r.text,
        "tokens": r.tokens,
        "finish_reason": r.finish_reason,
    }


def artifact_json(a: Artifact) -> dict[str, Any]:
    return {
        "id": a.id,
        "job_id": a.job_id,
        "name": a.name,
        "role": a.role,
        "content_type": a.content_type,
        "size": a.size,
        "sha256": a.sha256,
        "step": a.step,
        "created_at": iso(a.created_at),
    }


def model_json(m: Model) -> dict[str, Any]:
    return {
        "id": m.id,
        "name": m.name,
        "kind": m.kind,
        "source": m.source,
        "base": m.base,
        "job_id": m.job_id,
        "dataset_id": m.dataset_id,
        "config": m.config,
        "metrics": m.metrics,
        "size_bytes": m.size_bytes,
        "created_at": iso(m.created_at),
    }


def dataset_json(d: Dataset) -> dict[str, Any]:
    return {
        "id": d.id,
        "name": d.name,
        "kind": d.kind,
        "format": d.format,
        "size": d.size,
        "sha256": d.sha256,
        "stats": d.stats,
        "created_at": iso(d.created_at),
    }
