"""GET /jobs/{id}/metrics: every series by step; long ones downsampled to min/max per bucket, spikes kept."""

from __future__ import annotations

import math
import time

from sqlalchemy import text

from shared.db import get_engine
from tests.factories import finished_job, metric_points


def test_short_series_come_back_whole(client, user):
    job_id = finished_job(user.id)
    metric_points(job_id, 50)
    body = client.get(f"/api/v1/jobs/{job_id}/metrics").get_json()
    assert set(body["series"]) == {"train_loss", "lr"}
    loss = body["series"]["train_loss"]
    assert loss["steps"] == list(range(1, 51)) and loss["points"] == 50
    assert math.isclose(loss["values"][3], 5 / math.sqrt(4))


def test_100k_points_are_downsampled_and_the_spike_survives(client, user):
    job_id = finished_job(user.id)
    metric_points(job_id, 100_000, spike_at=54_321)
    started = time.monotonic()
    resp = client.get(f"/api/v1/jobs/{job_id}/metrics?points=1000")
    elapsed = time.monotonic() - started
    assert resp.status_code == 200
    loss = resp.get_json()["series"]["train_loss"]
    assert loss["points"] == 100_000
    assert 900 <= len(loss["steps"]) <= 1002  # two per bucket (min and max), plus the ends
    assert loss["steps"] == sorted(loss["steps"])
    assert loss["steps"][0] == 1 and loss["steps"][-1] == 100_000  # the ends
    spike = loss["steps"].index(54_321)
    assert loss["values"][spike] == 100.0  # a one-step spike is still there
    assert math.isclose(min(loss["values"]), 5 / math.sqrt(100_000))
    assert elapsed < 10, elapsed


def test_a_retried_step_keeps_the_newest_point(client, user):
    job_id = finished_job(user.id)
    metric_points(job_id, 10, attempt=1)
    with get_engine().begin() as conn:
        conn.execute(
            text(
                "INSERT INTO job_events (job_id, attempt, type, step, data) "
                "VALUES (:j, 2, 'metric', 5, '{\"train_loss\": 42.0}')"
            ),
            {"j": job_id},
        )
    loss = client.get(f"/api/v1/jobs/{job_id}/metrics").get_json()["series"]["train_loss"]
    assert loss["steps"] == list(range(1, 11)) and loss["values"][4] == 42.0


def test_bad_points_are_422_and_others_jobs_404(app, client, user, stack):
    job_id = finished_job(user.id)
    for bad in ("0", "abc", "99999999"):
        resp = client.get(f"/api/v1/jobs/{job_id}/metrics?points={bad}")
        assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "invalid_query"
    bob = app.test_client()
    bob.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {stack.make_user('bob').token}"
    assert bob.get(f"/api/v1/jobs/{job_id}/metrics").status_code == 404
