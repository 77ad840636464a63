"""POST /demo and POST /demo/followup: the plan `genqueue demo` and the dashboard's button share.

The whole demo running for real is tests/integration/test_demo.py (slow); here the jobs stay queued.
"""

from __future__ import annotations

from sqlalchemy import text

from shared.corpus import stdlib_corpus_text


def _succeed(stack, job_id: str, model_id: str) -> None:
    """Let a queued training job have ended well (what a worker writes when it finishes and registers a model)."""
    with stack.engine().begin() as conn:
        conn.execute(
            text("UPDATE jobs SET status='succeeded', model_id=:m, finished_at=now() WHERE id=:j"),
            {"m": model_id, "j": job_id},
        )


def test_demo_queues_the_two_training_jobs_on_a_corpus_built_here(held_queue, client):
    resp = client.post("/api/v1/demo", json={"steps": 40, "gan_steps": 30})
    assert resp.status_code == 201, resp.get_json()
    data = resp.get_json()
    assert data["dataset"]["size"] == len(stdlib_corpus_text().encode()) and data["dataset"]["kind"] == "text"
    lm, gan, tagger = data["jobs"]
    assert (lm["kind"], gan["kind"], tagger["kind"]) == ("text.train", "image.train_gan", "text.train_tagger")
    assert tagger["params"]["max_steps"] == 200 and tagger["status"] == "queued"
    tagged = client.get(f"/api/v1/datasets/{tagger['params']['dataset_id']}").get_json()
    assert tagged["kind"] == "tagged" and tagged["stats"]["sentences"] == 600
    assert lm["params"]["dataset_id"] == data["dataset"]["id"] and lm["params"]["max_steps"] == 40
    assert gan["params"]["dataset"] == "digits" and gan["params"]["max_steps"] == 30
    assert lm["status"] == gan["status"] == "queued"
    again = client.post("/api/v1/demo").get_json()  # no body: the defaults, and the same corpus is the same dataset
    assert again["dataset"]["id"] == data["dataset"]["id"] and again["jobs"][0]["params"]["max_steps"] == 300


def test_followup_waits_for_success_then_is_idempotent(held_queue, stack, app, client, tiny_model):
    lm, gan = client.post("/api/v1/demo", json={"steps": 40, "gan_steps": 30, "tagger_steps": 0}).get_json()["jobs"]
    early = client.post("/api/v1/demo/followup", json={"after": lm["id"]})
    assert early.status_code == 409 and early.get_json()["error"]["code"] == "not_ready"

    _succeed(stack, lm["id"], tiny_model.id)
    first = client.post("/api/v1/demo/followup", json={"after": lm["id"]})
    assert first.status_code == 201, first.get_json()
    job = first.get_json()
    assert job["kind"] == "text.generate" and job["params"]["model"] == tiny_model.id
    assert len(job["params"]["prompts"]) >= 24
    second = client.post("/api/v1/demo/followup", json={"after": lm["id"]})
    assert second.status_code == 200 and second.get_json()["id"] == job["id"]  # a reloaded page queues nothing new

    bob = stack.make_user("bob")
    other = app.test_client()
    other.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {bob.token}"
    assert other.post("/api/v1/demo/followup", json={"after": lm["id"]}).status_code == 404


def test_bad_demo_requests_are_4xx(held_queue, client):
    for body in ({"steps": 0}, {"steps": "many"}, {"gan_steps": 10**9}, {"nope": 1}, [1]):
        resp = client.post("/api/v1/demo", json=body)
        assert resp.status_code == 422, (body, resp.get_json())
    resp = client.post("/api/v1/demo", data="{not json", content_type="application/json")
    assert resp.status_code == 422
    for body in ({}, {"after": ""}, {"after": 3}, {"after": "job_x", "more": 1}):
        assert client.post("/api/v1/demo/followup", json=body).status_code == 422, body
    assert client.post("/api/v1/demo/followup", json={"after": "job_nope"}).status_code == 404
    job = client.post("/api/v1/jobs", json={"kind": "text.generate", "params": {"model": "gpt2", "prompts": ["a"]}})
    resp = client.post("/api/v1/demo/followup", json={"after": job.get_json()["id"]})
    assert resp.status_code == 422 and "training jobs" in resp.get_json()["error"]["message"]
