"""Cleanup: DELETE of finished jobs (rows and stored files; the trained model kept unless asked), of unused datasets,
and retention pruning (GENQUEUE_RETENTION_DAYS) by the maintenance code."""

from __future__ import annotations

import io

import pytest
from sqlalchemy import func, select

from shared.cleanup import prune_expired
from shared.db import session_scope
from shared.model_refs import model_source
from shared.models import Artifact, GenerationResult, Job, JobEvent, Model
from shared.storage import get_storage
from tests.factories import finished_job, trained_model
from tests.security.conftest import held_job

pytestmark = pytest.mark.usefixtures("held_queue")


def rows(job_id: str) -> dict[str, int]:
    with session_scope() as s:
        return {
            table.__name__: s.scalar(select(func.count()).select_from(table).where(table.job_id == job_id))
            for table in (JobEvent, GenerationResult, Artifact)
        } | {"Job": s.scalar(select(func.count()).select_from(Job).where(Job.id == job_id))}


def test_delete_a_finished_job_removes_rows_and_files(client, user):
    job_id = finished_job(user.id)
    assert get_storage().list(f"jobs/{job_id}") and all(rows(job_id).values())
    resp = client.delete(f"/api/v1/jobs/{job_id}")
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json() == {"id": job_id, "deleted": True, "artifacts": 1, "model_ids": [], "models_deleted": False}
    assert rows(job_id) == {"JobEvent": 0, "GenerationResult": 0, "Artifact": 0, "Job": 0}
    assert get_storage().list(f"jobs/{job_id}") == []
    assert client.get(f"/api/v1/jobs/{job_id}").status_code == 404
    assert client.delete(f"/api/v1/jobs/{job_id}").status_code == 404


@pytest.mark.parametrize("status", ["queued", "running", "cancelling"])
def test_an_active_job_is_409(client, user, status):
    job_id = finished_job(user.id, status=status)
    resp = client.delete(f"/api/v1/jobs/{job_id}")
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "job_active"
    assert rows(job_id)["Job"] == 1 and get_storage().list(f"jobs/{job_id}")


