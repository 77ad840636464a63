"""The multi-job claim of cross-job batching (``shared.lifecycle.claim_batch``) against the real PostgreSQL."""

from __future__ import annotations

import threading

from sqlalchemy import text

from shared import lifecycle
from shared.db import session_scope
from shared.kinds import batch_key
from tests.faults.helpers import insert_job

PARAMS = {"model": "m", "prompts": ["a"], "temperature": 1.0, "seed": 0}
KEY = batch_key("text.generate", PARAMS)


def claim(limit: int, cap: int = 0) -> list[str]:
    with session_scope() as s:
        jobs = lifecycle.claim_batch(
            s,
            key=KEY,
            queue="gpu",
            limit=limit,
            cap=cap,
            worker="w",
            device="cpu",
            lease_seconds=30,
            default_timeout=60,
        )
        return [j.id for j in jobs]


def set_column(stack, job_id: str, sql: str) -> None:
    with stack.engine().begin() as c:
        c.execute(text(f"UPDATE jobs SET {sql} WHERE id = :id"), {"id": job_id})


def rows(stack, ids: list[str]) -> dict[str, dict]:
    with stack.engine().begin() as c:
        found = c.execute(
            text("SELECT id, status, worker, timeout_seconds, lease_expires_at FROM jobs WHERE id = ANY(:ids)"),
            {"ids": ids},
        )
        return {r.id: r._asdict() for r in found}


def test_claims_matching_due_jobs_in_priority_order_up_to_the_limit(stack, clean_db):
    alice = stack.make_user("alice")
    old, new, urgent = (insert_job(stack, alice.id, "text.generate", PARAMS, publish=False) for _ in range(3))
    set_column(stack, urgent, "priority = 50")
    later = insert_job(stack, alice.id, "text.generate", PARAMS, publish=False)
    set_column(stack, later, "not_before = now() + interval '1 hour'")  # backing off: not due
    other_model = insert_job(stack, alice.id, "text.generate", {**PARAMS, "model": "n"}, publish=False)
    hooked = insert_job(stack, alice.id, "text.generate", {**PARAMS, "_test_hook": "crash"}, publish=False)
    other_kind = insert_job(stack, alice.id, "image.generate", PARAMS, publish=False)

    assert claim(2) == [urgent, old]
    assert claim(10) == [new]
    state = rows(stack, [urgent, old, new, later, other_model, hooked, other_kind])
    assert {k for k, r in state.items() if r["status"] == "running"} == {urgent, old, new}
    assert all(state[k]["worker"] == "w" and state[k]["timeout_seconds"] == 60 for k in (urgent, old, new))
    assert all(state[k]["lease_expires_at"] is not None for k in (urgent, old, new))
    with stack.engine().begin() as c:
        events = c.execute(
            text("SELECT count(*) FROM job_events WHERE job_id = :id AND data->>'status' = 'running'"), {"id": old}
        ).scalar()
    assert events == 1


def test_the_per_user_running_cap_counts_what_already_runs(stack, clean_db):
    alice, bob = stack.make_user("alice"), stack.make_user("bob")
    a = [insert_job(stack, alice.id, "text.generate", PARAMS, publish=False) for _ in range(4)]
    b = [insert_job(stack, bob.id, "text.generate", PARAMS, publish=False) for _ in range(2)]
    set_column(stack, a[0], "status = 'running'")  # alice already runs one job
    got = claim(10, cap=2)
    assert sorted(got) == sorted([a[1], *b])  # alice: one more (two running), bob: both


def test_two_workers_claiming_at_once_never_take_the_same_job(stack, clean_db):
    alice = stack.make_user("alice")
    ids = [insert_job(stack, alice.id, "text.generate", PARAMS, publish=False) for _ in range(40)]
    got: list[list[str]] = [[], [], [], []]

    def worker(k: int) -> None:
        while batch := claim(3):
            got[k].extend(batch)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    claimed = [j for batch in got for j in batch]
    assert sorted(claimed) == sorted(ids)  # each exactly once
