"""Polling with deadlines and SQL read-outs shared by the fault tests."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import text

from shared.ids import new_id


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - e.g. the database is restarting; keep polling
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_exc})" if last_exc else "")
    )


def submit(client, kind: str, params: dict, **headers: str) -> dict:
    resp = client.post("/api/v1/jobs", json={"kind": kind, "params": params}, headers=headers)
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()


def job(stack, job_id: str) -> dict:
    with stack.engine().connect() as c:
        row = c.execute(text("SELECT * FROM jobs WHERE id = :id"), {"id": job_id}).mappings().one()
    return dict(row)


def wait_job(stack, job_id: str, statuses: tuple[str, ...], timeout: float) -> dict:
    found = {}

    def check():
        found.update(job(stack, job_id))
        return found["status"] in statuses

    try:
        wait_for(check, timeout, f"job {job_id} to reach {statuses}")
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}; job now: status={found.get('status')} attempt={found.get('attempt')} "
            f"progress={found.get('progress_done')}/{found.get('progress_total')} "
            f"error={found.get('error')}"
        ) from None
    return found


def progress(stack, job_id: str) -> int:
    return job(stack, job_id)["progress_done"] or 0


def result_counts(stack, job_id: str) -> tuple[int, int, dict[int, int]]:
    """(rows, distinct prompt indexes, rows per attempt) of a generation job's results."""
    with stack.engine().connect() as c:
        rows, distinct = c.execute(
            text("SELECT count(*), count(DISTINCT prompt_index) FROM generation_results WHERE job_id = :id"),
            {"id": job_id},
        ).one()
        per_attempt = dict(
            c.execute(
                text("SELECT attempt, count(*) FROM generation_results WHERE job_id = :id GROUP BY attempt"),
                {"id": job_id},
            ).all()
        )
    return rows, distinct, per_attempt


def results_snapshot(stack, job_id: str) -> list[tuple]:
    with stack.engine().connect() as c:
        return [
            tuple(r)
            for r in c.execute(
                text(
                    "SELECT prompt_index, sequence, attempt, text, tokens FROM generation_results WHERE job_id = :id "
                    "ORDER BY prompt_index, sequence"
                ),
                {"id": job_id},
            ).all()
        ]


def events(stack, job_id: str, type_: str | None = None) -> list[dict]:
    sql = "SELECT * FROM job_events WHERE job_id = :id" + (" AND type = :t" if type_ else "") + " ORDER BY id"
    with stack.engine().connect() as c:
        return [dict(r) for r in c.execute(text(sql), {"id": job_id, "t": type_}).mappings().all()]


def running_events(stack, job_id: str) -> list[dict]:
    return [e for e in events(stack, job_id, "status") if (e["data"] or {}).get("status") == "running"]


def insert_job(
    stack,
    owner_id: str,
    kind: str,
    params: dict,
    max_attempts: int = 3,
    timeout_seconds: int | None = None,
    publish: bool = True,
) -> str:
    """A queued job written straight into Postgres (how the test-hook param gets past the API's schema), then
    published as the API would (or, with ``publish=False``, left for the reconciler to find). Its batch key is the
    API's (none for params the API would refuse, such as a test hook's: such a job runs alone)."""
    from shared.kinds import batch_key

    job_id = new_id("job")
    with stack.engine().begin() as c:
        c.execute(
            text(
                "INSERT INTO jobs (id, owner_id, kind, status, params, priority, queue, attempt, max_attempts, "
                "timeout_seconds, progress_done, progress_total, search_text, batch_key) VALUES (:id, :o, :k, "
                "'queued', CAST(:p AS jsonb), 0, 'gpu', 1, :m, :t, 0, 0, '', :b)"
            ),
            {
                "id": job_id,
                "o": owner_id,
                "k": kind,
                "p": json.dumps(params),
                "m": max_attempts,
                "t": timeout_seconds,
                "b": batch_key(kind, params),
            },
        )
        c.execute(
            text(
                "INSERT INTO job_events (job_id, attempt, type, message, data) VALUES "
                "(:id, 1, 'status', 'queued', CAST('{\"status\": \"queued\"}' AS jsonb))"
            ),
            {"id": job_id},
        )
    if publish:
        from shared.broker import publish as send

        if send(job_id, kind, "gpu", 0):
            with stack.engine().begin() as c:
                c.execute(text("UPDATE jobs SET enqueued_at = now() WHERE id = :id"), {"id": job_id})
    return job_id


def gen_params(model: str, n: int, tokens: int = 16, **extra) -> dict:
    """A generation job slow enough to be interrupted: one prompt per batch."""
    return {
        "model": model,
        "prompts": [f"prompt number {i} of the fault suite says" for i in range(n)],
        "max_new_tokens": tokens,
        "batch_size": 1,
        "temperature": 0,
        **extra,
    }


def upload_corpus(client, max_chars: int = 60_000) -> str:
    import io

    from shared.corpus import stdlib_corpus_text

    data = stdlib_corpus_text(max_chars=max_chars).encode()
    resp = client.post(
        "/api/v1/datasets", data={"file": (io.BytesIO(data), "stdlib.txt")}, content_type="multipart/form-data"
    )
    assert resp.status_code in (200, 201), resp.get_json()
    return resp.get_json()["id"]


def train_params(dataset_id: str, steps: int, checkpoint_every: int, **extra) -> dict:
    return {
        "base_model": "scratch",
        "size": "tiny",
        "vocab_size": 512,
        "dataset_id": dataset_id,
        "block_size": 64,
        "batch_size": 8,
        "max_steps": steps,
        "eval_every": 1000,
        "checkpoint_every": checkpoint_every,
        "learning_rate": 2e-3,
        "warmup_steps": 5,
        **extra,
    }


def checkpoint_steps(stack, job_id: str) -> list[int]:
    """The step of the job's stored checkpoint (its fenced pointer, what a retry resumes from); [] if none yet."""
    from sqlalchemy import select

    from shared.db import session_scope
    from shared.models import Job

    with session_scope() as s:
        key = s.scalar(select(Job.checkpoint_key).where(Job.id == job_id))
    return [int(key.rsplit("step-", 1)[1])] if key else []


def metric_steps(stack, job_id: str) -> dict[int, list[int]]:
    """Steps reported with a ``train_loss``, by attempt."""
    out: dict[int, list[int]] = {}
    for e in events(stack, job_id, "metric"):
        if "train_loss" in (e["data"] or {}):
            out.setdefault(e["attempt"], []).append(e["step"])
    return out
