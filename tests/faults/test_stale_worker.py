"""Item 3: a worker frozen (SIGSTOP) past its lease. Its job is rescued and finished by another worker; when the
frozen worker wakes up (SIGCONT) every write it tries is fenced off by the job's attempt number."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.faults.helpers import (
    events,
    gen_params,
    job,
    result_counts,
    results_snapshot,
    submit,
    wait_for,
    wait_job,
)

pytestmark = pytest.mark.faults


def test_frozen_worker_is_fenced_off_after_its_job_is_rescued(fstack, workers, fclient, fmodel):
    n = 150
    a = workers.start("stale-a")
    submitted = submit(fclient, "text.generate", gen_params(fmodel.name, n))
    job_id = submitted["id"]
    wait_for(lambda: job(fstack, job_id)["status"] == "running", 60, "the job to start on the first worker")
    b = workers.start("stale-b", wait=False)
    # 15 results stored (progress is written with them, but results are flushed in chunks, so wait on the rows)
    wait_for(lambda: result_counts(fstack, job_id)[0] >= 15, 90, "15 prompts stored by the first worker")
    os.killpg(a.proc.pid, signal.SIGSTOP)  # main process and pool: no heartbeat, no delivery renewal
    b.wait_ready()

    done = wait_job(fstack, job_id, ("succeeded", "failed"), timeout=120)
    assert done["status"] == "succeeded" and done["attempt"] == 2, done
    assert done["worker"] == b.hostname
    snapshot = results_snapshot(fstack, job_id)
    stale_events = len([e for e in events(fstack, job_id) if e["attempt"] == 1])
    frozen_rows = sum(1 for r in snapshot if r[2] == 1)
    assert len(snapshot) == n and frozen_rows >= 15  # what attempt 1 stored before freezing is kept

    os.killpg(a.proc.pid, signal.SIGCONT)
    # The woken attempt tries to store its next chunk and report progress; its task ends "fenced".
    wait_for(lambda: "'fenced'" in a.log(), 60, "the woken worker to give up its stale attempt")
    time.sleep(1.5)  # one more heartbeat of the woken worker, had it survived
    assert results_snapshot(fstack, job_id) == snapshot  # nothing overwritten, nothing added
    assert len([e for e in events(fstack, job_id) if e["attempt"] == 1]) == stale_events
    after = job(fstack, job_id)
    assert (after["status"], after["attempt"], after["finished_at"], after["progress_done"]) == (
        "succeeded",
        2,
        done["finished_at"],
        n,
    )
    rows, distinct, _ = result_counts(fstack, job_id)
    assert rows == distinct == n
    assert "no longer owns the job" in a.log()
