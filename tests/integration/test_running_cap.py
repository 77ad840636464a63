"""GENQUEUE_MAX_RUNNING_PER_USER: a worker pool with room for two jobs runs one of alice's at a time."""

from __future__ import annotations

from datetime import datetime

import pytest

from tests.integration.test_generate_flow import wait_status
from tests.stack import WorkerProcess


def _when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.mark.slow
def test_running_jobs_per_user_are_capped_at_the_claim(held_queue, stack, app, client, tiny_model):
    pool = WorkerProcess(stack, name="w-cap", concurrency=2, GENQUEUE_MAX_RUNNING_PER_USER="1").start()
    try:
        params = {"model": tiny_model.name, "max_new_tokens": 24, "batch_size": 1, "temperature": 0}
        ids = []
        for n in range(2):
            prompts = [f"job {n} prompt {i}" for i in range(12)]
            body = {"kind": "text.generate", "params": {**params, "prompts": prompts}}
            resp = client.post("/api/v1/jobs", json=body)
            assert resp.status_code == 201, resp.get_json()
            ids.append(resp.get_json()["id"])
        bob = stack.make_user("bob")
        other = app.test_client()
        other.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {bob.token}"
        bob_job = other.post("/api/v1/jobs", json={"kind": "text.generate", "params": {**params, "prompts": ["b"]}})
        assert bob_job.status_code == 201

        jobs = [wait_status(client, i, ("succeeded", "failed"), timeout=180) for i in ids]
        assert [j["status"] for j in jobs] == ["succeeded", "succeeded"], jobs
        assert wait_status(other, bob_job.get_json()["id"], ("succeeded", "failed"))["status"] == "succeeded"
        first, second = sorted(jobs, key=lambda j: _when(j["started_at"]))
        # Two free pool processes, yet alice's second job started only after her first one finished.
        assert _when(second["started_at"]) >= _when(first["finished_at"]), (first, second)
        assert "deferred: its owner runs their cap" in pool.log()
    finally:
        pool.stop()
