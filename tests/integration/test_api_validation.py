"""Bad input gets a clear 4xx JSON error and stores nothing (issue: every bad input is a test)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from shared.db import session_scope
from shared.models import Job


def job_count() -> int:
    with session_scope() as s:
        return s.scalar(select(func.count()).select_from(Job))


def assert_error(resp, status: int, code: str | None = None) -> dict:
    assert resp.status_code == status, resp.get_data(as_text=True)
    body = resp.get_json()
    assert set(body) == {"error"} and body["error"]["message"], body
    if code:
        assert body["error"]["code"] == code, body
    return body["error"]


def gen(model: str, **params) -> dict:
    return {"kind": "text.generate", "params": {"model": model, "prompts": ["hello"], **params}}


@pytest.mark.parametrize(
    "body, status",
    [
        ({"kind": "text.nope", "params": {}}, 422),
        ({"params": {}}, 422),
        ({"kind": "text.generate"}, 422),  # neither prompts nor dataset_id
        ({"kind": "text.generate", "params": {"model": "x", "prompts": "not a list"}}, 422),
        ({"kind": "text.generate", "params": {"model": "x", "prompts": [], "max_new_tokens": 4}}, 422),
        ({"kind": "text.generate", "params": {"prompts": ["a"], "max_new_tokens": 0}}, 422),
        ({"kind": "text.generate", "params": {"prompts": ["a"], "max_new_tokens": -3}}, 422),
        ({"kind": "text.generate", "params": {"prompts": ["a"], "max_new_tokens": "ten"}}, 422),
        ({"kind": "text.generate", "params": {"prompts": ["a"], "unknown_param": 1}}, 422),
        ({"kind": "text.generate", "params": {"prompts": ["a"], "temperature": -1}}, 422),
        ({"kind": "text.generate", "params": {"prompts": ["a"], "dataset_id": "ds_x"}}, 422),
        ({"kind": "text.generate", "params": {"prompts": [""]}}, 422),
        ({"kind": "text.generate", "params": {"prompts": ["a"]}, "priority": 1000}, 422),
        ([1, 2, 3], 422),
        ("just a string", 422),
    ],
)
def test_invalid_bodies_are_422_and_store_nothing(client, body, status):
    assert_error(client.post("/api/v1/jobs", json=body), status)
    assert job_count() == 0


def test_body_that_is_not_json(client):
    resp = client.post("/api/v1/jobs", data="{not json", content_type="application/json")
    assert_error(resp, 422, "invalid_body")
    resp = client.post("/api/v1/jobs", data="kind=text.generate", content_type="application/x-www-form-urlencoded")
    assert_error(resp, 422, "invalid_body")
    assert job_count() == 0


def test_unknown_model_and_dataset(client, tiny_model):
    assert_error(client.post("/api/v1/jobs", json=gen("no-such-model")), 422, "invalid_params")
    body = {"kind": "text.generate", "params": {"model": tiny_model.name, "dataset_id": "ds_missing"}}
    err = assert_error(client.post("/api/v1/jobs", json=body), 422)
    assert "unknown dataset" in err["message"]
    assert job_count() == 0


def test_max_new_tokens_above_context(client, tiny_model):
    # the tiny model's context is 128 tokens
    err = assert_error(client.post("/api/v1/jobs", json=gen(tiny_model.name, max_new_tokens=500)), 422)
    assert "context" in err["message"]
    assert job_count() == 0


def test_prompt_that_alone_exceeds_context(client, tiny_model):
    long_prompt = "word " * 400
    body = {
        "kind": "text.generate",
        "params": {"model": tiny_model.name, "prompts": ["short", long_prompt], "max_new_tokens": 8},
    }
    err = assert_error(client.post("/api/v1/jobs", json=body), 422)
    assert err["details"][0]["loc"] == ["params", "prompts", 1]
    assert job_count() == 0


def test_more_prompts_than_the_limit(client, tiny_model, monkeypatch):
    from shared.settings import get_settings

    limit = get_settings().max_prompts
    body = {"kind": "text.generate", "params": {"model": tiny_model.name, "prompts": ["p"] * (limit + 1)}}
    err = assert_error(client.post("/api/v1/jobs", json=body), 422)
    assert "limit" in err["message"]
    assert job_count() == 0


def test_body_over_the_size_limit_is_413(client, app):
    app.config["MAX_CONTENT_LENGTH"] = 10_000
    resp = client.post("/api/v1/jobs", json=gen("gpt2", prompts=["x" * 20_000]))
    assert_error(resp, 413, "too_large")
    assert job_count() == 0


def test_unknown_job_is_404(client):
    for method, path in [
        ("get", "/api/v1/jobs/job_nope"),
        ("post", "/api/v1/jobs/job_nope/cancel"),
        ("post", "/api/v1/jobs/job_nope/retry"),
        ("get", "/api/v1/jobs/job_nope/events"),
        ("get", "/api/v1/jobs/job_nope/results"),
        ("get", "/api/v1/artifacts/art_nope"),
    ]:
        assert_error(getattr(client, method)(path), 404, "not_found")


def test_bad_query_params(client):
    assert_error(client.get("/api/v1/jobs?limit=0"), 422)
    assert_error(client.get("/api/v1/jobs?limit=abc"), 422)
    assert_error(client.get("/api/v1/jobs?status=nope"), 422)


def test_cancel_of_a_finished_job_is_409(held_queue, client, tiny_model):
    job = client.post("/api/v1/jobs", json=gen(tiny_model.name)).get_json()
    assert client.post(f"/api/v1/jobs/{job['id']}/cancel").status_code == 202  # queued → cancelled at once
    assert client.get(f"/api/v1/jobs/{job['id']}").get_json()["status"] == "cancelled"
    assert_error(client.post(f"/api/v1/jobs/{job['id']}/cancel"), 409, "job_finished")


def test_unauthenticated_requests_are_401(app, stack, clean_db):
    anon = app.test_client()
    assert_error(anon.get("/api/v1/jobs"), 401, "unauthorized")
    anon.environ_base["HTTP_AUTHORIZATION"] = "Bearer gq_wrong"
    assert_error(anon.get("/api/v1/jobs"), 401)
    assert anon.get("/api/v1/health").status_code in (200, 503)
