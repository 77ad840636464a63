"""Webhooks end to end: a job transition → outbox row → Celery task in a real worker → a real HTTP receiver, signed
per Standard Webhooks (verified with the `standardwebhooks` reference library); retries, timeouts, the SSRF guard."""

from __future__ import annotations

import json
import time

import pytest
from standardwebhooks.webhooks import Webhook

from tests.receivers import Receiver
from tests.security.conftest import held_job

pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def hooked_job(user_id: str, url: str, events: list[str] | None = None) -> str:
    """A queued job (no worker claims it) with a webhook; cancelling it fires ``job.cancelled``."""
    from shared.db import session_scope
    from shared.models import Job

    job_id = held_job(user_id)
    with session_scope() as s:
        job = s.get(Job, job_id)
        job.webhook_url, job.webhook_events, job.meta = url, events, {"campaign": "c1"}
    return job_id


def wait_deliveries(client, job_id: str, done, timeout: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout
    items: list[dict] = []
    while time.monotonic() < deadline:
        items = client.get(f"/api/v1/jobs/{job_id}/webhooks").get_json()["items"]
        if items and done(items):
            return items
        time.sleep(0.2)
    raise AssertionError(f"deliveries of {job_id} after {timeout}s: {items}")


def test_a_cancelled_job_posts_a_signed_job_object(client, user, receiver):
    secret = client.get("/api/v1/webhooks/secret").get_json()["secret"]
    assert secret.startswith("whsec_")
    job_id = hooked_job(user.id, receiver.url)
    assert client.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 202
    (req,) = receiver.wait_for(1)
    assert req.path == "/hook?src=test"
    payload = Webhook(secret).verify(req.body, req.headers)  # raises on a bad signature or a stale timestamp
    assert payload["type"] == "job.cancelled"
    assert payload["data"]["id"] == job_id and payload["data"]["status"] == "cancelled"
    assert payload["data"]["metadata"] == {"campaign": "c1"}
    assert req.headers["webhook-id"].startswith("msg_")
    (d,) = wait_deliveries(client, job_id, lambda items: items[0]["status"] == "succeeded")
    assert d["id"] == req.headers["webhook-id"] and d["event"] == "job.cancelled"
    assert d["attempt_log"][0]["outcome"] == "success" and d["attempt_log"][0]["status_code"] == 204
    # A signature made with another secret does not verify: the check above could fail.
    other = client.post("/api/v1/webhooks/secret").get_json()["secret"]
    assert other != secret
    with pytest.raises(Exception, match="(?i)signature"):
        Webhook(other).verify(req.body, req.headers)


def test_a_receiver_answering_500_is_retried_on_the_schedule(client, user, worker):
    r = Receiver(mode="error").start()
    try:
        job_id = hooked_job(user.id, r.url)
        client.post(f"/api/v1/jobs/{job_id}/cancel")
        try:
            r.wait_for(2, timeout=30)  # the first retry is due 5 s after the first attempt
        except AssertionError:
            print(worker.log()[-6000:])
            raise
        (d,) = wait_deliveries(client, job_id, lambda items: items[0]["attempts"] >= 2)
        assert d["status"] == "pending" and d["next_attempt_at"] is not None
        assert [a["outcome"] for a in d["attempt_log"][:2]] == ["http_error", "http_error"]
        assert d["attempt_log"][0]["status_code"] == 500
        assert len({req.headers["webhook-id"] for req in r.requests}) == 1  # one message id across retries
        assert r.requests[0].body == r.requests[1].body
    finally:
        r.stop()


def test_a_hanging_receiver_times_out_without_holding_the_job(client, user):
    r = Receiver(mode="hang", hang_seconds=8).start()
    try:
        job_id = hooked_job(user.id, r.url)
        resp = client.post(f"/api/v1/jobs/{job_id}/cancel")
        assert resp.status_code == 202 and resp.get_json()["status"] == "cancelled"  # at once, not after the hook
        (d,) = wait_deliveries(client, job_id, lambda items: items[0]["attempts"] >= 1)
        a = d["attempt_log"][0]
        assert a["outcome"] == "timeout", a
        assert a["duration_ms"] < 6000  # GENQUEUE_WEBHOOK_TIMEOUT_SECONDS=2 in the test stack
    finally:
        r.stop()


def test_redirects_are_not_followed(client, user):
    r = Receiver(mode="redirect").start()
    try:
        job_id = hooked_job(user.id, r.url)
        client.post(f"/api/v1/jobs/{job_id}/cancel")
        (d,) = wait_deliveries(client, job_id, lambda items: items[0]["attempts"] >= 1)
        assert d["attempt_log"][0]["outcome"] == "http_error" and d["attempt_log"][0]["status_code"] == 302
        assert len(r.requests) == 1
    finally:
        r.stop()


def test_only_the_events_asked_for_are_sent(client, user, receiver):
    job_id = hooked_job(user.id, receiver.url, events=["succeeded"])
    client.post(f"/api/v1/jobs/{job_id}/cancel")
    time.sleep(2)
    assert receiver.requests == []
    assert client.get(f"/api/v1/jobs/{job_id}/webhooks").get_json()["items"] == []


def test_a_succeeded_generation_job_calls_back_with_running_and_succeeded(client, tiny_model, receiver):
    secret = client.get("/api/v1/webhooks/secret").get_json()["secret"]
    resp = client.post(
        "/api/v1/jobs",
        json={
            "kind": "text.generate",
            "params": {"model": tiny_model.name, "prompts": ["a"], "max_new_tokens": 3},
            "webhook_url": receiver.url,
            "webhook_events": ["running", "succeeded"],
        },
    )
    assert resp.status_code == 201, resp.get_json()
    reqs = receiver.wait_for(2, timeout=120)
    types = [Webhook(secret).verify(r.body, r.headers)["type"] for r in reqs]
    assert sorted(types) == ["job.running", "job.succeeded"]
    done = next(json.loads(r.body) for r in reqs if json.loads(r.body)["type"] == "job.succeeded")
    assert done["data"]["status"] == "succeeded" and done["data"]["finished_at"]


def test_a_default_webhook_url_applies_to_jobs_that_name_none(client, receiver):
    assert client.put("/api/v1/webhooks/settings", json={"default_url": receiver.url}).status_code == 200
    assert client.get("/api/v1/webhooks/settings").get_json() == {"default_url": receiver.url}
    job = client.post("/api/v1/jobs", json={"kind": "text.generate", "params": {"model": "gpt2", "prompts": ["x"]}})
    assert job.get_json()["webhook_url"] == receiver.url
    assert client.put("/api/v1/webhooks/settings", json={"default_url": None}).get_json() == {"default_url": None}


@pytest.mark.parametrize(
    "url",
    [
        "http://10.1.2.3/x",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:8080/",
        "ftp://example.com/",
        "http://192.168.0.1/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "file:///etc/passwd",
        "http://u:p@8.8.8.8/",
        "http://no-such-host.invalid/",
    ],
)
def test_private_or_bad_webhook_urls_are_422_at_submit(client, url):
    resp = client.post(
        "/api/v1/jobs",
        json={"kind": "text.generate", "params": {"model": "gpt2", "prompts": ["x"]}, "webhook_url": url},
    )
    assert resp.status_code == 422, resp.get_json()
    assert resp.get_json()["error"]["code"] == "invalid_webhook_url"
    assert client.put("/api/v1/webhooks/settings", json={"default_url": url}).status_code == 422


def test_bad_webhook_fields_are_422(client):
    base = {"kind": "text.generate", "params": {"model": "gpt2", "prompts": ["x"]}}
    for extra in (
        {"webhook_url": 5},
        {"webhook_url": "h" * 3000},
        {"webhook_events": ["done"]},
        {"webhook_events": []},
    ):
        resp = client.post("/api/v1/jobs", json={**base, **extra})
        assert resp.status_code == 422, (extra, resp.get_json())
    assert client.put("/api/v1/webhooks/settings", json={"default_url": 1}).status_code == 422
    assert client.put("/api/v1/webhooks/settings", data="nope").status_code == 422
