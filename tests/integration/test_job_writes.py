"""The worker's one-statement writes against the real PostgreSQL: the claim, the fenced end of an attempt (the same
row as the rescuer's ORM ``finish``), and the batched end of the jobs that finish together in a shared batch."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from shared import lifecycle
from shared.db import session_scope
from shared.models import Job, JobStatus
from tests.faults.helpers import insert_job
from worker import runtime
from worker.context import JobContext
from worker.fencing import Fenced

PARAMS = {"model": "m", "prompts": ["a"], "temperature": 1.0, "seed": 0}
POLICY = runtime.KindPolicy(default_timeout_seconds=60)


def claimed(stack, owner: str, params: dict = PARAMS) -> JobContext:
    ctx = runtime.claim(insert_job(stack, owner, "text.generate", params, publish=False), "w", "cpu", POLICY)
    assert ctx is not None
    return ctx


def row(stack, job_id: str) -> dict:
    with stack.engine().begin() as c:
        cols = "status, attempt, progress_done, progress_total, summary, model_id, error, finished_at, lease_expires_at"
        return dict(c.execute(text(f"SELECT {cols} FROM jobs WHERE id = :id"), {"id": job_id}).one()._mapping)


def timeline(stack, job_id: str) -> list[tuple]:
    with stack.engine().begin() as c:
        found = c.execute(
            text("SELECT type, step, message, data FROM job_events WHERE job_id = :id ORDER BY id"), {"id": job_id}
        )
        return [tuple(r) for r in found]


def results(stack, job_id: str) -> list[tuple]:
    with stack.engine().begin() as c:
        found = c.execute(
            text("SELECT prompt_index, sequence, text, tokens, attempt FROM generation_results WHERE job_id = :id"),
            {"id": job_id},
        )
        return sorted(tuple(r) for r in found)


def buffer(ctx: JobContext, text_: str = "out") -> None:
    """What a short generation job holds for its final write: a log line, a metric point, its result."""
    ctx.defer_flush()
    ctx.log("a log line")
    ctx.report(0, 1, tokens_per_s=2.5)
    one = {"prompt_index": 0, "sequence": 0, "prompt": "a", "prompt_id": None, "text": text_}
    ctx.add_results([{**one, "tokens": 3, "finish_reason": "length"}], defer=True)


def test_the_claim_tells_whether_jobs_of_its_batch_key_wait(stack, clean_db):
    alice = stack.make_user("alice")
    alone = claimed(stack, alice.id)
    assert alone.others_waiting is False and alone.queue == "gpu" and alone.attempt == 1
    insert_job(stack, alice.id, "text.generate", PARAMS, publish=False)  # the same key, waiting
    assert claimed(stack, alice.id).others_waiting is True
    assert claimed(stack, alice.id, {**PARAMS, "model": "n"}).others_waiting is False  # another key: nobody waits
    events = timeline(stack, alone.job_id)
    assert events[-1][0] == "status" and events[-1][2] == "running (attempt 1 on w, cpu)"
    assert events[-1][3] == {"status": "running", "worker": "w", "device": "cpu"}


@pytest.mark.parametrize(
    ("status", "error"),
    [(JobStatus.SUCCEEDED, None), (JobStatus.FAILED, {"code": "internal_error", "message": "boom"})],
)
def test_the_fenced_end_of_an_attempt_writes_what_the_orm_finish_writes(stack, clean_db, status, error):
    """The worker's one statement (``finish_attempt``) and the rescuer's ORM ``finish`` end a job alike."""
    alice = stack.make_user("alice")
    fast, orm = claimed(stack, alice.id), claimed(stack, alice.id)
    summary = {"prompts": 1, "model_id": "mdl_x"}
    with session_scope() as s:
        end = lifecycle.AttemptEnd(fast.job_id, fast.attempt, status, error=error, summary=summary, progress=(0, 4))
        ended = lifecycle.finish_attempt(s, end)
        assert ended is not None and ended.id == fast.job_id
    with session_scope() as s:
        job = s.get(Job, orm.job_id)
        job.progress_done, job.progress_total = 0, 4
        lifecycle.finish(s, job, status, error=error, summary=summary)
    a, b = row(stack, fast.job_id), row(stack, orm.job_id)
    assert a["finished_at"] is not None and b["finished_at"] is not None
    assert {k: v for k, v in a.items() if k != "finished_at"} == {k: v for k, v in b.items() if k != "finished_at"}
    assert a["summary"] == {"prompts": 1} and a["model_id"] == "mdl_x" and a["lease_expires_at"] is None
    assert a["progress_done"] == (4 if status == JobStatus.SUCCEEDED else 0)
    assert timeline(stack, fast.job_id)[-1] == timeline(stack, orm.job_id)[-1]


def test_a_stale_attempt_s_end_writes_nothing(stack, clean_db):
    alice = stack.make_user("alice")
    ctx = claimed(stack, alice.id)
    with stack.engine().begin() as c:
        c.execute(text("UPDATE jobs SET attempt = 2 WHERE id = :id"), {"id": ctx.job_id})  # rescued meanwhile
    buffer(ctx)
    before = timeline(stack, ctx.job_id)
    with pytest.raises(Fenced):
        runtime.finish(ctx, JobStatus.SUCCEEDED, summary={"prompts": 1})
    assert row(stack, ctx.job_id)["status"] == "running" and timeline(stack, ctx.job_id) == before
    assert results(stack, ctx.job_id) == []


def test_jobs_ending_together_are_written_together_and_a_fenced_one_is_left_out(stack, clean_db):
    alice = stack.make_user("alice")
    jobs = [claimed(stack, alice.id) for _ in range(3)]
    for k, ctx in enumerate(jobs):
        buffer(ctx, f"text {k}")
        runtime.process.adopt(ctx)
    stale = jobs[1]
    with stack.engine().begin() as c:
        c.execute(text("UPDATE jobs SET attempt = 2 WHERE id = :id"), {"id": stale.job_id})
    runtime.settle_succeeded([(ctx, {"prompts": 1}) for ctx in jobs], POLICY)

    assert [ctx.settled for ctx in jobs] == ["succeeded", "fenced", "succeeded"]
    assert stale.job_id not in runtime.process.joined_ids  # its next message must run it, not be dropped
    assert not any(ctx in runtime.process.joined for ctx in jobs)
    for k in (0, 2):
        job_id = jobs[k].job_id
        assert row(stack, job_id)["status"] == "succeeded" and row(stack, job_id)["progress_done"] == 1
        assert results(stack, job_id) == [(0, 0, f"text {k}", 3, 1)]
        kinds = [(e[0], e[2]) for e in timeline(stack, job_id)]
        assert kinds[-3:] == [("log", "a log line"), ("metric", None), ("status", "succeeded")]
    assert row(stack, stale.job_id)["status"] == "running" and results(stack, stale.job_id) == []


def test_one_bad_row_makes_each_job_of_the_batch_end_alone(stack, clean_db):
    """A shared write that fails for another reason than a lost database falls back to one write per job: the
    job whose rows Postgres refuses does not take the others down with it."""
    alice = stack.make_user("alice")
    good, bad = claimed(stack, alice.id), claimed(stack, alice.id)
    buffer(good, "fine")
    buffer(bad)
    bad._results[0]["tokens"] = "not a number"  # refused by the insert, only this job's
    runtime.settle_succeeded([(good, {"prompts": 1}), (bad, {"prompts": 1})], POLICY)
    assert good.settled == "succeeded" and results(stack, good.job_id) == [(0, 0, "fine", 3, 1)]
    assert row(stack, good.job_id)["status"] == "succeeded"
    assert row(stack, bad.job_id)["status"] != "succeeded" and results(stack, bad.job_id) == []
