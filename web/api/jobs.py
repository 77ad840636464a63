"""Jobs: create, list, get, cancel, retry, delete, events, metrics, results, artifacts."""

from __future__ import annotations

import csv
import io
import json

from flask import Response, g, jsonify, request, send_file
from sqlalchemy import select

from shared.kinds import KINDS
from shared.models import Artifact, GenerationResult, Job, JobEvent, JobStatus
from shared.provenance import CSV_COLUMNS, csv_columns, label_row
from shared.storage import get_storage
from shared.timeutil import iso
from web.api import bp, page_limit
from web.db import db_session
from web.errors import Invalid, NotFound
from web.security import bad_text, json_body
from web.serializers import artifact_json, event_json, job_json, result_json
from web.services.cleanup import delete_job
from web.services.jobs import cancel_job, create_job, get_job, retry_job
from web.services.limits import check_rate
from web.services.metadata import filter_by_metadata
from web.services.metrics import metric_series
from web.services.provenance import job_provenance, results_zip
from web.services.tag_results import tag_csv, tag_rows


def _json_body():
    body = json_body()
    if body is None:
        raise Invalid("the request body must be JSON (Content-Type: application/json)", code="invalid_body")
    return body


@bp.post("/jobs")
def create():
    key = request.headers.get("Idempotency-Key")
    if key is not None and (not 1 <= len(key) <= 200 or bad_text(key)):
        raise Invalid("Idempotency-Key must be 1 to 200 characters, without NUL", code="invalid_header")
    check_rate(g.user)
    job, created = create_job(db_session(), g.user, _json_body(), key)
    return jsonify(job_json(job)), 201 if created else 200


@bp.get("/jobs")
def list_jobs():
    s, limit = db_session(), page_limit()
    stmt = select(Job).order_by(Job.id.desc()).limit(limit + 1)
    if not g.user.is_admin:
        stmt = stmt.where(Job.owner_id == g.user.id)
    if status := request.args.get("status"):
        wanted = status.split(",")
        if not set(wanted) <= set(JobStatus):
            raise Invalid(f"`status` must be among {', '.join(JobStatus)}", code="invalid_query")
        stmt = stmt.where(Job.status.in_(wanted))
    if kind := request.args.get("kind"):
        stmt = stmt.where(Job.kind == kind)
    if q := request.args.get("q"):
        stmt = stmt.where(Job.search_text.ilike(f"%{_escape_like(q)}%", escape="\\") | (Job.id == q))
    if cursor := request.args.get("cursor"):
        stmt = stmt.where(Job.id < cursor)
    stmt = filter_by_metadata(stmt, request.args)
    rows = s.scalars(stmt).all()
    items = rows[:limit]
    next_cursor = items[-1].id if len(rows) > limit else None
    return jsonify({"items": [job_json(j) for j in items], "next_cursor": next_cursor})


def _escape_like(q: str) -> str:
    return q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@bp.get("/jobs/<job_id>")
def get(job_id: str):
    return jsonify(job_json(get_job(db_session(), g.user, job_id)))


@bp.post("/jobs/<job_id>/cancel")
def cancel(job_id: str):
    return jsonify(job_json(cancel_job(db_session(), g.user, job_id))), 202


@bp.post("/jobs/<job_id>/retry")
def retry(job_id: str):
    s = db_session()
    get_job(s, g.user, job_id)  # someone else's job is a 404, before it can count against the limits
    check_rate(g.user)
    return jsonify(job_json(retry_job(s, g.user, job_id))), 201


@bp.delete("/jobs/<job_id>")
def delete(job_id: str):
    with_model = request.args.get("with_model", "false")
    if with_model not in ("true", "false", "1", "0"):
        raise Invalid("`with_model` must be true or false", code="invalid_query")
    gone = delete_job(db_session(), g.user, job_id, with_model=with_model in ("true", "1"))
    return jsonify({"id": job_id, "deleted": True, **{k: v for k, v in gone.items() if k != "job_id"}})


MAX_INT = 2**63 - 1  # what a Postgres bigint (an id, an OFFSET, a LIMIT) can hold


def _int_arg(name: str, default: int | None, minimum: int = 0, maximum: int = MAX_INT) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise Invalid(f"`{name}` must be an integer", code="invalid_query") from exc
    if not minimum <= value <= maximum:
        raise Invalid(f"`{name}` must be between {minimum} and {maximum}", code="invalid_query")
    return value


