"""Rows for tests that need finished jobs without running them: a job, its events, artifacts and trained model."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import text

from shared.db import get_engine, session_scope
from shared.ids import new_id
from shared.models import Artifact, GenerationResult, Job, JobEvent, Model, ModelKind, ModelSource
from shared.storage import get_storage
from shared.timeutil import utcnow


def finished_job(
    owner_id: str,
    kind: str = "text.train",
    status: str = "succeeded",
    params: dict | None = None,
    finished_days_ago: float = 0,
) -> str:
    """A job row in ``status`` with a status event, one result, one stored artifact; returns its id."""
    job_id = new_id("job")
    params = params if params is not None else {"dataset_id": "ds_none", "max_steps": 100, "learning_rate": 0.001}
    finished = utcnow() - timedelta(days=finished_days_ago)
    rel = f"jobs/{job_id}/artifacts/{new_id('art')}-out.txt"
    size, sha = get_storage().put_bytes(rel, b"an artifact")
    with session_scope() as s:
        s.add(
            Job(
                id=job_id,
                owner_id=owner_id,
                kind=kind,
                status=status,
                params=params,
                progress_total=1,
                progress_done=1,
                started_at=finished - timedelta(minutes=5),
                finished_at=finished,
                search_text=kind,
            )
        )
        s.flush()
        s.add(JobEvent(job_id=job_id, attempt=1, type="status", message=status, data={"status": status}))
        s.add(
            GenerationResult(
                job_id=job_id,
                prompt_index=0,
                sequence=0,
                prompt="p",
                text="t",
                tokens=1,
                finish_reason="length",
                attempt=1,
            )
        )
        s.add(
            Artifact(
                id=new_id("art"),
                job_id=job_id,
                owner_id=owner_id,
                name="out.txt",
                role="output",
                content_type="text/plain",
                size=size,
                sha256=sha,
                path=rel,
            )
        )
    return job_id


def trained_model(owner_id: str, job_id: str, source_dir: Path, kind: str = ModelKind.CAUSAL_LM) -> Model:
    """A registry model the job trained, its files uploaded to ``models/<id>/`` in the store (as a worker does)."""
    model_id = new_id("mdl")
    get_storage().put_dir(f"models/{model_id}", source_dir)
    model = Model(
        id=model_id,
        name=f"trained-{job_id[-10:]}",
        kind=kind,
        source=ModelSource.TRAINED,
        owner_id=owner_id,
        object_key=f"models/{model_id}",
        job_id=job_id,
        config={"context_length": 64},
        metrics={},
        size_bytes=1,
    )
    with session_scope() as s:
        s.add(model)
    return model


def metric_points(job_id: str, n: int, spike_at: int | None = None, attempt: int = 1) -> None:
    """``n`` metric events (steps 1..n) with ``train_loss`` falling as 5/sqrt(step) and ``lr`` constant; one spike
    of ``train_loss = 100`` at ``spike_at``. Inserted by one SQL statement (100k rows in about a second)."""
    sql = text("""
        INSERT INTO job_events (job_id, attempt, type, step, data)
        SELECT :job_id, :attempt, 'metric', g,
               jsonb_build_object('train_loss', CASE WHEN g = :spike THEN 100.0 ELSE 5.0 / sqrt(g) END,
                                  'lr', 0.0003)
        FROM generate_series(1, :n) AS g
    """)
    with get_engine().begin() as conn:
        conn.execute(sql, {"job_id": job_id, "attempt": attempt, "n": n, "spike": spike_at or -1})
