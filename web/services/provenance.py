"""The provenance of a job's text results, looked up where they are served (labels: ``shared/provenance.py``)."""

from __future__ import annotations

import io
import zipfile
from typing import Any

from sqlalchemy.orm import Session

from shared.model_refs import find_model
from shared.models import Job, User
from shared.provenance import archive_json, provenance


def job_provenance(s: Session, job: Job) -> dict[str, Any]:
    """Model id and name (the registry row the job's ``model`` names, as its owner sees it), job id, seed."""
    ref = (job.params or {}).get("model")
    model = find_model(s, ref, s.get(User, job.owner_id)) if ref else None
    return provenance(
        model_id=model.id if model else None,
        model_name=model.name if model else ref,
        job_id=job.id,
        seed=(job.params or {}).get("seed"),
        created_at=None,
    )


def results_zip(jsonl: str, prov: dict[str, Any]) -> bytes:
    """``?format=zip``: ``results.jsonl`` (labelled rows) and ``provenance.json``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("results.jsonl", jsonl)
        zf.writestr("provenance.json", archive_json(prov, ["results.jsonl"]))
    return buf.getvalue()
