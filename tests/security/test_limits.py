"""Size and count limits: the queued-jobs cap, the body cap (413) and the per-type upload caps."""

from __future__ import annotations

import io

import pytest

from shared.settings import get_settings

JOB = {"kind": "text.generate", "params": {"model": "gpt2", "prompts": ["hello"]}}


@pytest.fixture
def settings_for(monkeypatch):
    """Patch the settings one module sees: ``settings_for("web.services.jobs", max_queued_per_user=2)``."""

    def set_(module: str, **values):
        changed = get_settings().model_copy(update=values)
        monkeypatch.setattr(f"{module}.get_settings", lambda: changed)

    return set_


def test_queued_jobs_cap(client, user, settings_for):
    from tests.security.conftest import held_job

    settings_for("web.services.jobs", max_queued_per_user=2)
    first, _ = held_job(user.id), held_job(user.id)
    refused = client.post("/api/v1/jobs", json=JOB)
    assert refused.status_code == 429
    assert refused.get_json()["error"]["code"] == "too_many_queued"
    assert int(refused.headers["Retry-After"]) > 0
    assert client.post(f"/api/v1/jobs/{first}/retry").status_code == 429
    assert client.post(f"/api/v1/jobs/{first}/cancel").status_code == 202  # one fewer queued
    assert client.post("/api/v1/jobs", json=JOB).status_code == 201


def test_a_retried_request_gets_its_job_back_when_the_queue_is_full(client, user, settings_for):
    """The cap is counted by the statement that writes the job: a request whose Idempotency-Key already made a job
    gets that job (200), full queue or not; a new key is refused; nothing is written twice."""
    import hashlib

    from sqlalchemy import func, select, update

    from shared.db import session_scope
    from shared.models import Job
    from tests.security.conftest import held_job
    from web.services.admission import canonical

    settings_for("web.services.jobs", max_queued_per_user=1)
    made = held_job(user.id)  # as if made by an earlier POST of JOB with this key (held: no worker takes it)
    with session_scope() as s:
        digest = hashlib.sha256(canonical(JOB).encode()).hexdigest()
        s.execute(update(Job).where(Job.id == made).values(idempotency_key="cap-replay-1", request_hash=digest))
    again = client.post("/api/v1/jobs", json=JOB, headers={"Idempotency-Key": "cap-replay-1"})
    assert again.status_code == 200 and again.get_json()["id"] == made
    other = client.post("/api/v1/jobs", json=JOB, headers={"Idempotency-Key": "cap-replay-2"})
    assert other.status_code == 429 and other.get_json()["error"]["code"] == "too_many_queued"
    changed = client.post("/api/v1/jobs", json={**JOB, "priority": 5}, headers={"Idempotency-Key": "cap-replay-1"})
    assert changed.status_code == 422 and changed.get_json()["error"]["code"] == "idempotency_mismatch"
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(Job).where(Job.owner_id == user.id)) == 1


def test_a_retried_request_gets_its_job_back_after_its_model_is_gone(client, user, tiny_model):
    """Admission runs before the key is looked up (the write settles it); a retry refused by admission now (its model
    was removed) still gets the job its first request made, and a new request is refused."""
    from sqlalchemy import delete

    from shared.db import session_scope
    from shared.model_refs import _recent
    from shared.models import Model

    name = tiny_model.name
    body = {"kind": "text.generate", "params": {"model": name, "prompts": ["hello"], "max_new_tokens": 1}}
    key = {"Idempotency-Key": "model-gone-1"}
    made = client.post("/api/v1/jobs", json=body, headers=key)
    assert made.status_code == 201, made.get_json()
    with session_scope() as s:
        s.execute(delete(Model).where(Model.name == name))
    _recent.clear()  # this process found the model a moment ago (the web reuses a row for 2 s)
    again = client.post("/api/v1/jobs", json=body, headers=key)
    assert again.status_code == 200 and again.get_json()["id"] == made.get_json()["id"]
    fresh = client.post("/api/v1/jobs", json=body, headers={"Idempotency-Key": "model-gone-2"})
    assert fresh.status_code == 422 and "unknown model" in fresh.get_json()["error"]["message"]


