"""Job metadata: stored and returned, kept by retry, searchable with ``?metadata.KEY=VALUE`` (AND-ed), validated."""

from __future__ import annotations

import pytest
from sqlalchemy import text

pytestmark = pytest.mark.usefixtures("held_queue")


def submit(client, metadata=None, **extra):
    body = {"kind": "text.generate", "params": {"model": "gpt2", "prompts": ["x"]}, **extra}
    if metadata is not None:
        body["metadata"] = metadata
    return client.post("/api/v1/jobs", json=body)


def ids(resp) -> set[str]:
    assert resp.status_code == 200, resp.get_json()
    return {j["id"] for j in resp.get_json()["items"]}


def test_metadata_is_returned_kept_by_retry_and_searchable(client):
    a = submit(client, {"campaign": "spring", "dataset": "v2"}).get_json()
    b = submit(client, {"campaign": "spring", "dataset": "v3"}).get_json()
    c = submit(client).get_json()
    assert a["metadata"] == {"campaign": "spring", "dataset": "v2"} and c["metadata"] == {}
    assert client.get(f"/api/v1/jobs/{a['id']}").get_json()["metadata"]["dataset"] == "v2"
    assert ids(client.get("/api/v1/jobs?metadata.campaign=spring")) == {a["id"], b["id"]}
    assert ids(client.get("/api/v1/jobs?metadata.campaign=spring&metadata.dataset=v3")) == {b["id"]}
    assert ids(client.get("/api/v1/jobs?metadata.campaign=autumn")) == set()
    assert ids(client.get("/api/v1/jobs?metadata.campaign=spring&status=queued&kind=text.generate")) >= {a["id"]}
    retried = client.post(f"/api/v1/jobs/{a['id']}/retry").get_json()
    assert retried["metadata"] == a["metadata"]
    assert retried["id"] in ids(client.get("/api/v1/jobs?metadata.dataset=v2"))


def test_another_users_jobs_do_not_match(client, app, stack):
    submit(client, {"team": "a"})
    bob = app.test_client()
    bob.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {stack.make_user('bob').token}"
    assert ids(bob.get("/api/v1/jobs?metadata.team=a")) == set()


def test_the_search_uses_the_gin_index(stack, client):
    submit(client, {"k": "v"})
    with stack.engine().connect() as c:
        c.execute(text("SET enable_seqscan = off"))
        plan = "\n".join(
            r[0] for r in c.execute(text("""EXPLAIN SELECT id FROM jobs WHERE metadata @> '{"k": "v"}'::jsonb"""))
        )
    assert "ix_jobs_metadata" in plan, plan


@pytest.mark.parametrize(
    "metadata",
    [
        {f"k{i}": "v" for i in range(17)},
        {"k" * 65: "v"},
        {"k": "v" * 513},
        {"k": 1},
        {"": "v"},
        {"a b": "v"},
        ["k", "v"],
        "k=v",
        {"k": None},
        {"k": {"nested": "x"}},
    ],
)
def test_bad_metadata_is_422(client, metadata):
    resp = submit(client, metadata)
    assert resp.status_code == 422, resp.get_json()
    assert resp.get_json()["error"]["code"] == "invalid_params"
    assert resp.get_json()["error"]["details"][0]["loc"][0] == "metadata"


def test_limits_are_inclusive(client):
    ok = {f"k{i:02d}" + "x" * 61: "v" * 512 for i in range(16)}
    assert submit(client, ok).status_code == 201


@pytest.mark.parametrize(
    "query", ["metadata.=x", "metadata.a%20b=x", f"metadata.{'k' * 65}=x", f"metadata.k={'v' * 513}", "metadata.k=%00"]
)
def test_bad_metadata_queries_are_422(client, query):
    resp = client.get(f"/api/v1/jobs?{query}")
    assert resp.status_code == 422, resp.get_json()
