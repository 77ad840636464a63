"""``GET /metrics``: Prometheus text computed from Postgres at scrape time (parsed with prometheus-client's own
parser), guarded by an admin token or GENQUEUE_METRICS_TOKEN; HTTP requests counted by endpoint and status."""

from __future__ import annotations

import os

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from shared.settings import get_settings


def scrape(c, token: str) -> dict[str, dict]:
    resp = c.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.mimetype == "text/plain"
    out: dict[str, dict] = {}
    for family in text_string_to_metric_families(resp.get_data(as_text=True)):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def value(metrics: dict, name: str, **labels) -> float:
    return metrics.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


@pytest.fixture
def seeded(stack, user, held_queue):
    """Jobs in known states, with known timings, written straight to Postgres."""
    from tests.security.conftest import held_job

    queued = [held_job(user.id) for _ in range(3)]
    done = [held_job(user.id) for _ in range(2)]
    with stack.engine().begin() as c:
        c.execute(text("UPDATE jobs SET created_at = now() - interval '120 seconds' WHERE id = :id"), {"id": queued[0]})
        c.execute(
            text(
                "UPDATE jobs SET status = 'succeeded', created_at = now() - interval '100 seconds', "
                "started_at = now() - interval '90 seconds', finished_at = now() - interval '80 seconds', "
                "not_before = NULL WHERE id = ANY(:ids)"
            ),
            {"ids": done},
        )
        c.execute(
            text(
                "INSERT INTO generation_results (job_id, prompt_index, sequence, prompt, text, tokens, finish_reason, "
                "attempt) VALUES (:j, 0, 0, 'p', 't', 30, 'length', 1), (:j, 1, 0, 'p', 't', 12, 'length', 1)"
            ),
            {"j": done[0]},
        )
        c.execute(
            text(
                "INSERT INTO workers (id, queues, device, pid, last_seen, gpu_memory_bytes) VALUES "
                "('m1@a', 'gpu,cpu', 'cuda:0', 1, now(), 1048576), ('m2@b', 'cpu', 'cpu', 2, now(), NULL), "
                "('gone@c', 'cpu', 'cpu', 3, now() - interval '1 day', NULL)"
            )
        )
        real = c.execute(
            text(
                "SELECT count(*) FROM workers WHERE id NOT IN ('m1@a', 'm2@b', 'gone@c') AND device = 'cpu' "
                "AND queues LIKE '%cpu%' AND last_seen > now() - interval '8 seconds'"
            )
        ).scalar()
    return {"queued": queued, "done": done, "real_cpu_workers": real}


def test_job_queue_and_worker_metrics_come_from_postgres(app, admin, seeded):
    m = scrape(app.test_client(), admin.token)
    assert value(m, "genqueue_jobs", kind="text.generate", status="queued") == 3
    assert value(m, "genqueue_jobs", kind="text.generate", status="succeeded") == 2
    assert value(m, "genqueue_queue_depth", queue="gpu") == 3
    assert 115 <= value(m, "genqueue_queue_oldest_age_seconds", queue="gpu") < 300
    assert value(m, "genqueue_job_duration_seconds_count", kind="text.generate") == 2
    assert value(m, "genqueue_job_duration_seconds_bucket", kind="text.generate", le="5.0") == 0
    assert value(m, "genqueue_job_duration_seconds_bucket", kind="text.generate", le="15.0") == 2
    assert 19 < value(m, "genqueue_job_duration_seconds_sum", kind="text.generate") < 21
    assert value(m, "genqueue_job_queue_wait_seconds_bucket", kind="text.generate", le="15.0") == 2
    assert value(m, "genqueue_tokens_generated_total") == 42
    assert value(m, "genqueue_tokens_per_second") == pytest.approx(42 / 60)
    # The stale one is not counted; a session worker (a real one, if another test started it) is.
    assert value(m, "genqueue_workers_alive", queue="cpu", device="cpu") == 1 + seeded["real_cpu_workers"]
    assert value(m, "genqueue_workers_alive", queue="gpu", device="cuda:0") == 1
    assert value(m, "genqueue_gpu_memory_used_bytes", worker="m1@a", device="cuda:0") == 1048576


