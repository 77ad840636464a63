"""Cross-job batching end to end: queued text.generate jobs of one model share a real worker's running batch, and
each keeps its own results, progress, events and status (HTTP → Postgres → Celery → worker → Postgres → HTTP)."""

from __future__ import annotations

import json
import time

import pytest

from tests.integration.test_generate_flow import wait_status
from worker.ml.common import pick_device
from worker.ml.lm.gen_base import GenerateConfig, PromptItem
from worker.ml.lm.generate import generate
from worker.ml.lm.loading import load_causal_lm

pytestmark = pytest.mark.usefixtures("worker")

COMMON = {"max_new_tokens": 12, "seed": 11, "temperature": 0.9, "top_k": 20}


def submit(client, prompts: list, **params) -> str:
    body = {"kind": "text.generate", "params": {**COMMON, "prompts": prompts, **params}}
    resp = client.post("/api/v1/jobs", json=body)
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()["id"]


def tasks_delivered(worker) -> int:
    """How many task messages the worker process has received since it started (Celery's own count)."""
    from shared.broker import sender

    stats = sender().control.inspect(destination=[worker.hostname], timeout=10).stats() or {}
    return sum(stats[worker.hostname]["total"].values())


def results(client, job_id: str) -> list[dict]:
    lines = client.get(f"/api/v1/jobs/{job_id}/results").get_data(as_text=True).splitlines()
    return [json.loads(line) for line in lines]


def alone(lm, prompts: list[str], **params) -> list[str]:
    p = {**COMMON, **params}
    cfg = GenerateConfig(max_new_tokens=p["max_new_tokens"], seed=p["seed"], temperature=p["temperature"], top_k=20)
    out = generate(lm, [PromptItem(i, q) for i, q in enumerate(prompts)], cfg)
    return [c.text for c in sorted(out, key=lambda c: c.index)]


def test_queued_jobs_of_one_model_share_a_batch_and_keep_everything_their_own(
    client, tiny_model, tiny_model_dir, held_queue, worker
):
    model = tiny_model.name
    first = submit(client, [f"The first job's prompt {i}" for i in range(6)], model=model, max_new_tokens=30)
    small = [submit(client, [f"one small job number {k}"], model=model) for k in range(10)]
    own_sampling = submit(client, ["a job with its own sampling"], model=model, seed=12, temperature=0.5)
    delivered = tasks_delivered(worker)
    worker.consume(True)

    jobs = {j: wait_status(client, j, ("succeeded", "failed", "cancelled")) for j in [first, *small, own_sampling]}
    assert {j["status"] for j in jobs.values()} == {"succeeded"}, jobs
    batched = [j for j in jobs.values() if j["summary"].get("batched_with")]
    assert len(batched) >= 10  # all but the job each batch started from
    # the joined jobs' own messages were taken out of the queue when they joined (shared/broker.py:withdraw), not
    # delivered later only to be dropped: the worker received the messages of the jobs that started a batch
    time.sleep(1.0)  # a message still left would be delivered and dropped by now
    assert tasks_delivered(worker) - delivered <= 12 - len(batched), (delivered, tasks_delivered(worker))
    assert jobs[own_sampling]["summary"].get("batched_with")  # other sampling settings: joined all the same
    assert all(j["summary"]["batched_with"] != j["id"] for j in batched)

    lm = load_causal_lm(str(tiny_model_dir), pick_device("cpu"))
    for k, job_id in enumerate(small):
        rows = results(client, job_id)
        assert [r["prompt"] for r in rows] == [f"one small job number {k}"]
        assert [r["text"] for r in rows] == alone(lm, [f"one small job number {k}"])  # its text alone
        job = jobs[job_id]
        assert job["progress"]["done"] == job["progress"]["total"] == 1
        statuses = [
            e["data"]["status"]
            for e in client.get(f"/api/v1/jobs/{job_id}/events").get_json()["items"]
            if e["type"] == "status"
        ]
        assert statuses == ["queued", "running", "succeeded"]
    assert [r["text"] for r in results(client, own_sampling)] == alone(
        lm, ["a job with its own sampling"], seed=12, temperature=0.5
    )  # drawn with its own seed and temperature in the shared batch
    first_rows = results(client, first)
    assert [r["text"] for r in first_rows] == alone(lm, [r["prompt"] for r in first_rows], max_new_tokens=30)


def test_cancelling_one_job_of_a_batch_leaves_the_others_untouched(client, tiny_model, held_queue, worker):
    model = tiny_model.name
    # two rows in flight (the first job's batch_size), both the first job's: none of its rows wait, so the others
    # join at once, and the victim's rows are still to do when it is cancelled
    long_one = submit(client, [f"L{i}" for i in range(2)], model=model, max_new_tokens=90, batch_size=2)
    victim = submit(client, [f"V{i}" for i in range(40)], model=model, max_new_tokens=90)
    short = [submit(client, [f"short {k}"], model=model) for k in range(4)]
    worker.consume(True)
    wait_status(client, victim, ("running",), timeout=60)
    assert client.post(f"/api/v1/jobs/{victim}/cancel").status_code == 202
    cancelled = wait_status(client, victim, ("cancelled", "succeeded", "failed"))
    assert cancelled["status"] == "cancelled"
    for job_id in [long_one, *short]:
        job = wait_status(client, job_id, ("succeeded", "failed", "cancelled"))
        assert job["status"] == "succeeded", job
        assert len(results(client, job_id)) == job["summary"]["prompts"]
