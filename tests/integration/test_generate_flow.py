"""text.generate end to end: HTTP → Postgres → Celery → real worker process → Postgres → HTTP."""

from __future__ import annotations

import json
import time

import pytest

pytestmark = pytest.mark.usefixtures("worker")


def wait_status(client, job_id: str, statuses: tuple[str, ...], timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    job = {}
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/jobs/{job_id}").get_json()
        if job["status"] in statuses:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {job.get('status')} after {timeout}s: {job}")


def test_generate_job_succeeds_with_one_result_per_prompt(client, tiny_model):
    prompts = [f"The module number {i} says" for i in range(20)]
    resp = client.post(
        "/api/v1/jobs",
        json={
            "kind": "text.generate",
            "params": {"model": tiny_model.name, "prompts": prompts, "max_new_tokens": 8, "seed": 3},
        },
    )
    assert resp.status_code == 201, resp.get_json()
    job = wait_status(client, resp.get_json()["id"], ("succeeded", "failed"))
    assert job["status"] == "succeeded", job
    assert job["progress"] == {"done": 20, "total": 20, "eta_seconds": None}
    lines = client.get(f"/api/v1/jobs/{job['id']}/results").get_data(as_text=True).splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["index"] for r in rows] == list(range(20))
    assert [r["prompt"] for r in rows] == prompts
    assert all(0 < r["tokens"] <= 8 for r in rows)
    csv_text = client.get(f"/api/v1/jobs/{job['id']}/results?format=csv").get_data(as_text=True)
    assert csv_text.splitlines()[0] == (
        "index,sequence,id,prompt,text,tokens,finish_reason,ai_generated,provenance_model_id,provenance_model_name,"
        "provenance_job_id,provenance_seed,provenance_genqueue_version,provenance_created_at"
    )
    assert len(csv_text.strip().splitlines()) >= 21


def test_second_job_on_the_same_model_uses_the_worker_cache(client, tiny_model):
    summaries = []
    for seed in (1, 2):
        job = client.post(
            "/api/v1/jobs",
            json={
                "kind": "text.generate",
                "params": {"model": tiny_model.name, "prompts": ["a", "b"], "max_new_tokens": 4, "seed": seed},
            },
        ).get_json()
        summaries.append(wait_status(client, job["id"], ("succeeded", "failed"))["summary"])
    assert summaries[1]["model_cache"] == "hit", summaries


def test_same_params_and_seed_give_the_same_texts(client, tiny_model):
    texts = []
    for _ in range(2):
        job = client.post(
            "/api/v1/jobs",
            json={
                "kind": "text.generate",
                "params": {
                    "model": tiny_model.name,
                    "prompts": ["one", "two two", "three three three"],
                    "max_new_tokens": 6,
                    "seed": 42,
                    "temperature": 0.9,
                },
            },
        ).get_json()
        assert wait_status(client, job["id"], ("succeeded", "failed"))["status"] == "succeeded"
        rows = client.get(f"/api/v1/jobs/{job['id']}/results?format=json").get_json()["items"]
        texts.append([r["text"] for r in rows])
    assert texts[0] == texts[1]


def test_prompt_ids_and_jsonl_dataset(client, tiny_model):
    import io

    payload = b'{"prompt": "first", "id": "p-1"}\n{"prompt": "second", "id": "p-2"}\n{"prompt": "third"}\n'
    ds = client.post(
        "/api/v1/datasets", data={"file": (io.BytesIO(payload), "prompts.jsonl")}, content_type="multipart/form-data"
    )
    assert ds.status_code == 201, ds.get_json()
    job = client.post(
        "/api/v1/jobs",
        json={
            "kind": "text.generate",
            "params": {"model": tiny_model.name, "dataset_id": ds.get_json()["id"], "max_new_tokens": 4},
        },
    ).get_json()
    assert wait_status(client, job["id"], ("succeeded", "failed"))["status"] == "succeeded"
    rows = client.get(f"/api/v1/jobs/{job['id']}/results?format=json").get_json()["items"]
    assert [(r["index"], r["id"], r["prompt"]) for r in rows] == [
        (0, "p-1", "first"),
        (1, "p-2", "second"),
        (2, None, "third"),
    ]


