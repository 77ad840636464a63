"""The per-user submission rate limit: counted in Redis, so two web processes share one budget; 429 + Retry-After
past it; it fails open (submissions still succeed) when Redis cannot be reached.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from shared.settings import get_settings
from web import ratelimit

ROOT = Path(__file__).resolve().parents[2]
JOB = {"kind": "text.generate", "params": {"model": "gpt2", "prompts": ["hello"]}}


@pytest.fixture
def limits(monkeypatch):
    """Set the limits the web code sees in this process: ``limits(rate_limit_per_minute=3, ...)``."""
    ratelimit.reset_breaker()

    def set_(**values):
        changed = get_settings().model_copy(update=values)
        monkeypatch.setattr("web.services.limits.get_settings", lambda: changed)

    yield set_
    ratelimit.reset_breaker()


def wait_for_fresh_window(needed: float = 15.0) -> None:
    """Start a burst early in a one-minute window, so that all of it is counted in the same window."""
    left = ratelimit.WINDOW_SECONDS - time.time() % ratelimit.WINDOW_SECONDS
    if left < needed:
        time.sleep(left + 0.05)


def test_burst_beyond_the_limit_is_429_with_retry_after(app, client, user, stack, limits):
    limits(rate_limit_per_minute=3)
    wait_for_fresh_window()
    assert [client.post("/api/v1/jobs", json=JOB).status_code for _ in range(3)] == [201, 201, 201]
    refused = client.post("/api/v1/jobs", json=JOB)
    assert refused.status_code == 429
    assert refused.get_json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    job_id = client.get("/api/v1/jobs").get_json()["items"][0]["id"]
    assert client.post(f"/api/v1/jobs/{job_id}/retry").status_code == 429  # retries are submissions too
    upload = client.post(
        "/api/v1/datasets", data={"file": (io.BytesIO(b"text\n"), "t.txt")}, content_type="multipart/form-data"
    )
    assert upload.status_code == 429
    assert client.get("/api/v1/jobs").status_code == 200  # reads are not limited
    assert len(client.get("/api/v1/jobs").get_json()["items"]) == 3
    # The budget is per user, and its counter is a Redis key that expires on its own.
    bob = app.test_client()
    bob.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {stack.make_user('bob').token}"
    assert bob.post("/api/v1/jobs", json=JOB).status_code == 201
    import redis

    keys = redis.Redis.from_url(stack.redis.url).keys(f"genqueue:rl:{user.id}:*")
    assert len(keys) == 1 and 0 < redis.Redis.from_url(stack.redis.url).ttl(keys[0]) <= 120


def test_the_limit_fails_open_when_redis_is_down(client, limits, monkeypatch):
    from shared.embedded import free_port

    limits(rate_limit_per_minute=1)
    monkeypatch.setattr(ratelimit, "_redis_url", lambda: f"redis://127.0.0.1:{free_port()}/0")
    t0 = time.monotonic()
    assert [client.post("/api/v1/jobs", json=JOB).status_code for _ in range(3)] == [201, 201, 201]
    assert time.monotonic() - t0 < 5


def test_zero_turns_the_limit_off(client, limits):
    limits(rate_limit_per_minute=0)
    assert ratelimit.hit("usr_x", 0) is None
    assert all(client.post("/api/v1/jobs", json=JOB).status_code == 201 for _ in range(3))


# -- two real web processes sharing the same Redis ------------------------------------------------------------------


def start_web(stack, port: int, log: Path, **env: str) -> subprocess.Popen:
    from shared.cli.up import web_command

    out = open(log, "ab")
    proc = subprocess.Popen(
        web_command("127.0.0.1", port, workers=1),
        env=stack.env(**env),
        cwd=ROOT,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"web exited early:\n{log.read_text()[-3000:]}")
        try:
            requests.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=10)
            return proc
        except requests.RequestException:
            time.sleep(0.2)
    raise TimeoutError(f"web on {port} not up:\n{log.read_text()[-3000:]}")


def stop_web(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow
def test_two_web_processes_share_one_budget(stack, user, tmp_path):
    from shared.embedded import free_port

    limit = 10
    procs = []
    try:
        ports = []
        for i in range(2):
            ports.append(free_port())
            procs.append(
                start_web(stack, ports[-1], tmp_path / f"web{i}.log", GENQUEUE_RATE_LIMIT_PER_MINUTE=str(limit))
            )
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {user.token}"
        wait_for_fresh_window()
        codes, retry_after = {p: [] for p in ports}, []
        for i in range(16):  # alternate between the processes: 8 each, 16 in all
            port = ports[i % 2]
            resp = http.post(f"http://127.0.0.1:{port}/api/v1/jobs", json=JOB, timeout=30)
            codes[port].append(resp.status_code)
            if resp.status_code == 429:
                assert resp.json()["error"]["code"] == "rate_limited"
                retry_after.append(int(resp.headers["Retry-After"]))
        all_codes = [c for port in ports for c in codes[port]]
        # Each process alone allowed fewer than the limit (8 < 10), so only a shared counter refuses anything.
        assert all_codes.count(201) == limit, codes
        assert all_codes.count(429) == 16 - limit, codes
        assert all(429 in codes[p] for p in ports), codes
        assert all(1 <= r <= 60 for r in retry_after)
        assert http.get(f"http://127.0.0.1:{ports[0]}/api/v1/jobs?limit=200").json()["items"].__len__() == limit
    finally:
        for proc in procs:
            stop_web(proc)


def test_the_dashboard_submit_form_shares_the_budget(app, client, user, limits):
    from tests.unit.test_templates import login

    limits(rate_limit_per_minute=2)
    wait_for_fresh_window()
    assert client.post("/api/v1/jobs", json=JOB).status_code == 201
    browser, csrf = login(app, user.token)
    form = {"csrf_token": csrf, "kind": "text.generate", "model": "gpt2", "prompts": "hi"}
    assert browser.post("/submit", data=form).status_code == 303
    refused = browser.post("/submit", data=form)
    assert refused.status_code == 429
    assert "too many submissions" in refused.get_data(as_text=True)