def test_the_trained_model_is_kept_and_still_loads(client, user, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    job_id = finished_job(user.id)
    model = trained_model(user.id, job_id, tiny_model_dir)
    resp = client.delete(f"/api/v1/jobs/{job_id}")
    assert resp.status_code == 200 and resp.get_json()["model_ids"] == [model.id]
    assert not resp.get_json()["models_deleted"]
    with session_scope() as s:
        kept = s.get(Model, model.id)
    assert kept is not None and kept.object_key == f"models/{model.id}"
    assert get_storage().list(f"jobs/{job_id}") == []
    AutoModelForCausalLM.from_pretrained(model_source(kept))  # the stored directory is complete
    assert client.get(f"/api/v1/models/{model.id}").status_code == 200


def test_with_model_deletes_the_model_too(client, user, tiny_model_dir):
    job_id = finished_job(user.id)
    model = trained_model(user.id, job_id, tiny_model_dir)
    resp = client.delete(f"/api/v1/jobs/{job_id}?with_model=true")
    assert resp.status_code == 200 and resp.get_json()["models_deleted"] is True
    with session_scope() as s:
        assert s.get(Model, model.id) is None
    assert get_storage().list(f"models/{model.id}") == []
    assert client.get(f"/api/v1/models/{model.id}").status_code == 404


def test_with_model_refused_while_a_queued_job_uses_the_model(client, user, tiny_model_dir):
    job_id = finished_job(user.id)
    model = trained_model(user.id, job_id, tiny_model_dir)
    user_job = held_job(user.id, model=model.name)
    resp = client.delete(f"/api/v1/jobs/{job_id}?with_model=true")
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "model_in_use"
    assert user_job in resp.get_json()["error"]["message"]
    assert rows(job_id)["Job"] == 1 and get_storage().list(f"models/{model.id}")


def test_bad_with_model_is_422(client, user):
    job_id = finished_job(user.id)
    resp = client.delete(f"/api/v1/jobs/{job_id}?with_model=maybe")
    assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "invalid_query"


def test_someone_elses_job_and_dataset_are_404_and_stay(app, client, user, stack):
    job_id = finished_job(user.id)
    ds = upload(client)
    bob = app.test_client()
    bob.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {stack.make_user('bob').token}"
    assert bob.delete(f"/api/v1/jobs/{job_id}").status_code == 404
    assert bob.delete(f"/api/v1/datasets/{ds['id']}").status_code == 404
    assert rows(job_id)["Job"] == 1
    assert client.get(f"/api/v1/datasets/{ds['id']}").status_code == 200


def upload(client, body: bytes = b"some text to train on\n" * 40) -> dict:
    resp = client.post(
        "/api/v1/datasets", data={"file": (io.BytesIO(body), "corpus.txt")}, content_type="multipart/form-data"
    )
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()


def test_delete_an_unused_dataset(client):
    ds = upload(client)
    with session_scope() as s:
        from shared.models import Dataset

        key = s.get(Dataset, ds["id"]).path
    assert get_storage().exists(key)
    resp = client.delete(f"/api/v1/datasets/{ds['id']}")
    assert resp.status_code == 200 and resp.get_json() == {"id": ds["id"], "deleted": True}
    assert not get_storage().exists(key) and get_storage().list(f"datasets/{ds['id']}") == []
    assert client.get(f"/api/v1/datasets/{ds['id']}").status_code == 404


def test_a_dataset_a_queued_job_uses_is_409_until_it_ends(client, user):
    ds = upload(client)
    resp = client.post(
        "/api/v1/jobs",
        json={"kind": "text.train", "params": {"dataset_id": ds["id"], "max_steps": 5, "block_size": 16}},
    )
    assert resp.status_code == 201, resp.get_json()
    job_id = resp.get_json()["id"]
    refused = client.delete(f"/api/v1/datasets/{ds['id']}")
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "dataset_in_use"
    assert job_id in refused.get_json()["error"]["message"]
    assert client.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 202  # queued → cancelled at once
    assert client.delete(f"/api/v1/datasets/{ds['id']}").status_code == 200


def test_a_validation_dataset_counts_as_used(client, user):
    train, val = upload(client), upload(client, b"other text for validation\n" * 40)
    params = {"dataset_id": train["id"], "validation_dataset_id": val["id"], "max_steps": 5, "block_size": 16}
    assert client.post("/api/v1/jobs", json={"kind": "text.train", "params": params}).status_code == 201
    assert client.delete(f"/api/v1/datasets/{val['id']}").status_code == 409


def test_retention_prunes_only_old_finished_jobs(user, tiny_model_dir):
    old, recent = finished_job(user.id, finished_days_ago=10), finished_job(user.id, finished_days_ago=1)
    old_failed = finished_job(user.id, status="failed", finished_days_ago=40)
    active = finished_job(user.id, status="running", finished_days_ago=30)  # finished_at set, yet still running
    model = trained_model(user.id, old, tiny_model_dir)
    assert prune_expired(days=0) == 0  # off
    assert prune_expired(days=7) == 2
    assert rows(old)["Job"] == 0 and rows(old_failed)["Job"] == 0
    assert rows(recent)["Job"] == 1 and rows(active)["Job"] == 1
    with session_scope() as s:
        assert s.get(Model, model.id) is not None  # retention keeps registry models
    assert prune_expired(days=7) == 0


def test_retention_reads_the_setting(monkeypatch, user):

    from shared.settings import get_settings

    old = finished_job(user.id, finished_days_ago=3)
    assert get_settings().retention_days == 0  # off by default
    assert prune_expired() == 0 and rows(old)["Job"] == 1
    monkeypatch.setattr("shared.cleanup.get_settings", lambda: get_settings().model_copy(update={"retention_days": 2}))
    assert prune_expired() == 1 and rows(old)["Job"] == 0


def test_the_maintenance_pass_prunes_when_retention_is_on(monkeypatch, user):
    import time

    from shared.settings import get_settings
    from worker.maintenance import run_once

    old, recent = finished_job(user.id, finished_days_ago=3), finished_job(user.id)
    monkeypatch.setattr("shared.cleanup.get_settings", lambda: get_settings().model_copy(update={"retention_days": 2}))
    monkeypatch.setattr("shared.cleanup._last_periodic", -1e9)
    deadline = time.monotonic() + 30
    while rows(old)["Job"] and time.monotonic() < deadline:
        run_once()  # None while another worker's maintenance holds the cluster-wide lock: try again
        time.sleep(0.2)
    assert rows(old)["Job"] == 0 and rows(recent)["Job"] == 1


def test_a_model_trained_before_the_object_store_is_kept_when_its_job_goes(client, user, tiny_model_dir):
    """Such a model's files are in its job's directory (``model.path``); they are stored apart before it is deleted."""
    import shutil

    from shared.ids import new_id
    from shared.models import ModelKind, ModelSource
    from shared.storage import FileStorage

    store = get_storage()
    if not isinstance(store, FileStorage):
        pytest.skip("models trained before the object store existed only on file:// stores")
    job_id = finished_job(user.id)
    legacy = store.path(f"jobs/{job_id}/lm/model")
    shutil.copytree(tiny_model_dir, legacy)
    model_id = new_id("mdl")
    with session_scope() as s:
        s.add(
            Model(
                id=model_id,
                name=f"legacy-{model_id[-6:]}",
                kind=ModelKind.CAUSAL_LM,
                source=ModelSource.TRAINED,
                owner_id=user.id,
                path=str(legacy),
                job_id=job_id,
                config={},
                metrics={},
                size_bytes=1,
            )
        )
    assert client.delete(f"/api/v1/jobs/{job_id}").status_code == 200
    with session_scope() as s:
        kept = s.get(Model, model_id)
    assert kept.object_key == f"models/{model_id}" and kept.path is None and not legacy.exists()
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(model_source(kept))
