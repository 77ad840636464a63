"""The dashboard: the jobs list filters by metadata; the job page shows the job's metadata and webhook deliveries."""

from __future__ import annotations

import re

import pytest

from tests.unit.test_templates import login

pytestmark = pytest.mark.usefixtures("held_queue")


def submit(client, metadata: dict) -> str:
    resp = client.post(
        "/api/v1/jobs",
        json={"kind": "text.generate", "params": {"model": "gpt2", "prompts": ["x"]}, "metadata": metadata},
    )
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()["id"]


def test_jobs_list_filters_by_metadata(app, user, client):
    spring, autumn = submit(client, {"campaign": "spring", "v": "2"}), submit(client, {"campaign": "autumn"})
    browser, _ = login(app, user.token)
    page = browser.get("/?meta=campaign%3Dspring").get_data(as_text=True)
    assert spring in page and autumn not in page
    page = browser.get("/?meta=campaign%3Dspring,+v%3D3").get_data(as_text=True)
    assert spring not in page and "No jobs match these filters" in page
    assert autumn in browser.get("/").get_data(as_text=True)


def test_job_page_shows_metadata_and_webhook_deliveries(app, user, client, stack):
    from sqlalchemy import text

    job_id = submit(client, {"campaign": "<b>spring</b>"})
    with stack.engine().begin() as c:
        c.execute(text("UPDATE jobs SET webhook_url = 'http://127.0.0.1:9/hook' WHERE id = :j"), {"j": job_id})
        c.execute(
            text(
                "INSERT INTO webhook_deliveries (id, job_id, owner_id, event, url, status, attempts) "
                "VALUES ('msg_page', :j, :u, 'job.succeeded', 'http://127.0.0.1:9/hook', 'failed', 1)"
            ),
            {"j": job_id, "u": user.id},
        )
        c.execute(
            text(
                "INSERT INTO webhook_attempts (delivery_id, number, outcome, status_code, duration_ms, error) "
                "VALUES ('msg_page', 1, 'http_error', 500, 12, 'HTTP 500: nope')"
            )
        )
    browser, _ = login(app, user.token)
    page = browser.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert "&lt;b&gt;spring&lt;/b&gt;" in page and "<b>spring</b>" not in page  # escaped
    assert "job.succeeded" in page and "HTTP 500: nope" in page and "http://127.0.0.1:9/hook" in page


def test_submit_form_takes_metadata_and_clone_keeps_it(app, user, client):
    browser, csrf = login(app, user.token)
    resp = browser.post(
        "/submit",
        data={
            "csrf_token": csrf,
            "kind": "text.generate",
            "model": "gpt2",
            "prompts": "a",
            "metadata": "campaign=spring\n\nnote = x=y\n",
        },
    )
    assert resp.status_code == 303, resp.get_data(as_text=True)[:2000]
    job_id = resp.headers["Location"].rsplit("/", 1)[-1]
    assert client.get(f"/api/v1/jobs/{job_id}").get_json()["metadata"] == {"campaign": "spring", "note": "x=y"}
    clone = browser.get(f"/submit?clone={job_id}").get_data(as_text=True)
    shown = re.search(r'<textarea id="f-metadata"[^>]*>([^<]*)</textarea>', clone).group(1)
    assert sorted(shown.split("\n")) == ["campaign=spring", "note=x=y"]  # JSONB keeps its own key order
    bad = browser.post(
        "/submit",
        data={
            "csrf_token": csrf,
            "kind": "text.generate",
            "model": "gpt2",
            "prompts": "a",
            "metadata": "no equals sign",
        },
    )
    assert bad.status_code == 422
