"""The authorization matrix: every API endpoint refuses anonymous callers (401) and revoked tokens (403); another
user's job, events, metrics, results, artifacts, cancel, retry, delete, dataset (get, delete) and model (get,
download) are 404 (not 403: existence is not leaked) and change nothing; an admin may do all of it; built-in models
are visible to everyone.
"""

from __future__ import annotations

import io
import re

from sqlalchemy import func, select

from shared.db import session_scope
from shared.models import Job, Model

PUBLIC_PATHS = {"/health", "/openapi.json"}


def client_for(app, token: str | None):
    c = app.test_client()
    if token:
        c.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return c


def documented_operations(app) -> list[tuple[str, str]]:
    """(method, path template) for every operation the OpenAPI document lists."""
    doc = app.test_client().get("/api/v1/openapi.json").get_json()
    return [(m.upper(), p) for p, ops in doc["paths"].items() for m in ops if m in ("get", "post", "put", "delete")]


def fill(template: str, world: dict) -> str:
    return "/api/v1" + re.sub(r"\{(\w+)\}", lambda m: world[m.group(1)], template)


def call(c, method: str, path: str):
    if method == "POST" and path.endswith("/jobs"):
        return c.post(path, json={"kind": "text.generate", "params": {"model": "gpt2", "prompts": ["x"]}})
    if method == "POST" and path.endswith("/datasets"):
        return c.post(path, data={"file": (io.BytesIO(b"x\n"), "x.txt")}, content_type="multipart/form-data")
    return c.open(path, method=method)


def job_count() -> int:
    with session_scope() as s:
        return s.scalar(select(func.count()).select_from(Job))


def test_every_endpoint_needs_a_token(app, world):
    ops = documented_operations(app)
    assert len(ops) >= 15, ops
    for token in (None, "gq_not-a-real-token"):
        anon = client_for(app, token)
        for method, template in ops:
            resp = call(anon, method, fill(template, world))
            if template in PUBLIC_PATHS:
                assert resp.status_code in (200, 503), (method, template)
                continue
            assert resp.status_code == 401, (token, method, template, resp.status_code)
            assert resp.get_json()["error"]["code"] == "unauthorized"
            assert resp.headers["WWW-Authenticate"] == "Bearer"
    assert client_for(app, None).get("/api/v1/jobs", headers={"Authorization": "Basic YTpi"}).status_code == 401


def test_a_revoked_token_is_403_everywhere(app, world, stack):
    from shared.users import revoke_token

    carol = stack.make_user("carol")
    with session_scope() as s:
        assert revoke_token(s, carol.token) == 1
    c = client_for(app, carol.token)
    for method, template in documented_operations(app):
        if template in PUBLIC_PATHS:
            continue
        resp = call(c, method, fill(template, world))
        assert resp.status_code == 403, (method, template, resp.status_code)
        assert resp.get_json()["error"]["code"] == "token_revoked"


OTHERS = [
    ("GET", "/jobs/{job_id}"),
    ("GET", "/jobs/{job_id}/events"),
    ("GET", "/jobs/{job_id}/results"),
    ("GET", "/jobs/{job_id}/results?format=csv"),
    ("GET", "/jobs/{job_id}/artifacts"),
    ("GET", "/jobs/{job_id}/webhooks"),
    ("GET", "/jobs/{job_id}/artifacts?role=output"),
    ("GET", "/jobs/{job_id}/metrics"),
    ("GET", "/artifacts/{artifact_id}"),
    ("POST", "/jobs/{job_id}/cancel"),
    ("POST", "/jobs/{job_id}/retry"),
    ("GET", "/datasets/{dataset_id}"),
    ("GET", "/models/{model_id}"),
    ("GET", "/models/{model_id}/download"),
    ("DELETE", "/jobs/{job_id}"),
    ("DELETE", "/jobs/{job_id}?with_model=true"),
    ("DELETE", "/datasets/{dataset_id}"),
]


def test_another_users_objects_are_404(app, world, stack):
    bob = client_for(app, stack.make_user("bob").token)
    before = job_count()
    for method, template in OTHERS:
        resp = bob.open(fill(template, world), method=method)
        assert resp.status_code == 404, (method, template, resp.status_code)
        body = resp.get_data(as_text=True)
        assert resp.get_json()["error"]["code"] == "not_found"
        assert "secret" not in body and "alice" not in body
    assert job_count() == before  # bob's retry created nothing, his deletes removed nothing
    assert alice_job_status(world) == "queued"  # and his cancel changed nothing
    assert alice_has_dataset_and_model(world)
    # Looking the model up by name is no different from by id.
    assert bob.get(f"/api/v1/models/{world['model_name']}").status_code == 404


def alice_job_status(world) -> str:
    with session_scope() as s:
        return s.get(Job, world["job_id"]).status


def alice_has_dataset_and_model(world) -> bool:
    from shared.models import Dataset

    with session_scope() as s:
        return s.get(Dataset, world["dataset_id"]) is not None and s.get(Model, world["model_id"]) is not None


def test_another_users_models_are_not_listed_by_kind(app, world, stack):
    bob = client_for(app, stack.make_user("bob").token)
    models = bob.get("/api/v1/models?kind=causal-lm").get_json()["items"]
    assert models and world["model_id"] not in {m["id"] for m in models}
    assert bob.get("/api/v1/datasets?kind=text").get_json()["items"] == []
    for path in ("/api/v1/models?kind=bogus", "/api/v1/datasets?kind=bogus"):
        assert bob.get(path).status_code == 422 and bob.get(path).get_json()["error"]["code"] == "invalid_query"


