"""Faults during cross-job batching: several jobs share one worker's batch when the worker is SIGKILLed or frozen
past its lease. Every job of the batch is rescued on its own, each prompt's result is stored exactly once, and a
woken stale worker writes nothing for any of them."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.faults.helpers import events, gen_params, job, result_counts, results_snapshot, submit, wait_for, wait_job

pytestmark = pytest.mark.faults


def start_batch(fstack, fclient, model: str, worker) -> tuple[str, dict[str, int]]:
    """A long job on ``worker`` (one row in flight), then small jobs that join its batch; returns (first, sizes)."""
    first = submit(fclient, "text.generate", gen_params(model, 60))["id"]
    wait_for(lambda: job(fstack, first)["status"] == "running", 60, "the first job to start")
    sizes = {first: 60}
    for k in range(4):
        params = gen_params(model, 3 + k)
        params["prompts"] = [f"joined job {k} prompt {i}" for i in range(3 + k)]
        sizes[submit(fclient, "text.generate", params)["id"]] = 3 + k

    def joined() -> bool:
        return all(job(fstack, j)["status"] == "running" and job(fstack, j)["worker"] == worker.hostname for j in sizes)

    wait_for(joined, 60, "the small jobs to join the running batch")
    return first, sizes


def assert_each_prompt_once(fstack, sizes: dict[str, int]) -> None:
    for job_id, n in sizes.items():
        rows, distinct, _ = result_counts(fstack, job_id)
        assert rows == distinct == n, (job_id, rows, distinct, n)


def test_sigkill_during_a_coalesced_batch_rescues_every_job(fstack, workers, fclient, fmodel):
    a = workers.start("batch-kill-a")
    _, sizes = start_batch(fstack, fclient, fmodel.name, a)
    b = workers.start("batch-kill-b", wait=False)
    a.kill(signal.SIGKILL)
    b.wait_ready()
    for job_id in sizes:
        done = wait_job(fstack, job_id, ("succeeded", "failed", "cancelled"), timeout=180)
        assert done["status"] == "succeeded" and done["attempt"] == 2, done
    assert_each_prompt_once(fstack, sizes)


def test_frozen_worker_past_its_lease_is_fenced_off_for_every_job_of_its_batch(fstack, workers, fclient, fmodel):
    a = workers.start("batch-stale-a")
    _, sizes = start_batch(fstack, fclient, fmodel.name, a)
    b = workers.start("batch-stale-b", wait=False)
    os.killpg(a.proc.pid, signal.SIGSTOP)
    b.wait_ready()
    finished = {j: wait_job(fstack, j, ("succeeded", "failed", "cancelled"), timeout=180) for j in sizes}
    assert all(d["status"] == "succeeded" and d["attempt"] == 2 for d in finished.values()), finished
    snapshots = {j: results_snapshot(fstack, j) for j in sizes}
    stale = {j: len([e for e in events(fstack, j) if e["attempt"] == 1]) for j in sizes}

    os.killpg(a.proc.pid, signal.SIGCONT)
    wait_for(lambda: "no longer owns the job" in a.log(), 60, "the woken worker to notice it was fenced off")
    time.sleep(2.5)  # heartbeats and flushes of the woken worker, had it kept writing
    for job_id in sizes:
        assert results_snapshot(fstack, job_id) == snapshots[job_id]
        assert len([e for e in events(fstack, job_id) if e["attempt"] == 1]) == stale[job_id]
        after = job(fstack, job_id)
        assert (after["status"], after["attempt"], after["finished_at"]) == (
            "succeeded",
            2,
            finished[job_id]["finished_at"],
        )
    assert_each_prompt_once(fstack, sizes)
