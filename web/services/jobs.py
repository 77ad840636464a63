"""Creating, cancelling and re-running jobs. A job exists once its row is committed; then its id is published."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from pydantic import ValidationError
from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from shared import lifecycle, webhooks
from shared.broker import publish
from shared.ids import new_id
from shared.kinds import KINDS, PARAMS_BY_KIND, batch_key
from shared.models import Job, JobStatus, User
from shared.schemas.api import JobCreate
from shared.settings import get_settings
from web.errors import Conflict, Invalid, NotFound
from web.services.admission import admit, canonical
from web.services.limits import too_many_queued

logger = logging.getLogger(__name__)


def pydantic_details(exc: ValidationError, prefix: tuple = ()) -> list[dict]:
    return [
        {"loc": [*prefix, *err["loc"]], "msg": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False, include_context=False, include_input=False)
    ]


def parse_create(body: Any) -> tuple[JobCreate, Any]:
    """Validate the envelope, then the kind's params; 422 with field details on any error."""
    if not isinstance(body, dict):
        raise Invalid("the request body must be a JSON object", code="invalid_body")
    if "\\u0000" in canonical(body):  # Postgres cannot store NUL in text or JSONB
        raise Invalid("strings must not contain NUL (\\u0000) characters", code="invalid_body")
    try:
        req = JobCreate.model_validate(body)
    except ValidationError as exc:
        raise Invalid("invalid job request", details=pydantic_details(exc)) from exc
    try:
        params = PARAMS_BY_KIND[req.kind].model_validate(req.params)
    except ValidationError as exc:
        raise Invalid(f"invalid params for {req.kind}", details=pydantic_details(exc, ("params",))) from exc
    return req, params


def search_text(kind: str, params: dict) -> str:
    """What ``?q=`` matches: kind, model/dataset/name fields and the start of the prompts."""
    parts = [kind] + [str(params[k]) for k in ("model", "base_model", "dataset", "dataset_id", "name") if params.get(k)]
    for p in (params.get("prompts") or [])[:50]:
        parts.append((p if isinstance(p, str) else p.get("prompt", ""))[:200])
    return "\n".join(parts)[:20_000]


def create_job(
    s: Session, user: User, body: Any, idempotency_key: str | None = None, retry_of: str | None = None
) -> tuple[Job, bool]:
    """Validate, admit, insert and publish; returns (job, created). Same idempotency key + same body → same job
    (whatever the queue holds: a retried request gets its job back even when its owner's queue is now full); a new
    job past the owner's queued-jobs cap is 429 ``too_many_queued``.

    A created job is returned transient (not in ``s``): it was written by :func:`shared.lifecycle.submit`."""
    req, params = parse_create(body)
    request_hash = hashlib.sha256(canonical(body).encode()).hexdigest()
    try:
        facts = admit(s, user, req.kind, params)
        webhook_url = checked_webhook_url(req.webhook_url or user.webhook_url)
    except Invalid:  # a retried request whose model, dataset or webhook host is refused now still gets its job
        existing = _by_idempotency_key(s, user, idempotency_key, request_hash) if idempotency_key else None
        if existing is None:
            raise
        return existing, False
    stored = params.model_dump(mode="json", exclude_none=True)
    job = Job(
        id=new_id("job"),
        owner_id=user.id,
        kind=req.kind,
        status=JobStatus.QUEUED,
        params=stored,
        priority=req.priority,
        queue=req.queue or KINDS[req.kind].queue,
        attempt=1,
        max_attempts=params.max_attempts or get_settings().max_attempts,
        timeout_seconds=params.timeout_seconds,
        progress_total=facts.get("total", 0),
        dataset_id=facts.get("dataset_id"),
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        search_text=search_text(req.kind, stored),
        meta=dict(req.metadata),
        webhook_url=webhook_url,
        webhook_events=list(dict.fromkeys(req.webhook_events)) if req.webhook_events else None,
        retry_of=retry_of,
        batch_key=batch_key(req.kind, params),
        progress_done=0,
        cancel_requested=False,
    )
    cap = get_settings().max_queued_per_user
    outcome = lifecycle.submit(s, job, queued_cap=cap)
    if outcome is not lifecycle.Submitted.CREATED:
        s.rollback()
        existing = _by_idempotency_key(s, user, idempotency_key, request_hash) if idempotency_key else None
        if existing is not None:  # a retried request, or a concurrent twin that committed first
            return existing, False
        if outcome is lifecycle.Submitted.OVER_CAP:
            raise too_many_queued(cap)
        raise Conflict("this Idempotency-Key was just released; retry", code="idempotency_conflict")
    s.commit()
    enqueue(s, job)
    return job, True