def test_lists_are_scoped_to_the_owner(app, world, stack):
    bob = client_for(app, stack.make_user("bob").token)
    assert bob.get("/api/v1/jobs").get_json()["items"] == []
    assert bob.get(f"/api/v1/jobs?q={world['job_id']}").get_json()["items"] == []
    assert bob.get("/api/v1/datasets").get_json()["items"] == []
    models = bob.get("/api/v1/models").get_json()["items"]
    assert world["model_id"] not in {m["id"] for m in models}
    assert {"gpt2"} <= {m["name"] for m in models}  # built-ins are everyone's
    system = bob.get("/api/v1/system").get_json()
    assert all(w["current_job_id"] is None for w in system["workers"])


def test_another_users_model_and_dataset_cannot_be_used(app, world, stack):
    bob = client_for(app, stack.make_user("bob").token)
    gen = bob.post(
        "/api/v1/jobs", json={"kind": "text.generate", "params": {"model": world["model_name"], "prompts": ["hi"]}}
    )
    assert gen.status_code == 422 and "unknown model" in gen.get_json()["error"]["message"]
    gen = bob.post(
        "/api/v1/jobs", json={"kind": "text.generate", "params": {"model": "gpt2", "dataset_id": world["dataset_id"]}}
    )
    assert gen.status_code == 422 and "unknown dataset" in gen.get_json()["error"]["message"]
    train = bob.post("/api/v1/jobs", json={"kind": "text.train", "params": {"dataset_id": world["dataset_id"]}})
    assert train.status_code == 422


def test_builtin_models_are_visible_to_everyone(app, world, stack):
    bob = client_for(app, stack.make_user("bob").token)
    with session_scope() as s:
        builtin = s.scalars(select(Model).where(Model.owner_id.is_(None), Model.name == "gpt2")).one()
    assert bob.get(f"/api/v1/models/{builtin.id}").status_code == 200
    assert bob.get("/api/v1/models/gpt2").status_code == 200
    ok = bob.post("/api/v1/jobs", json={"kind": "text.generate", "params": {"model": "gpt2", "prompts": ["hi"]}})
    assert ok.status_code == 201


def test_admin_may_see_and_act_on_everything(app, world, admin):
    root = client_for(app, admin.token)
    expect = {"GET": 200}
    for method, template in OTHERS:
        if method != "GET":
            continue
        resp = root.open(fill(template, world), method=method)
        assert resp.status_code == expect[method], (template, resp.status_code)
    assert root.get(fill("/jobs/{job_id}/results?format=json", world)).get_json()["items"][0]["text"] == "secret text"
    assert root.get(fill("/artifacts/{artifact_id}", world)).get_data() == b"alice's artifact"
    assert world["job_id"] in {j["id"] for j in root.get("/api/v1/jobs").get_json()["items"]}
    assert world["dataset_id"] in {d["id"] for d in root.get("/api/v1/datasets").get_json()["items"]}
    assert world["model_id"] in {m["id"] for m in root.get("/api/v1/models").get_json()["items"]}
    retried = root.post(fill("/jobs/{job_id}/retry", world))
    assert retried.status_code == 201 and retried.get_json()["retry_of"] == world["job_id"]
    assert root.delete(fill("/jobs/{job_id}", world)).status_code == 409  # seen, but still queued
    assert root.post(fill("/jobs/{job_id}/cancel", world)).status_code == 202
    assert alice_job_status(world) == "cancelled"
    assert root.delete(fill("/datasets/{dataset_id}", world)).status_code == 200
    assert root.delete(fill("/jobs/{job_id}", world)).status_code == 200


def test_owner_may_do_everything_with_their_own(client, world):
    for method, template in OTHERS:
        if method == "GET":
            assert client.get(fill(template, world)).status_code == 200, template
    assert client.post(fill("/jobs/{job_id}/retry", world)).status_code == 201
    assert client.delete(fill("/jobs/{job_id}", world)).status_code == 409  # queued: cancel first
    assert client.post(fill("/jobs/{job_id}/cancel", world)).status_code == 202
    assert client.delete(fill("/jobs/{job_id}", world)).status_code == 200
    assert client.delete(fill("/datasets/{dataset_id}", world)).status_code == 200


def test_webhook_secrets_and_settings_are_per_user(app, world, user, stack):
    alice, bob = client_for(app, user.token), client_for(app, stack.make_user("bob").token)
    a, b = alice.get("/api/v1/webhooks/secret").get_json()["secret"], bob.get("/api/v1/webhooks/secret").get_json()
    assert a != b["secret"]
    assert bob.post("/api/v1/webhooks/secret").get_json()["secret"] not in (a, b["secret"])
    assert alice.get("/api/v1/webhooks/secret").get_json()["secret"] == a  # bob's rotation left alice's alone
    assert bob.put("/api/v1/webhooks/settings", json={"default_url": "http://127.0.0.1:9/b"}).status_code == 200
    assert alice.get("/api/v1/webhooks/settings").get_json() == {"default_url": None}


def test_metrics_are_for_admins_only(app, world, user, admin):
    assert client_for(app, user.token).get("/metrics").status_code == 403
    assert client_for(app, None).get("/metrics").status_code == 401
    assert client_for(app, admin.token).get("/metrics").status_code == 200
