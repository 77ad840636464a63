"""Stored checkpoints are fenced: only the attempt that owns the job moves its checkpoint pointer; a stale attempt's
snapshot is deleted, never resumed from; a new attempt restores exactly what the pointer names."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select, update

from shared.db import session_scope
from shared.models import Job
from shared.storage import get_storage
from tests.factories import finished_job
from worker.checkpoint_sync import CheckpointSync
from worker.fencing import Fenced

pytestmark = pytest.mark.usefixtures("held_queue")


def fake_run(root: Path, steps: list[int]) -> None:
    """What a training loop leaves in its root: checkpoints ``step-*``, a scratch tokenizer, the final model."""
    for step in steps:
        d = root / "checkpoints" / f"step-{step:08d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "model.safetensors").write_bytes(bytes([step % 256]) * 100)
        (d / "state.pt").write_bytes(f"state of step {step}".encode())
    (root / "checkpoints" / ".tmp-step-99999999-1").mkdir(exist_ok=True)  # a half-written one: never uploaded
    (root / "tokenizer").mkdir(exist_ok=True)
    (root / "tokenizer" / "tokenizer.json").write_text("{}")
    (root / "model").mkdir(exist_ok=True)
    (root / "model" / "model.safetensors").write_bytes(b"final")


def pointer(job_id: str) -> str | None:
    with session_scope() as s:
        return s.scalar(select(Job.checkpoint_key).where(Job.id == job_id))


def running_job(user_id: str, attempt: int) -> str:
    job_id = finished_job(user_id, status="running")
    with session_scope() as s:
        s.execute(update(Job).where(Job.id == job_id).values(attempt=attempt, finished_at=None))
    return job_id


def test_the_owner_moves_the_pointer_and_a_new_attempt_restores_it(user, tmp_path):
    job_id = running_job(user.id, attempt=1)
    root = tmp_path / "a1"
    fake_run(root, [10, 20])
    sync = CheckpointSync(job_id, 1, root)
    key = sync.sync()
    assert key == f"jobs/{job_id}/checkpoints/a1-step-00000020" and pointer(job_id) == key
    stored = {k.removeprefix(key + "/") for k, _ in get_storage().list(key)}
    assert stored == {
        "MANIFEST.json",
        "checkpoints/step-00000020/model.safetensors",
        "checkpoints/step-00000020/state.pt",
        "tokenizer/tokenizer.json",
    }  # the newest checkpoint only
    assert sync.sync() is None  # nothing new: no second upload

    fake_run(root, [30])
    newer = sync.sync()
    assert pointer(job_id) == newer and get_storage().list(key) == []  # the previous snapshot is dropped

    with session_scope() as s:  # the worker is lost: the job goes to attempt 2
        s.execute(update(Job).where(Job.id == job_id).values(attempt=2))
    restored = tmp_path / "a2"
    assert CheckpointSync(job_id, 2, restored).restore() == newer
    assert (restored / "checkpoints" / "step-00000030" / "state.pt").read_bytes() == b"state of step 30"
    assert (restored / "tokenizer" / "tokenizer.json").exists() and not (restored / "model").exists()


def test_a_stale_attempts_checkpoint_is_never_pointed_to(user, tmp_path):
    job_id = running_job(user.id, attempt=2)
    root = tmp_path / "stale"
    fake_run(root, [40])
    with pytest.raises(Fenced):
        CheckpointSync(job_id, 1, root).sync()  # attempt 1 lost the job to attempt 2
    assert pointer(job_id) is None
    assert get_storage().list(f"jobs/{job_id}/checkpoints") == []  # its upload is deleted too
    assert CheckpointSync(job_id, 2, tmp_path / "fresh").restore() is None  # nothing to resume from