def checked_webhook_url(url: str | None) -> str | None:
    """``url`` if the SSRF guard lets it through now (it is checked again at every attempt); 422 otherwise."""
    if url is None:
        return None
    try:
        webhooks.check_url(url)
    except webhooks.Refused as exc:
        raise Invalid(
            str(exc), code="invalid_webhook_url", details=[{"loc": ["webhook_url"], "msg": str(exc)}]
        ) from exc
    return url


_BY_KEY = select(Job).where(Job.owner_id == bindparam("owner"), Job.idempotency_key == bindparam("key")).limit(1)


def _by_idempotency_key(s: Session, user: User, key: str, request_hash: str) -> Job | None:
    job = s.scalars(_BY_KEY, {"owner": user.id, "key": key}).first()
    if job is not None and job.request_hash != request_hash:
        raise Invalid("this Idempotency-Key was used with a different request body", code="idempotency_mismatch")
    return job


def enqueue(s: Session, job: Job) -> None:
    """Publish the job id, just committed with ``enqueued_at`` set; if the broker is unreachable, clear it.

    ``enqueued_at`` is only the reconciler's hint (it publishes any queued job with no message in the broker once
    ``enqueued_at``, or ``created_at``, is a few seconds old; a second message for a job is dropped by the worker).
    Writing it with the row, not after the publish, spares every submission a second commit; a web process that
    dies between its commit and its publish leaves a job with the hint and no message, which the reconciler sends.
    """
    if not publish(job.id, job.kind, job.queue, job.priority):
        s.execute(update(Job).where(Job.id == job.id).values(enqueued_at=None))
        s.commit()


def get_job(s: Session, user: User, job_id: str, lock: bool = False) -> Job:
    stmt = select(Job).where(Job.id == job_id)
    if not user.is_admin:
        stmt = stmt.where(Job.owner_id == user.id)
    if lock:
        stmt = stmt.with_for_update()
    job = s.scalars(stmt).first()
    if job is None:
        raise NotFound(f"no job {job_id!r}")
    return job


def cancel_job(s: Session, user: User, job_id: str) -> Job:
    """Queued → cancelled at once; running → cancelling (the worker stops between steps); finished → 409."""
    job = get_job(s, user, job_id, lock=True)
    try:
        lifecycle.request_cancel(s, job)
    except lifecycle.JobFinished as exc:
        raise Conflict(str(exc), code="job_finished") from exc
    s.commit()
    s.refresh(job)
    return job


def retry_job(s: Session, user: User, job_id: str) -> Job:
    """A new job with the same kind, params, priority, metadata and webhook (re-admitted: models and datasets must
    still exist)."""
    old = get_job(s, user, job_id)
    body = {
        "kind": old.kind,
        "params": old.params,
        "priority": old.priority,
        "queue": old.queue,
        "metadata": dict(old.meta or {}),
    }
    if old.webhook_url:
        body["webhook_url"] = old.webhook_url
    if old.webhook_events:
        body["webhook_events"] = old.webhook_events
    job, _ = create_job(s, user, body, retry_of=old.id)
    return job
