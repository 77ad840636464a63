"""The submit page: one form per job kind, validated by the same code as ``POST /api/v1/jobs``."""

from __future__ import annotations

import logging
import uuid

from flask import g, redirect, render_template, request, url_for

from shared.kinds import PARAMS_BY_KIND
from web.dashboard import bp
from web.dashboard.format import human_bytes, kind_label
from web.dashboard.forms import FormField, build_fields, fill, parse, place_errors
from web.dashboard.internal import api_json
from web.db import db_session
from web.errors import ApiError
from web.services.datasets import upload
from web.services.jobs import create_job
from web.services.limits import check_rate

logger = logging.getLogger(__name__)

DEFAULT_KIND = "text.generate"


def _choices() -> dict[str, list[tuple[str, str]]]:
    """Options for the model and dataset selects, from the registry and the user's datasets."""
    models = api_json("api.list_models")["items"]
    datasets = api_json("api.list_datasets")["items"]

    def model_opts(kind: str) -> list[tuple[str, str]]:
        return [(m["name"], f"{m['name']} ({m['source']})") for m in models if m["kind"] == kind]

    def dataset_opts(kind: str) -> list[tuple[str, str]]:
        return [(d["id"], f"{d['name']} · {human_bytes(d['size'])}") for d in datasets if d["kind"] == kind]

    return {
        "lm_models": model_opts("causal-lm"),
        "gan_models": model_opts("gan-generator"),
        "text_datasets": dataset_opts("text"),
        "image_datasets": dataset_opts("images"),
        "taggers": model_opts("token-classifier"),
        "tagger_bases": model_opts("encoder") + model_opts("token-classifier"),
        "tagged_datasets": dataset_opts("tagged"),
    }


def _render(
    kind: str, fields: list[FormField], errors: list[str] | None = None, clone: dict | None = None, status: int = 200
):
    kinds = [(k, kind_label(k)) for k in PARAMS_BY_KIND]
    return render_template(
        "submit.html",
        kind=kind,
        kinds=kinds,
        main=[f for f in fields if not f.advanced],
        advanced=[f for f in fields if f.advanced],
        errors=errors or [],
        clone=clone,
        idempotency_key=uuid.uuid4().hex,
        advanced_open=any(f.error for f in fields if f.advanced),
    ), status


def _attach_upload(kind: str, params: dict, fields: list[FormField]) -> bool:
    """A prompt file becomes a dataset (as ``POST /datasets`` would store it); False if it was refused."""
    file = request.files.get("prompts_file") if kind == "text.generate" else None
    if file is None or not file.filename:
        return True
    try:
        ds, _ = upload(db_session(), g.user, file, None)
    except ApiError as exc:
        db_session().rollback()
        next(f for f in fields if f.name == "prompts").error = f"Prompt file: {exc.message}"
        return False
    params["dataset_id"] = ds.id
    return True


@bp.route("/submit", methods=["GET", "POST"])
def submit():
    kind, values, clone = request.values.get("kind"), {}, None
    if request.method == "GET" and request.args.get("clone"):
        clone = api_json("api.get", job_id=request.args["clone"])
        kind = clone["kind"]
        values = {
            **clone["params"],
            "priority": clone["priority"],
            "queue": clone["queue"],
            "metadata": clone.get("metadata") or None,
            "webhook_url": clone.get("webhook_url"),
        }
    if kind not in PARAMS_BY_KIND:
        kind = DEFAULT_KIND
    fields = build_fields(kind, _choices())
    if request.method == "GET":
        names = {f.name for f in fields}
        fill(fields, {**values, **{k: v for k, v in request.args.items() if k in names}})
        return _render(kind, fields, clone=clone)
    fill(fields, request.form, posted=True)
    params, envelope = parse(fields, request.form)
    if not _attach_upload(kind, params, fields):
        return _render(kind, fields, status=422)
    body = {"kind": kind, "params": params, **envelope}
    try:
        check_rate(g.user)
        job, _ = create_job(db_session(), g.user, body, request.form.get("idempotency_key") or None)
    except ApiError as exc:
        db_session().rollback()
        errors = place_errors(fields, exc.details, exc.message)
        return _render(kind, fields, errors=errors, status=exc.status)
    logger.info("dashboard: %s submitted %s %s", g.user.name, kind, job.id)
    return redirect(url_for("dashboard.job", job_id=job.id), code=303)
