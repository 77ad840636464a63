"""Test data for the browser tests: API calls with a bearer token, and rows for kinds whose workers aren't needed."""

from __future__ import annotations

import io
import time
from datetime import timedelta

import requests

from shared.db import session_scope
from shared.ids import new_id
from shared.models import Artifact, Job, JobEvent, Model
from shared.storage import get_storage
from shared.timeutil import utcnow


class Api:
    """A bearer-token client of the live server (what the CLI does)."""

    def __init__(self, base: str, token: str):
        self.base, self.session = base, requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def get(self, path: str, **kw):
        resp = self.session.get(self.base + "/api/v1" + path, timeout=30, **kw)
        resp.raise_for_status()
        return resp.json()

    def post(self, path: str, **kw):
        resp = self.session.post(self.base + "/api/v1" + path, timeout=30, **kw)
        assert resp.status_code < 300, resp.text
        return resp.json()

    def submit_generate(self, model: str, prompts: list[str], **params) -> dict:
        return self.post(
            "/jobs", json={"kind": "text.generate", "params": {"model": model, "prompts": prompts, **params}}
        )

    def wait(self, job_id: str, statuses=("succeeded", "failed", "cancelled"), timeout: float = 90) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.get(f"/jobs/{job_id}")
            if job["status"] in statuses:
                return job
            time.sleep(0.2)
        raise AssertionError(f"{job_id} still {job['status']}")


def insert_job(owner_id: str, kind: str, params: dict, status: str, done: int, total: int, **extra) -> str:
    """A job row as a worker would leave it (no broker message: nothing picks it up)."""
    now = utcnow()
    job_id = new_id("job")
    with session_scope() as s:
        s.add(
            Job(
                id=job_id,
                owner_id=owner_id,
                kind=kind,
                status=status,
                params=params,
                queue="gpu",
                attempt=1,
                max_attempts=3,
                progress_done=done,
                progress_total=total,
                search_text=kind,
                created_at=now - timedelta(minutes=3),
                started_at=now - timedelta(minutes=2),
                worker="w-test@host",
                device="cpu",
                **extra,
            )
        )
        s.flush()
        s.add(
            JobEvent(
                job_id=job_id,
                attempt=1,
                type="status",
                message="queued",
                data={"status": "queued"},
                at=now - timedelta(minutes=3),
            )
        )
        s.add(
            JobEvent(
                job_id=job_id,
                attempt=1,
                type="status",
                message="running (attempt 1 on w-test@host, cpu)",
                data={"status": "running"},
                at=now - timedelta(minutes=2),
            )
        )
    return job_id


def add_metrics(job_id: str, steps: range, make) -> None:
    with session_scope() as s:
        s.add_all(JobEvent(job_id=job_id, attempt=1, type="metric", step=i, data=make(i)) for i in steps)


def add_log(job_id: str, message: str, status: str | None = None) -> None:
    with session_scope() as s:
        s.add(
            JobEvent(
                job_id=job_id,
                attempt=1,
                type="status" if status else "log",
                message=message,
                data={"status": status} if status else None,
            )
        )


def set_job(job_id: str, **values) -> None:
    with session_scope() as s:
        job = s.get(Job, job_id)
        for k, v in values.items():
            setattr(job, k, v)


def png(seed: int, size: int = 64) -> bytes:
    """A small deterministic PNG (a stand-in for a sample grid)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    cells = (rng.random((8, 8)) * 255).astype("uint8")
    img = Image.fromarray(cells, "L").resize((size, size), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def add_artifact(job_id: str, owner_id: str, name: str, role: str, data: bytes, step: int | None = None) -> str:
    art_id = new_id("art")
    rel = f"jobs/{job_id}/{art_id}-{name}"
    size, sha = get_storage().put_bytes(rel, data)
    with session_scope() as s:
        s.add(
            Artifact(
                id=art_id,
                job_id=job_id,
                owner_id=owner_id,
                name=name,
                role=role,
                content_type="image/png" if name.endswith(".png") else "application/zip",
                size=size,
                sha256=sha,
                step=step,
                path=rel,
            )
        )
    return art_id


def add_model(name: str, kind: str, job_id: str | None, owner_id: str, metrics: dict, base: str | None = None) -> str:
    model_id = new_id("mdl")
    with session_scope() as s:
        s.add(
            Model(
                id=model_id,
                name=name,
                kind=kind,
                source="trained",
                owner_id=owner_id,
                path=None,
                base=base,
                job_id=job_id,
                config={},
                metrics=metrics,
                size_bytes=1234567,
            )
        )
    return model_id
