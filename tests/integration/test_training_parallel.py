"""A data-parallel text.train job (2 gloo ranks on the CPU worker) end to end through the API."""

from __future__ import annotations

import pytest

from shared.corpus import stdlib_corpus_text
from tests.integration.test_generate_flow import wait_status
from tests.integration.test_training_flow import metric_series, upload

pytestmark = pytest.mark.usefixtures("worker")


@pytest.mark.slow
def test_two_process_job_trains_reports_mfu_and_registers_a_model(client):
    ds = upload(client, "stdlib-dp.txt", stdlib_corpus_text(max_chars=40_000).encode()).get_json()
    params = {
        "base_model": "scratch",
        "size": "tiny",
        "vocab_size": 384,
        "dataset_id": ds["id"],
        "block_size": 32,
        "batch_size": 4,
        "max_steps": 6,
        "eval_every": 3,
        "checkpoint_every": 3,
        "warmup_steps": 1,
        "num_processes": 2,
        "precision": "fp32",
    }
    job = client.post("/api/v1/jobs", json={"kind": "text.train", "params": params}).get_json()
    done = wait_status(client, job["id"], ("succeeded", "failed"), timeout=240)
    assert done["status"] == "succeeded", done
    assert done["progress"]["done"] == 6 and done["model_id"]
    assert [s for s, _ in metric_series(client, job["id"], "val_loss")] == [3, 6]
    mfu = metric_series(client, job["id"], "mfu")
    assert mfu and all(0 < v < 1 for _, v in mfu)
    logs = client.get(f"/api/v1/jobs/{job['id']}/events?type=log&limit=500").get_json()["items"]
    assert any("data-parallel: 2 ranks" in (e["message"] or "") for e in logs)


def test_num_processes_is_validated(client):
    bad = client.post("/api/v1/jobs", json={"kind": "text.train", "params": {"dataset_id": "x", "num_processes": 0}})
    assert bad.status_code == 422