def test_http_requests_are_counted_by_endpoint_and_status(app, admin, client):
    before = scrape(app.test_client(), admin.token)
    client.get("/api/v1/jobs")
    client.get("/api/v1/jobs/nope")
    client.get("/no/such/path")
    after = scrape(app.test_client(), admin.token)

    def delta(**labels):
        return value(after, "genqueue_http_requests_total", **labels) - value(
            before, "genqueue_http_requests_total", **labels
        )

    assert delta(endpoint="api.list_jobs", method="GET", status="200") == 1
    assert delta(endpoint="api.get", method="GET", status="404") == 1
    assert delta(endpoint="unmatched", method="GET", status="404") == 1


def test_metrics_need_an_admin_or_the_metrics_token(app, user, admin):
    c = app.test_client()
    assert c.get("/metrics").status_code == 401
    assert c.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    resp = c.get("/metrics", headers={"Authorization": f"Bearer {user.token}"})
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "forbidden"
    os.environ["GENQUEUE_METRICS_TOKEN"] = "scrape-me-0123456789"
    get_settings.cache_clear()
    try:
        assert "genqueue_tokens_generated_total" in scrape(c, "scrape-me-0123456789")
        assert c.get("/metrics", headers={"Authorization": "Bearer scrape-me-wrong"}).status_code == 401
        assert scrape(c, admin.token) is not None
    finally:  # unset before anything reads the settings again
        del os.environ["GENQUEUE_METRICS_TOKEN"]
        get_settings.cache_clear()


def test_webhook_outcomes_are_counted(app, admin, user, stack, held_queue):
    from tests.security.conftest import held_job

    job_id = held_job(user.id)
    with stack.engine().begin() as c:
        c.execute(
            text(
                "INSERT INTO webhook_deliveries (id, job_id, owner_id, event, url, status, attempts) "
                "VALUES ('msg_t1', :j, :u, 'job.succeeded', 'http://x/', 'pending', 2)"
            ),
            {"j": job_id, "u": user.id},
        )
        c.execute(
            text(
                "INSERT INTO webhook_attempts (delivery_id, number, outcome, status_code, duration_ms) VALUES "
                "('msg_t1', 1, 'http_error', 500, 3), ('msg_t1', 2, 'timeout', NULL, 2000)"
            )
        )
    m = scrape(app.test_client(), admin.token)
    assert value(m, "genqueue_webhook_attempts_total", outcome="http_error") == 1
    assert value(m, "genqueue_webhook_attempts_total", outcome="timeout") == 1
    assert value(m, "genqueue_webhook_deliveries", status="pending") == 1


def test_http_counts_add_up_across_gunicorn_worker_processes(stack, tmp_path):
    """Real gunicorn with 3 worker processes (the command `genqueue web` runs): each request lands on some process,
    and a scrape on any of them reports the sum (prometheus-client multiprocess mode, set up by web/gunicorn_conf)."""
    import socket
    import subprocess
    import time

    import requests

    from shared.cli.up import web_command

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = stack.env(GENQUEUE_METRICS_TOKEN="scrape-token-0123456789", PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prom"))
    proc = subprocess.Popen(
        web_command("127.0.0.1", port, workers=3),
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                requests.get(f"{base}/api/v1/health", timeout=10)
                break
            except requests.RequestException:
                time.sleep(0.3)
        # New connections, several at a time, until at least two worker processes have served some: which process
        # accepts a connection is the kernel's choice, so a fixed count may all land on one (bounded: 600 requests).
        from concurrent.futures import ThreadPoolExecutor

        def hit(_: int) -> int:
            return requests.get(f"{base}/api/v1/openapi.json", headers={"Connection": "close"}, timeout=10).status_code

        sent = 0
        with ThreadPoolExecutor(6) as pool:
            while sent < 600:
                assert set(pool.map(hit, range(30))) == {200}
                sent += 30
                if len(list((tmp_path / "prom").glob("counter_*.db"))) >= 2:
                    break
        resp = requests.get(f"{base}/metrics", headers={"Authorization": "Bearer scrape-token-0123456789"}, timeout=5)
        assert resp.status_code == 200, resp.text
        samples = {
            tuple(sorted(s.labels.items())): s.value
            for f in text_string_to_metric_families(resp.text)
            for s in f.samples
            if s.name == "genqueue_http_requests_total"
        }
        key = tuple(sorted({"endpoint": "api.openapi", "method": "GET", "status": "200"}.items()))
        assert samples.get(key) == sent, samples
        pids = {p.name for p in (tmp_path / "prom").glob("counter_*.db")}
        assert len(pids) >= 2, pids  # the requests were served by more than one process, and still add up
    finally:
        import os
        import signal

        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
