"""Item 6: PostgreSQL restarted in the middle of a job. The worker's writes wait the outage out (``ride_out``), the
job finishes once with no duplicate results, and the API answers 503 (not 500) while the database is down."""

from __future__ import annotations

import time

import pytest

from tests.faults.helpers import gen_params, job, progress, result_counts, running_events, submit, wait_for, wait_job

pytestmark = pytest.mark.faults


def test_postgres_restart_mid_job(fstack, workers, fclient, fmodel):
    n = 150
    workers.start("pg-restart")
    job_id = submit(fclient, "text.generate", gen_params(fmodel.name, n))["id"]
    wait_for(lambda: progress(fstack, job_id) >= 15, 90, "15 prompts done")

    fstack.pg.stop(mode="fast")  # ends every connection, as a crash or a failover does
    try:
        down = {
            "get": fclient.get(f"/api/v1/jobs/{job_id}"),
            "list": fclient.get("/api/v1/jobs"),
            "post": fclient.post("/api/v1/jobs", json={"kind": "text.generate", "params": gen_params(fmodel.name, 1)}),
            "health": fclient.get("/api/v1/health"),
        }
        time.sleep(1.5)
    finally:
        fstack.pg.start()
    for name, resp in down.items():
        assert resp.status_code == 503, (name, resp.status_code, resp.get_data(as_text=True)[:500])
    assert down["get"].get_json()["error"]["code"] == "unavailable"
    assert down["health"].get_json()["db"] != "ok"

    done = wait_job(fstack, job_id, ("succeeded", "failed"), timeout=120)
    assert done["status"] == "succeeded", done
    assert done["attempt"] == 1 and len(running_events(fstack, job_id)) == 1  # waited out, not restarted
    rows, distinct, _ = result_counts(fstack, job_id)
    assert rows == distinct == n
    assert fclient.get(f"/api/v1/jobs/{job_id}").status_code == 200
    assert job(fstack, job_id)["progress_done"] == n
