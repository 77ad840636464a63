"""Items 7 and 8: a job that kills its worker process every time ("poison") fails after ``max_attempts`` while other
jobs flow; a job that hangs without reporting is failed with ``timeout`` and its process ended, freeing the worker.

Both use the test hooks of ``worker/testhooks.py`` (a ``_test_hook`` param, acted on only by workers started with
``GENQUEUE_TEST_HOOKS=1``); the jobs are inserted into Postgres directly since the API refuses that param."""

from __future__ import annotations

import pytest

from tests.faults.helpers import insert_job, job, running_events, submit, wait_job

pytestmark = pytest.mark.faults


def test_poison_job_fails_after_max_attempts_and_other_jobs_flow(fstack, workers, fclient, fuser, fmodel):
    w = workers.start("poison")
    main_pid = w.proc.pid
    params = {"model": fmodel.name, "prompts": ["p"], "max_new_tokens": 4}
    poison = insert_job(fstack, fuser.id, "text.generate", {**params, "_test_hook": "crash"}, max_attempts=3)
    others = [submit(fclient, "text.generate", params)["id"] for _ in range(4)]

    failed = wait_job(fstack, poison, ("succeeded", "failed", "cancelled"), timeout=120)
    assert failed["status"] == "failed" and failed["error"]["code"] == "worker_lost", failed
    assert failed["attempt"] == 3 and len(running_events(fstack, poison)) == 3  # each attempt visible, then no more
    for job_id in others:
        other = wait_job(fstack, job_id, ("succeeded", "failed"), timeout=60)
        assert other["status"] == "succeeded", other
        assert other["finished_at"] < failed["finished_at"]  # they ran while the poison job was being retried
    assert w.proc.poll() is None and w.proc.pid == main_pid  # the worker survived its pool process dying 3 times
    assert w.log().count("Worker exited prematurely: signal 9 (SIGKILL)") >= 3


def test_hung_job_is_failed_at_its_timeout_and_the_worker_moves_on(fstack, workers, fclient, fuser, fmodel):
    w = workers.start("hung")
    params = {"model": fmodel.name, "prompts": ["p"], "max_new_tokens": 4}
    timeout = 3
    hung = insert_job(fstack, fuser.id, "text.generate", {**params, "_test_hook": "hang"}, timeout_seconds=timeout)
    failed = wait_job(fstack, hung, ("succeeded", "failed"), timeout=60)
    assert failed["status"] == "failed" and failed["error"]["code"] == "timeout", failed
    took = (failed["finished_at"] - failed["started_at"]).total_seconds()
    assert timeout <= took <= timeout + 10, took  # past its timeout, plus the watchdog's grace and one heartbeat

    nxt = submit(fclient, "text.generate", params)["id"]
    assert wait_job(fstack, nxt, ("succeeded", "failed"), timeout=60)["status"] == "succeeded"
    assert "exitcode 75" in w.log()  # the hung pool process was ended (HUNG_EXIT_CODE) and replaced
    assert job(fstack, hung)["attempt"] == 1 and len(running_events(fstack, hung)) == 1
