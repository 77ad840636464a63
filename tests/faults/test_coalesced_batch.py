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


TOKENS = 100  # every prompt decodes this many tokens (the tiny model's context is 128)


def start_batch(fstack, fclient, model: str, worker) -> tuple[dict[str, int], set[str]]:
    """A job of 4 long prompts on ``worker`` with 8 rows in flight (so 4 rows are free for others), and 4 jobs of
    20-odd prompts that join its batch and queue behind those 4 free rows: thousands of decode steps, so the batch
    outlasts the checks below by seconds even on a quiet machine (a slower one only widens the window). All five are
    queued before ``worker`` takes any (the first job is claimed with the others waiting, so it looks for them at its
    first join, whatever the machine's speed). Returns every job's prompt count and the jobs that joined on ``worker``.
    """
    worker.consume(False)
    # A BRPOP the worker issued before the cancel still waits (kombu's brpop_timeout, 1 s): a message it caught would
    # be put back at the far end of the queue, behind the others, and another job would head the batch.
    time.sleep(1.5)
    first_params = {**gen_params(model, 4, tokens=TOKENS), "batch_size": 8}
    first = submit(fclient, "text.generate", first_params)["id"]
    sizes = {first: 4}
    for k in range(4):
        n = 20 + k
        params = {**gen_params(model, n, tokens=TOKENS), "batch_size": 4}
        params["prompts"] = [f"joined job {k} prompt {i}" for i in range(n)]
        sizes[submit(fclient, "text.generate", params)["id"]] = n
    small = set(sizes) - {first}
    worker.consume(True)

    def joined() -> bool:
        return all(job(fstack, j)["status"] == "running" and job(fstack, j)["worker"] == worker.hostname for j in small)

    wait_for(joined, 60, "the small jobs to join the running batch")
    return sizes, small


def assert_each_prompt_once(fstack, sizes: dict[str, int]) -> None:
    for job_id, n in sizes.items():
        rows, distinct, _ = result_counts(fstack, job_id)
        assert rows == distinct == n, (job_id, rows, distinct, n)


def test_sigkill_during_a_coalesced_batch_rescues_every_job(fstack, workers, fclient, fmodel):
    a = workers.start("batch-kill-a")
    sizes, small = start_batch(fstack, fclient, fmodel.name, a)
    b = workers.start("batch-kill-b", wait=False)
    a.kill(signal.SIGKILL)
    b.wait_ready()
    for job_id in sizes:
        done = wait_job(fstack, job_id, ("succeeded", "failed", "cancelled"), timeout=180)
        assert done["status"] == "succeeded", done
        if job_id in small:  # they were running in the killed worker's batch
            assert done["attempt"] == 2 and done["worker"] == b.hostname, done
    assert_each_prompt_once(fstack, sizes)


def test_frozen_worker_past_its_lease_is_fenced_off_for_every_job_of_its_batch(fstack, workers, fclient, fmodel):
    a = workers.start("batch-stale-a")
    sizes, small = start_batch(fstack, fclient, fmodel.name, a)
    b = workers.start("batch-stale-b", wait=False)
    os.killpg(a.proc.pid, signal.SIGSTOP)
    b.wait_ready()
    finished = {j: wait_job(fstack, j, ("succeeded", "failed", "cancelled"), timeout=180) for j in sizes}
    assert all(d["status"] == "succeeded" for d in finished.values()), finished
    assert all(finished[j]["attempt"] == 2 and finished[j]["worker"] == b.hostname for j in small), finished
    snapshots = {j: results_snapshot(fstack, j) for j in sizes}
    stale = {j: len([e for e in events(fstack, j) if e["attempt"] == 1]) for j in sizes}

    os.killpg(a.proc.pid, signal.SIGCONT)
    wait_for(lambda: "no longer owns the job" in a.log(), 60, "the woken worker to notice it was fenced off")
    time.sleep(2.5)  # heartbeats and flushes of the woken worker, had it kept writing
    for job_id in sizes:
        assert results_snapshot(fstack, job_id) == snapshots[job_id]
        assert len([e for e in events(fstack, job_id) if e["attempt"] == 1]) == stale[job_id]
        after = job(fstack, job_id)
        before = finished[job_id]
        assert (after["status"], after["attempt"], after["finished_at"]) == (
            "succeeded",
            before["attempt"],
            before["finished_at"],
        )
    assert_each_prompt_once(fstack, sizes)
