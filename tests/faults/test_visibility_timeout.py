"""Item 11: a job that runs far longer than a deliberately short broker visibility timeout (3 s) runs exactly once.

Without renewal, kombu would put the unacknowledged message back in its queue after 3 s and the idle worker would
receive it (the claim would then drop it). With the heartbeat renewing the delivery, the message is never handed
out again: the idle worker never even sees the job."""

from __future__ import annotations

import pytest

from tests.faults.helpers import gen_params, job, result_counts, running_events, submit, wait_for, wait_job

pytestmark = pytest.mark.faults


def test_job_longer_than_the_visibility_timeout_runs_once(fstack, workers, fclient, fmodel):
    vt = "3"
    pair = [workers.start(name, wait=False, GENQUEUE_VISIBILITY_TIMEOUT=vt) for name in ("vt-a", "vt-b")]
    for w in pair:
        w.wait_ready()
    n = 1000  # about 20 s on two CPU cores
    job_id = submit(fclient, "text.generate", gen_params(fmodel.name, n))["id"]
    wait_for(lambda: job(fstack, job_id)["status"] == "running", 60, "the job to start")
    runner = next(w for w in pair if w.hostname == job(fstack, job_id)["worker"])
    idle = next(w for w in pair if w is not runner)

    done = wait_job(fstack, job_id, ("succeeded", "failed"), timeout=180)
    assert done["status"] == "succeeded", done
    took = (done["finished_at"] - done["started_at"]).total_seconds()
    assert took > 4 * int(vt), took  # long enough for several visibility timeouts to pass
    assert done["attempt"] == 1 and len(running_events(fstack, job_id)) == 1
    rows, distinct, _ = result_counts(fstack, job_id)
    assert rows == distinct == n
    received = [w.log().count("Task genqueue.text.generate[") for w in (runner, idle)]
    assert received == [2, 0], received  # "received" + "succeeded" on the runner; never delivered to the idle one
    assert job_id not in idle.log()
