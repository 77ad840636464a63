"""Items 9 and the supervision of ``genqueue up``: SIGTERM to a worker's *main* process (what docker and
``genqueue up`` send) reaches the running training job, which checkpoints the step it is at and is handed back to
the queue at once (not after a lease); another worker resumes it from that checkpoint."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.faults.helpers import (
    checkpoint_steps,
    events,
    job,
    metric_steps,
    progress,
    submit,
    train_params,
    upload_corpus,
    wait_for,
    wait_job,
)

pytestmark = pytest.mark.faults


def test_sigterm_during_training_requeues_at_once_with_a_fresh_checkpoint(fstack, workers, fclient):
    dataset = upload_corpus(fclient)
    steps = 200
    a = workers.start("term-a")
    # No periodic checkpoint before the end: the only one there can be is the one written on SIGTERM.
    job_id = submit(fclient, "text.train", train_params(dataset, steps, checkpoint_every=10_000))["id"]
    wait_for(lambda: job(fstack, job_id)["status"] == "running", 60, "the job to start on the first worker")
    b = workers.start("term-b", wait=False)
    wait_for(lambda: progress(fstack, job_id) >= 15, 120, "15 training steps")
    assert checkpoint_steps(fstack, job_id) == []

    sent = time.monotonic()
    os.kill(a.proc.pid, signal.SIGTERM)  # the main process only, as `docker stop` does
    handed = wait_for(
        lambda: [e for e in events(fstack, job_id, "status") if (e["data"] or {}).get("reason") == "worker_shutdown"],
        20,
        "the job to be handed back",
    )
    requeued_after = time.monotonic() - sent
    a.proc.wait(30)
    exited_after = time.monotonic() - sent
    assert requeued_after < 10, requeued_after  # at once, not after a lease or a timeout
    assert exited_after < 20, exited_after  # the worker did not wait for the job to finish
    assert handed[0]["attempt"] == 2
    saved = checkpoint_steps(fstack, job_id)
    stopped_at = max(metric_steps(fstack, job_id)[1])
    assert saved == [stopped_at], (saved, stopped_at)  # a fresh checkpoint of the very step it stopped at
    assert f"stopped (shutdown) at step {stopped_at}" in " ".join(e["message"] or "" for e in events(fstack, job_id))

    b.wait_ready()
    done = wait_job(fstack, job_id, ("succeeded", "failed"), timeout=180)
    assert done["status"] == "succeeded" and done["attempt"] == 2, done
    assert done["summary"]["resumed_from_step"] == stopped_at
    assert metric_steps(fstack, job_id)[2] == list(range(stopped_at + 1, steps + 1))
    assert done["error"] is None and done["worker"] == b.hostname


def test_genqueue_up_supervisor_restarts_a_dead_worker_and_stops_gracefully(fstack, workers, fclient, fmodel):
    from shared.cli.up import Supervisor, worker_command

    sup = Supervisor(fstack.env(GENQUEUE_WORKER_CONCURRENCY="1"))
    sup.start("worker", worker_command("sup"))
    try:
        first = sup.children["worker"][1]
        job_id = submit(fclient, "text.generate", {"model": fmodel.name, "prompts": ["a"], "max_new_tokens": 4})["id"]
        assert wait_job(fstack, job_id, ("succeeded", "failed"), timeout=90)["status"] == "succeeded"

        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)

        def restarted() -> bool:
            sup.watch_once()
            proc = sup.children["worker"][1]
            return proc.pid != first.pid and proc.poll() is None

        wait_for(restarted, 30, "the supervisor to restart the worker")
        params = {"model": fmodel.name, "prompts": [f"p{i}" for i in range(400)], "max_new_tokens": 16, "batch_size": 1}
        job_id = submit(fclient, "text.generate", params)["id"]
        wait_for(lambda: progress(fstack, job_id) >= 5, 90, "the restarted worker to run a job")
    finally:
        started = time.monotonic()
        sup.stop(timeout=30)
        stopped_after = time.monotonic() - started
    assert stopped_after < 20, stopped_after
    handed = job(fstack, job_id)
    assert handed["status"] == "queued" and handed["attempt"] == 2, handed  # handed back, not left running
