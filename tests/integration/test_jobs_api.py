"""The job API without a worker: create, list (filters, search, cursor), get, retry, openapi."""

from __future__ import annotations

import pytest

from shared.kinds import PARAMS_BY_KIND

pytestmark = pytest.mark.usefixtures("held_queue")  # the jobs here must stay queued


def submit(client, model: str, prompts: list[str], **extra) -> dict:
    resp = client.post(
        "/api/v1/jobs", json={"kind": "text.generate", "params": {"model": model, "prompts": prompts, **extra}}
    )
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()


def test_created_job_has_the_contract_fields(client, tiny_model):
    job = submit(client, tiny_model.name, ["a", "b"])
    for key in (
        "id",
        "kind",
        "status",
        "params",
        "priority",
        "attempt",
        "progress",
        "error",
        "created_at",
        "started_at",
        "finished_at",
        "model_id",
    ):
        assert key in job
    assert job["status"] == "queued" and job["attempt"] == 1 and job["progress"]["total"] == 2
    assert job["created_at"].endswith("Z")
    assert client.get(f"/api/v1/jobs/{job['id']}").get_json()["id"] == job["id"]


def test_list_newest_first_with_filters_search_and_cursor(client, tiny_model):
    ids = [submit(client, tiny_model.name, [f"prompt about topic{i}"])["id"] for i in range(5)]
    page1 = client.get("/api/v1/jobs?limit=2").get_json()
    assert [j["id"] for j in page1["items"]] == ids[::-1][:2]
    page2 = client.get(f"/api/v1/jobs?limit=2&cursor={page1['next_cursor']}").get_json()
    assert [j["id"] for j in page2["items"]] == ids[::-1][2:4]
    page3 = client.get(f"/api/v1/jobs?limit=2&cursor={page2['next_cursor']}").get_json()
    assert [j["id"] for j in page3["items"]] == ids[:1] and page3["next_cursor"] is None
    found = client.get("/api/v1/jobs?q=topic3").get_json()["items"]
    assert [j["id"] for j in found] == [ids[3]]
    assert client.get("/api/v1/jobs?q=50%25_off").get_json()["items"] == []
    assert len(client.get("/api/v1/jobs?status=queued&kind=text.generate").get_json()["items"]) == 5
    assert client.get("/api/v1/jobs?kind=text.train").get_json()["items"] == []
    bad = client.get("/api/v1/jobs?status=queued,finished")
    assert bad.status_code == 422 and bad.get_json()["error"]["code"] == "invalid_query"


def test_retry_creates_a_new_job_with_the_same_params(client, tiny_model):
    job = submit(client, tiny_model.name, ["x"], seed=7)
    resp = client.post(f"/api/v1/jobs/{job['id']}/retry")
    assert resp.status_code == 201
    new = resp.get_json()
    assert new["id"] != job["id"] and new["params"] == job["params"] and new["retry_of"] == job["id"]


def test_users_do_not_see_each_others_jobs(app, client, tiny_model, stack):
    job = submit(client, tiny_model.name, ["mine"])
    bob = stack.make_user("bob")
    other = app.test_client()
    other.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {bob.token}"
    assert other.get(f"/api/v1/jobs/{job['id']}").status_code == 404
    assert other.get("/api/v1/jobs").get_json()["items"] == []


def test_openapi_document_uses_the_params_schemas(client):
    doc = client.get("/api/v1/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    schemas = doc["components"]["schemas"]
    for model in PARAMS_BY_KIND.values():
        assert (
            schemas[model.__name__]["properties"]
            == model.model_json_schema(ref_template="#/components/schemas/{model}")["properties"]
        )
    assert "/jobs/{job_id}/cancel" in doc["paths"]


def test_models_list_has_builtin_and_registered(client, tiny_model):
    items = client.get("/api/v1/models").get_json()["items"]
    names = {m["name"]: m for m in items}
    assert "gpt2" in names and names["gpt2"]["source"] == "hub"
    assert names[tiny_model.name]["source"] == "registered"
    assert names[tiny_model.name]["config"]["context_length"] == 128
    assert client.get(f"/api/v1/models/{tiny_model.id}").get_json()["name"] == tiny_model.name
    assert client.get("/api/v1/models/mdl_nope").status_code == 404
