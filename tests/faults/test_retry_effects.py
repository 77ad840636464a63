"""What a retried attempt may and may not write, checked step by step in one process against the real Postgres:
the rescuer hands the job to attempt 2; attempt 1's writes are fenced off; attempt 2 does not store an artifact
(an image, a GAN sample) that attempt 1 already stored, so a retried ``image.generate`` has each image once."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from tests.faults.helpers import insert_job, job

pytestmark = pytest.mark.faults


def _artifacts(stack, job_id: str) -> list[tuple]:
    with stack.engine().connect() as c:
        rows = c.execute(
            text("SELECT name, attempt, size FROM artifacts WHERE job_id = :id ORDER BY name"), {"id": job_id}
        )
        return [tuple(r) for r in rows.all()]


def test_rescued_job_keeps_each_artifact_once_and_fences_the_old_attempt(fstack, workers, fuser):
    from worker.fencing import Fenced
    from worker.maintenance import rescue_expired
    from worker.runtime import KindPolicy, claim

    policy = KindPolicy(default_timeout_seconds=3600)

    job_id = insert_job(fstack, fuser.id, "image.generate", {"model": "m", "count": 2}, publish=False)
    first = claim(job_id, "test-worker-1", "cpu", policy)
    assert first is not None and first.attempt == 1
    one = first.add_artifact("image-0000.png", b"from attempt one", role="image")

    with fstack.engine().begin() as c:  # attempt 1's worker is gone: its lease runs out
        c.execute(text("UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = :id"), {"id": job_id})
    assert rescue_expired() == 1
    assert (job(fstack, job_id)["status"], job(fstack, job_id)["attempt"]) == ("queued", 2)
    with fstack.engine().begin() as c:  # skip the retry backoff
        c.execute(text("UPDATE jobs SET not_before = NULL WHERE id = :id"), {"id": job_id})
    second = claim(job_id, "test-worker-2", "cpu", policy)
    assert second is not None and second.attempt == 2

    assert second.add_artifact("image-0000.png", b"from attempt two!", role="image") == one  # kept, not doubled
    second.add_artifact("image-0001.png", b"new in attempt two", role="image")
    with pytest.raises(Fenced):
        first.add_artifact("image-0002.png", b"stale", role="image")
    with pytest.raises(Fenced):
        first.add_results(
            [{"prompt_index": 0, "sequence": 0, "prompt": "p", "text": "t", "tokens": 1, "finish_reason": "length"}]
        )
    with pytest.raises(Fenced):  # progress and events of the stale attempt are refused too
        first.report(1, 2, train_loss=1.0)
    assert _artifacts(fstack, job_id) == [("image-0000.png", 1, 16), ("image-0001.png", 2, 18)]
    assert job(fstack, job_id)["progress_done"] == 0
    stored = sorted(p.name for p in (first.store.path(f"jobs/{job_id}/artifacts")).iterdir())
    assert len(stored) == 2  # the blobs of the refused writes were removed again
