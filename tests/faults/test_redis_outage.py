"""Items 4 and 5: Redis is only a wake-up signal. Jobs queued when Redis goes away (and its data with it), and jobs
submitted while it is down, all run once it is back: Postgres says what must run and the reconciler publishes it."""

from __future__ import annotations

import shutil
import time

import pytest
from sqlalchemy import text

from tests.faults.helpers import result_counts, running_events, submit, wait_for

pytestmark = pytest.mark.faults


def _statuses(stack, ids: list[str]) -> dict[str, str]:
    with stack.engine().connect() as c:
        rows = c.execute(text("SELECT id, status FROM jobs WHERE id = ANY(:ids)"), {"ids": ids}).all()
    return dict(rows)


def _all_terminal(stack, ids):
    statuses = _statuses(stack, ids)
    return all(s in ("succeeded", "failed", "cancelled") for s in statuses.values()) and statuses


def _assert_each_ran_once(stack, ids: list[str]) -> None:
    statuses = _statuses(stack, ids)
    assert sorted(set(statuses.values())) == ["succeeded"], statuses
    with stack.engine().connect() as c:
        attempts = dict(c.execute(text("SELECT id, attempt FROM jobs WHERE id = ANY(:ids)"), {"ids": ids}).all())
    assert set(attempts.values()) == {1}, attempts
    for job_id in ids:
        assert len(running_events(stack, job_id)) == 1, job_id  # claimed once: no job ran twice
        rows, distinct, _ = result_counts(stack, job_id)
        assert rows == distinct == 2, (job_id, rows, distinct)


def test_jobs_queued_when_redis_is_lost_all_succeed(fstack, workers, fclient, fmodel):
    params = {"model": fmodel.name, "prompts": ["a", "b"], "max_new_tokens": 4, "temperature": 0}
    ids = [submit(fclient, "text.generate", params)["id"] for _ in range(50)]
    assert set(_statuses(fstack, ids).values()) == {"queued"}
    with fstack.engine().connect() as c:
        assert c.execute(text("SELECT count(*) FROM jobs WHERE enqueued_at IS NOT NULL")).scalar() == 50
    # Redis goes away with its data (as a Redis without persistence would): all 50 messages are gone.
    fstack.redis.stop()
    for f in fstack.redis.data_dir.iterdir():
        if f.name.startswith("appendonly") or f.suffix == ".rdb":
            shutil.rmtree(f) if f.is_dir() else f.unlink()
    w = workers.start("redis-lost", wait=False)  # a worker comes up meanwhile and waits for its broker
    time.sleep(3)
    fstack.redis.start()
    w.wait_ready()

    wait_for(lambda: _all_terminal(fstack, ids), 150, "all 50 jobs to finish")
    _assert_each_ran_once(fstack, ids)
    assert "reconciler published" in w.log()  # nothing else could have sent them


def test_jobs_submitted_while_redis_is_down_are_accepted_and_run(fstack, workers, fclient, fmodel):
    workers.start("redis-down")
    fstack.redis.stop()
    params = {"model": fmodel.name, "prompts": ["x", "y"], "max_new_tokens": 4, "temperature": 0}
    ids, slowest = [], 0.0
    for _ in range(20):
        started = time.monotonic()
        resp = fclient.post("/api/v1/jobs", json={"kind": "text.generate", "params": params})
        slowest = max(slowest, time.monotonic() - started)
        assert resp.status_code == 201, resp.get_json()
        ids.append(resp.get_json()["id"])
    assert slowest < 5, slowest  # a dead broker does not hold submissions up
    with fstack.engine().connect() as c:
        published = c.execute(
            text("SELECT count(*) FROM jobs WHERE id = ANY(:ids) AND enqueued_at IS NOT NULL"), {"ids": ids}
        ).scalar()
    assert published == 0  # nothing reached the broker: only the reconciler can get these jobs running
    assert set(_statuses(fstack, ids).values()) == {"queued"}
    time.sleep(1)
    fstack.redis.start()

    wait_for(lambda: _all_terminal(fstack, ids), 120, "all 20 jobs to finish")
    _assert_each_ran_once(fstack, ids)
