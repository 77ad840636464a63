"""Items 1 and 2 of the fault suite: a worker SIGKILLed (main process and pool, as by the OOM killer or a lost
machine) in the middle of a job. The job's lease runs out, the rescuer requeues it with ``attempt + 1``, the
reconciler drops the message the dead worker held and publishes the job again, and another worker finishes it."""

from __future__ import annotations

import signal

import pytest

from tests.faults.helpers import (
    checkpoint_steps,
    gen_params,
    job,
    metric_steps,
    progress,
    result_counts,
    submit,
    train_params,
    upload_corpus,
    wait_for,
    wait_job,
)

pytestmark = pytest.mark.faults


def test_sigkill_mid_generation_completes_once_with_one_result_per_prompt(fstack, workers, fclient, fmodel):
    n = 150
    a = workers.start("kill-gen-a")
    job_id = submit(fclient, "text.generate", gen_params(fmodel.name, n))["id"]
    wait_for(lambda: job(fstack, job_id)["status"] == "running", 60, "the job to start on the first worker")
    b = workers.start("kill-gen-b", wait=False)  # boots meanwhile; the only message is held by the first worker
    wait_for(lambda: progress(fstack, job_id) >= 20, 90, "20 prompts done on the first worker")
    a.kill(signal.SIGKILL)  # the whole worker: main process and its pool
    before, _, _ = result_counts(fstack, job_id)
    assert 20 <= before < n, before
    assert job(fstack, job_id)["worker"] == a.hostname
    b.wait_ready()
    done = wait_job(fstack, job_id, ("succeeded", "failed"), timeout=120)
    assert done["status"] == "succeeded", done
    assert done["attempt"] == 2
    rows, distinct, per_attempt = result_counts(fstack, job_id)
    assert rows == distinct == n  # every prompt exactly once
    assert per_attempt[1] == before  # what the killed attempt stored was kept, not generated again
    assert per_attempt[2] == n - before
    assert done["summary"]["skipped_done"] == before and done["summary"]["generated_now"] == n - before


def test_sigkill_mid_training_resumes_from_the_checkpoint(fstack, workers, fclient):
    dataset = upload_corpus(fclient)
    steps, every = 120, 20
    a = workers.start("kill-train-a")
    job_id = submit(fclient, "text.train", train_params(dataset, steps, every))["id"]
    wait_for(lambda: job(fstack, job_id)["status"] == "running", 60, "the job to start on the first worker")
    b = workers.start("kill-train-b", wait=False)
    wait_for(lambda: progress(fstack, job_id) >= 2 * every + 5, 120, "training past its second checkpoint")
    a.kill(signal.SIGKILL)
    saved = checkpoint_steps(fstack, job_id)
    assert saved and saved[-1] >= 2 * every, saved
    reached = max(metric_steps(fstack, job_id)[1])
    b.wait_ready()
    done = wait_job(fstack, job_id, ("succeeded", "failed"), timeout=180)
    assert done["status"] == "succeeded", done
    assert done["attempt"] == 2
    assert done["summary"]["resumed_from_step"] == saved[-1]
    by_attempt = metric_steps(fstack, job_id)
    # attempt 2 continues from the checkpoint: steps checkpoint+1 .. total, each once, none before it
    assert by_attempt[2] == list(range(saved[-1] + 1, steps + 1)), by_attempt[2][:5]
    # attempt 1's flushed metrics are steps 1..n, each once (its last ones, up to half a second's worth, died with it)
    assert by_attempt[1] == list(range(1, reached + 1))
    assert done["progress_done"] == steps and done["model_id"]