def test_cancel_mid_job_keeps_the_finished_results(client, tiny_model):
    prompts = [f"prompt {i}" for i in range(3000)]
    job = client.post(
        "/api/v1/jobs",
        json={
            "kind": "text.generate",
            "params": {"model": tiny_model.name, "prompts": prompts, "max_new_tokens": 4, "batch_size": 1},
        },
    ).get_json()
    deadline = time.monotonic() + 60
    while client.get(f"/api/v1/jobs/{job['id']}").get_json()["progress"]["done"] < 3:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    resp = client.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert resp.status_code == 202 and resp.get_json()["status"] in ("cancelling", "cancelled")
    final = wait_status(client, job["id"], ("cancelled", "succeeded", "failed"), timeout=30)
    assert final["status"] == "cancelled"
    rows = client.get(f"/api/v1/jobs/{job['id']}/results?format=json").get_json()["items"]
    assert 3 <= len(rows) < 3000
    assert all(r["prompt"] == prompts[r["index"]] for r in rows)
    # a cancelled job is never restarted
    time.sleep(1.5)
    assert client.get(f"/api/v1/jobs/{job['id']}").get_json()["status"] == "cancelled"


def test_a_later_attempt_skips_prompts_already_stored(client, tiny_model, stack, user):
    """Results stored by an earlier attempt are kept and only the rest is generated (as after a worker crash)."""
    from sqlalchemy import text as sql

    from shared.ids import new_id

    params = {"model": tiny_model.name, "prompts": [f"p{i}" for i in range(6)], "max_new_tokens": 4}
    job_id = new_id("job")
    with stack.engine().begin() as c:  # a job whose first attempt stored prompts 0-2, then lost its worker
        c.execute(
            sql(
                "INSERT INTO jobs (id, owner_id, kind, status, params, priority, queue, attempt, max_attempts, "
                "progress_done, progress_total, search_text) VALUES (:id, :o, 'text.generate', 'queued', "
                "CAST(:p AS jsonb), 0, 'gpu', 2, 3, 3, 6, '')"
            ),
            {"id": job_id, "o": user.id, "p": json.dumps(params)},
        )
        for i in range(3):
            c.execute(
                sql(
                    "INSERT INTO generation_results (job_id, prompt_index, sequence, prompt, text, tokens, "
                    "finish_reason, attempt) VALUES (:j, :i, 0, :p, 'EARLIER', 1, 'length', 1)"
                ),
                {"j": job_id, "i": i, "p": f"p{i}"},
            )
    final = wait_status(client, job_id, ("succeeded", "failed"), timeout=60)  # the reconciler publishes it
    assert final["status"] == "succeeded" and final["summary"]["skipped_done"] == 3, final
    assert final["attempt"] == 2
    rows = client.get(f"/api/v1/jobs/{job_id}/results?format=json").get_json()["items"]
    assert [r["text"] for r in rows[:3]] == ["EARLIER"] * 3
    assert [r["index"] for r in rows] == list(range(6)) and all(r["text"] != "EARLIER" for r in rows[3:])


def _run_job(client, params: dict) -> list[dict]:
    job = client.post("/api/v1/jobs", json={"kind": "text.generate", "params": params}).get_json()
    final = wait_status(client, job["id"], ("succeeded", "failed"))
    assert final["status"] == "succeeded", final
    return client.get(f"/api/v1/jobs/{job['id']}/results?format=json").get_json()["items"]


def test_sampled_texts_do_not_depend_on_batch_size(client, tiny_model):
    """The same job with seed 7 and batch_size 5 instead of the automatic size gives the same texts."""
    params = {"model": tiny_model.name, "prompts": [f"Prompt number {i} is" for i in range(24)], "seed": 7}
    params.update(max_new_tokens=10, temperature=0.9, num_return_sequences=2)
    auto = [(r["index"], r["sequence"], r["text"]) for r in _run_job(client, params)]
    five = [(r["index"], r["sequence"], r["text"]) for r in _run_job(client, {**params, "batch_size": 5})]
    assert len(auto) == 48 and auto == five
    assert len({text for _, _, text in auto}) > 24  # they are samples, not one repeated text


def test_per_prompt_max_new_tokens_and_stop(client, tiny_model):
    prompts = [
        "a job-wide limit",
        {"prompt": "a short one", "max_new_tokens": 2, "id": "short"},
        {"prompt": "stops at once", "stop": ["a", "e", "i", "o", "u", " "]},
    ]
    rows = _run_job(client, {"model": tiny_model.name, "prompts": prompts, "max_new_tokens": 12, "temperature": 0})
    assert [r["index"] for r in rows] == [0, 1, 2]
    assert 0 < rows[0]["tokens"] <= 12 and 0 <= rows[1]["tokens"] <= 2 and rows[1]["id"] == "short"
    assert not any(c in rows[2]["text"] for c in "aeiou ")