def test_queued_cap_is_per_user(app, client, user, stack, settings_for):
    from tests.security.conftest import held_job

    settings_for("web.services.jobs", max_queued_per_user=1)
    held_job(user.id)
    assert client.post("/api/v1/jobs", json=JOB).status_code == 429
    bob = app.test_client()
    bob.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {stack.make_user('bob').token}"
    assert bob.post("/api/v1/jobs", json=JOB).status_code == 201


def test_json_body_over_the_cap_is_413(client, app):
    app.config["MAX_CONTENT_LENGTH"] = 4096
    resp = client.post("/api/v1/jobs", json={**JOB, "params": {"model": "gpt2", "prompts": ["x" * 8000]}})
    assert resp.status_code == 413
    err = resp.get_json()["error"]
    assert err["code"] == "too_large" and "4096" in err["message"]


def test_upload_caps_per_type(client, app, settings_for):
    app.config["MAX_CONTENT_LENGTH"] = 4096  # the JSON cap does not apply to uploads ...
    settings_for("web.services.datasets", max_text_upload_bytes=20_000, max_image_upload_bytes=30_000)
    settings_for("web.security", max_text_upload_bytes=20_000, max_image_upload_bytes=30_000)
    text = b"a line of training text\n" * 500  # 12 KB: over the JSON cap, under the text cap
    ok = client.post(
        "/api/v1/datasets", data={"file": (io.BytesIO(text), "ok.txt")}, content_type="multipart/form-data"
    )
    assert ok.status_code == 201, ok.get_json()
    big = client.post(
        "/api/v1/datasets", data={"file": (io.BytesIO(text * 2), "big.txt")}, content_type="multipart/form-data"
    )
    assert big.status_code == 413 and "text upload is over the limit of 20000" in big.get_json()["error"]["message"]
    huge = client.post(
        "/api/v1/datasets",
        data={"file": (io.BytesIO(b"x" * 2_000_000), "huge.zip")},
        content_type="multipart/form-data",
    )
    assert huge.status_code == 413  # past the largest upload cap: refused before the body is read
    assert [d["name"] for d in client.get("/api/v1/datasets").get_json()["items"]] == ["ok.txt"]


def test_nul_and_lone_surrogates_are_422_not_500(client):
    bad = [
        {**JOB, "params": {"model": "gpt2", "prompts": ["a\u0000b"]}},
        {**JOB, "params": {"model": "gpt2", "prompts": ["\ud800"]}},
        {**JOB, "params": {"model": "gpt2", "prompts": ["ok"], "\ud800": 1}},
    ]
    for body in bad:
        resp = client.post("/api/v1/jobs", data=_dumps(body), content_type="application/json")
        assert resp.status_code == 422, (body, resp.get_json())
    assert client.get("/api/v1/jobs", query_string={"q": "a\x00b"}).status_code == 422
    assert client.get("/api/v1/jobs/job_%00").status_code == 404
    assert client.post("/api/v1/jobs", json=JOB, headers={"Idempotency-Key": "k\x00"}).status_code == 422
    up = client.post(
        "/api/v1/datasets",
        data={"file": (io.BytesIO(b"x\n"), "a.txt"), "name": "n\x00"},
        content_type="multipart/form-data",
    )
    assert up.status_code == 422


def _dumps(body) -> str:
    import json

    return json.dumps(body)  # ensure_ascii escapes lone surrogates as \ud800, which the server decodes back


def test_deeply_nested_json_is_422_not_500(client):
    for depth in (40, 5_000, 200_000):
        body = (
            '{"kind":"text.generate","params":{"model":"gpt2","prompts":["a"],"x":' + "[" * depth + "]" * depth + "}}"
        )
        resp = client.post("/api/v1/jobs", data=body, content_type="application/json")
        assert resp.status_code == 422, (depth, resp.get_json())
        assert "nested deeper" in resp.get_json()["error"]["message"]
