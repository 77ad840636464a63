"""Fixtures for the security tests: a user's complete set of objects, for others to try to reach."""

from __future__ import annotations

import io

import pytest

from shared.db import session_scope
from shared.ids import new_id
from shared.models import Artifact, GenerationResult, Job, JobEvent, JobStatus, Model, ModelKind, ModelSource


def held_job(owner_id: str, model: str = "gpt2", prompt: str = "hello") -> str:
    """A queued ``text.generate`` job that no worker claims for a day (``not_before``), so tests that run while the
    session's worker is up still find it queued. Returns its id."""
    from datetime import timedelta

    from shared.schemas.params import TextGenerateParams
    from shared.timeutil import utcnow

    params = TextGenerateParams(model=model, prompts=[prompt]).model_dump(mode="json", exclude_none=True)
    job_id = new_id("job")
    with session_scope() as s:
        s.add(
            Job(
                id=job_id,
                owner_id=owner_id,
                kind="text.generate",
                status=JobStatus.QUEUED,
                params=params,
                progress_total=1,
                not_before=utcnow() + timedelta(days=1),
                search_text=f"text.generate\n{prompt}",
            )
        )
        s.add(JobEvent(job_id=job_id, attempt=1, type="status", message="queued", data={"status": "queued"}))
    return job_id


@pytest.fixture
def world(app, user, stack, tiny_model, tiny_model_dir):
    """Alice's objects: a queued job with events and a result, an artifact on disk, a dataset, a trained model."""
    from shared.storage import get_storage

    alice = app.test_client()
    alice.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {user.token}"
    job_id = held_job(user.id, tiny_model.name, "secret prompt")
    ds = alice.post(
        "/api/v1/datasets",
        data={"file": (io.BytesIO(b"alice's private text\n" * 50), "a.txt")},
        content_type="multipart/form-data",
    )
    assert ds.status_code == 201, ds.get_json()
    art_id, model_id = new_id("art"), new_id("mdl")
    size, sha = get_storage().put_bytes(f"jobs/{job_id}/out.txt", b"alice's artifact")
    with session_scope() as s:
        s.add(
            GenerationResult(
                job_id=job_id,
                prompt_index=0,
                sequence=0,
                prompt="secret prompt",
                text="secret text",
                tokens=2,
                finish_reason="length",
                attempt=1,
            )
        )
        s.add(
            Artifact(
                id=art_id,
                job_id=job_id,
                owner_id=user.id,
                name="out.txt",
                role="output",
                content_type="text/plain",
                size=size,
                sha256=sha,
                path=f"jobs/{job_id}/out.txt",
            )
        )
        s.add(
            Model(
                id=model_id,
                name=f"alice-model-{model_id[-6:]}",
                kind=ModelKind.CAUSAL_LM,
                source=ModelSource.TRAINED,
                owner_id=user.id,
                path=str(tiny_model_dir),
                job_id=job_id,
                config={"context_length": 64},
                metrics={},
                size_bytes=1,
            )
        )
    return {
        "job_id": job_id,
        "artifact_id": art_id,
        "dataset_id": ds.get_json()["id"],
        "model_id": model_id,
        "model_name": f"alice-model-{model_id[-6:]}",
    }