@bp.get("/jobs/<job_id>/events")
def events(job_id: str):
    s = db_session()
    get_job(s, g.user, job_id)
    after, limit = _int_arg("after", 0), page_limit(500, 5000)
    stmt = select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.id > after)
    if etype := request.args.get("type"):
        stmt = stmt.where(JobEvent.type.in_(etype.split(",")))
    rows = s.scalars(stmt.order_by(JobEvent.id).limit(limit)).all()
    next_after = rows[-1].id if rows else after
    return jsonify({"items": [event_json(e) for e in rows], "next_after": next_after})


@bp.get("/jobs/<job_id>/metrics")
def metrics(job_id: str):
    """Every metric series of the job by step, downsampled to about ``points`` points (min/max per bucket)."""
    s = db_session()
    get_job(s, g.user, job_id)
    points = _int_arg("points", 2000, minimum=10, maximum=20_000)
    return jsonify({"job_id": job_id, "series": metric_series(s, job_id, max(1, points // 2))})


@bp.get("/jobs/<job_id>/results")
def results(job_id: str):
    s = db_session()
    job = get_job(s, g.user, job_id)
    fmt = request.args.get("format", "jsonl")
    if fmt not in ("jsonl", "csv", "json", "zip"):
        raise Invalid("`format` must be jsonl, csv, json or zip", code="invalid_query")
    offset, limit = _int_arg("offset", 0), _int_arg("limit", None, minimum=1)
    kind = KINDS.get(job.kind)
    if kind is not None and kind.results == "tags":
        return _tag_results(job_id, fmt, offset, limit)
    stmt = select(GenerationResult).where(GenerationResult.job_id == job_id)
    stmt = stmt.order_by(GenerationResult.prompt_index, GenerationResult.sequence).offset(offset).limit(limit)
    prov = job_provenance(s, job)  # every row is labelled AI-generated, with its provenance (shared/provenance.py)
    rows = [label_row(result_json(r), {**prov, "created_at": iso(r.created_at)}) for r in s.scalars(stmt)]
    if fmt == "json":
        return jsonify({"items": rows, "offset": offset})
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(
            buf, fieldnames=["index", "sequence", "id", "prompt", "text", "tokens", "finish_reason", *CSV_COLUMNS]
        )
        writer.writeheader()
        writer.writerows(csv_columns(r) for r in rows)
        return _download(buf.getvalue(), "text/csv", f"{job_id}.csv")
    jsonl = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if fmt == "zip":
        return _download(results_zip(jsonl, prov), "application/zip", f"{job_id}-results.zip")
    return _download(jsonl, "application/x-ndjson", f"{job_id}.jsonl")


def _tag_results(job_id: str, fmt: str, offset: int, limit: int | None) -> Response:
    if fmt == "zip":
        raise Invalid("tagging results come as jsonl, csv or json", code="invalid_query")
    rows = tag_rows(db_session(), job_id, offset, limit)
    if fmt == "json":
        return jsonify({"items": rows, "offset": offset})
    if fmt == "csv":
        return _download(tag_csv(rows), "text/csv", f"{job_id}.csv")
    jsonl = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return _download(jsonl, "application/x-ndjson", f"{job_id}.jsonl")


def _download(body: str | bytes, mimetype: str, filename: str) -> Response:
    resp = Response(body, mimetype=mimetype)
    resp.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return resp


@bp.get("/jobs/<job_id>/artifacts")
def artifacts(job_id: str):
    s = db_session()
    get_job(s, g.user, job_id)
    stmt = select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.created_at, Artifact.id)
    if role := request.args.get("role"):
        stmt = stmt.where(Artifact.role == role)
    return jsonify({"items": [artifact_json(a) for a in s.scalars(stmt)], "next_cursor": None})


@bp.get("/artifacts/<artifact_id>")
def download_artifact(artifact_id: str):
    s = db_session()
    stmt = select(Artifact).where(Artifact.id == artifact_id)
    if not g.user.is_admin:
        stmt = stmt.where(Artifact.owner_id == g.user.id)
    art = s.scalars(stmt).first()
    if art is None:
        raise NotFound(f"no artifact {artifact_id!r}")
    if request.args.get("inline", "0") not in ("0", "1"):
        raise Invalid("`inline` must be 0 or 1", code="invalid_query")
    inline = request.args.get("inline") == "1" and art.content_type.startswith("image/")
    return send_file(
        get_storage().open(art.path),  # a missing object raises ObjectMissing: 410, see web/errors.py
        mimetype=art.content_type,
        as_attachment=not inline,
        download_name=art.name,
        etag=art.sha256,
        max_age=3600,
    )
