"""The dashboard's read pages: jobs, one job, models, datasets (with upload) and the system view."""

from __future__ import annotations

import json
import logging

from flask import flash, g, redirect, render_template, request, url_for

from shared.kinds import KINDS, PARAMS_BY_KIND
from shared.models import JobStatus
from shared.models.jobs import ACTIVE
from web.dashboard import bp
from web.dashboard.format import kind_label
from web.dashboard.internal import api_json
from web.db import db_session
from web.errors import ApiError
from web.services.datasets import upload
from web.services.limits import check_rate

logger = logging.getLogger(__name__)

JOBS_PAGE = 25
RESULTS_PAGE = 25
PROMPTS_PREVIEW = 50
ACTIVE_FILTER = ",".join(ACTIVE)
FOLDED_ROLES = ("sample", "image")  # many per job: shown in the slider / gallery, counted in the artifact list


def _status_options() -> list[tuple[str, str]]:
    return [(ACTIVE_FILTER, "Active (queued, running, cancelling)"), *[(s, s) for s in JobStatus]]


def _filters() -> dict[str, str | None]:
    """The list's query, with unknown statuses and kinds dropped rather than turned into an error page."""
    status = request.args.get("status") or None
    if status and not set(status.split(",")) <= set(JobStatus):
        status = None
    kind = request.args.get("kind") or None
    if kind and kind not in PARAMS_BY_KIND:
        kind = None
    q = (request.args.get("q") or "").strip()[:500] or None
    meta = (request.args.get("meta") or "").strip()[:2000] or None
    return {"status": status, "kind": kind, "q": q, "meta": meta, "cursor": request.args.get("cursor") or None}


def metadata_args(meta: str | None) -> dict[str, str]:
    """The Metadata filter (``key=value``, several comma-separated) as the API's ``metadata.KEY=VALUE`` args."""
    pairs = (p.partition("=") for p in (meta or "").split(","))
    return {f"metadata.{k.strip()}": v.strip() for k, sep, v in pairs if sep and k.strip()}


@bp.get("/")
def jobs():
    filters = _filters()
    query = {k: v for k, v in filters.items() if k != "meta"} | metadata_args(filters["meta"])
    data = api_json("api.list_jobs", {**query, "limit": JOBS_PAGE})
    kinds = [(k, kind_label(k)) for k in PARAMS_BY_KIND]
    return render_template(
        "jobs.html",
        jobs=data["items"],
        next_cursor=data["next_cursor"],
        filters=filters,
        limit=JOBS_PAGE,
        status_options=_status_options(),
        kind_options=kinds,
    )


def _timeline(job_id: str) -> list[dict]:
    events = api_json("api.events", {"type": "status", "limit": 200}, job_id=job_id)["items"]
    return [
        {"status": (e.get("data") or {}).get("status", ""), "message": e.get("message") or "", "at": e["at"]}
        for e in events
    ]


def _params_view(params: dict) -> tuple[list[tuple[str, str]], list[str], int]:
    """(key, shown value) pairs, plus the first prompts apart: a job may hold thousands of them."""
    shown, prompts = [], []
    for key, value in params.items():
        if key == "prompts" and isinstance(value, list):
            prompts = [p if isinstance(p, str) else f"{p.get('prompt', '')}  [id {p.get('id')}]" for p in value]
            shown.append((key, f"{len(value)} prompt{'s' if len(value) != 1 else ''} (listed below)"))
        elif isinstance(value, dict | list):
            shown.append((key, json.dumps(value, ensure_ascii=False)))
        else:
            shown.append((key, str(value)))
    return shown, prompts[:PROMPTS_PREVIEW], len(prompts)


@bp.get("/jobs/<job_id>")
def job(job_id: str):
    data = api_json("api.get", job_id=job_id)
    results, more = [], False
    kind = KINDS.get(data["kind"])
    if kind is not None and kind.results:
        page = api_json("api.results", {"format": "json", "limit": RESULTS_PAGE + 1}, job_id=job_id)["items"]
        results, more = page[:RESULTS_PAGE], len(page) > RESULTS_PAGE
    artifacts = api_json("api.artifacts", job_id=job_id)["items"]
    params, prompts, prompts_total = _params_view(data["params"])
    webhooks = api_json("api.job_webhooks", job_id=job_id)["items"]
    return render_template(
        "job.html",
        job=data,
        kind=kind,
        results=results,
        results_more=more,
        results_page=RESULTS_PAGE,
        artifacts=[a for a in artifacts if a["role"] not in FOLDED_ROLES][:100],
        timeline=_timeline(job_id),
        folded={role: sum(1 for a in artifacts if a["role"] == role) for role in FOLDED_ROLES},
        params=params,
        prompts=prompts,
        prompts_total=prompts_total,
        webhooks=webhooks,
    )


@bp.get("/models")
def models():
    items = api_json("api.list_models")["items"]
    datasets = {d["id"]: d for d in api_json("api.list_datasets")["items"]}
    return render_template("models.html", models=items, datasets=datasets)


@bp.route("/datasets", methods=["GET", "POST"])
def datasets():
    error, status = None, 200
    if request.method == "POST":
        try:
            check_rate(g.user)
            ds, created = upload(db_session(), g.user, request.files.get("file"), request.form.get("name") or None)
        except ApiError as exc:
            db_session().rollback()
            error, status = exc.message, exc.status
        else:
            flash(f"Uploaded {ds.name}." if created else f"{ds.name} was already uploaded (same content).", "success")
            return redirect(url_for("dashboard.datasets", _anchor=ds.id), code=303)
    items = api_json("api.list_datasets")["items"]
    return render_template("datasets.html", datasets=items, error=error), status


@bp.get("/system")
def system():
    return render_template("system.html", system=api_json("api.system"))


@bp.post("/demo")
def start_demo():
    """The empty jobs page's "Run the demo": the same plan as ``genqueue demo``, then the page that follows it."""
    from shared.schemas.api import DemoRequest
    from web.services import demo

    try:
        check_rate(g.user)
        _, jobs = demo.start(db_session(), g.user, DemoRequest())
    except ApiError as exc:
        db_session().rollback()
        flash(f"The demo could not start: {exc.message}", "error")
        return redirect(url_for("dashboard.jobs"), code=303)
    return redirect(url_for("dashboard.demo_page", jobs=",".join(j.id for j in jobs)), code=303)


# The demo's training jobs (LM, GAN, tagger): the page follows at most this many ids from its URL.
DEMO_TRAINING_JOBS = 3


@bp.get("/demo")
def demo_page():
    """Follows the demo's training jobs and, as each succeeds, queues its generation job (``POST /demo/followup``)."""
    ids = [i for i in request.args.get("jobs", "").split(",") if i][:DEMO_TRAINING_JOBS]
    jobs = [api_json("api.get", job_id=i) for i in ids]
    return render_template("demo.html", jobs=jobs)
