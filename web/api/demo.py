"""The first-run demo: ``POST /demo`` queues the two training jobs, ``POST /demo/followup`` their generation jobs."""

from __future__ import annotations

from flask import g, jsonify, request
from pydantic import ValidationError

from shared.schemas.api import DemoRequest, FollowupRequest
from web.api import bp
from web.db import db_session
from web.errors import Invalid
from web.security import json_body
from web.serializers import dataset_json, job_json
from web.services import demo
from web.services.jobs import pydantic_details
from web.services.limits import check_rate


def _parse(model, empty_ok: bool):
    body = json_body()
    if body is None and empty_ok and not request.get_data(cache=True):
        body = {}  # no body at all: the defaults
    if not isinstance(body, dict):
        raise Invalid("the request body must be a JSON object", code="invalid_body")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise Invalid("invalid demo request", details=pydantic_details(exc)) from exc


@bp.post("/demo")
def start_demo():
    req = _parse(DemoRequest, empty_ok=True)
    s = db_session()
    check_rate(g.user)
    dataset, jobs = demo.start(s, g.user, req)
    return jsonify({"dataset": dataset_json(dataset), "jobs": [job_json(j) for j in jobs]}), 201


@bp.post("/demo/followup")
def demo_followup():
    req = _parse(FollowupRequest, empty_ok=False)
    s = db_session()
    train = demo.finished_training(s, g.user, req)  # a 404/409 before it can count against the limits
    check_rate(g.user)
    job, created = demo.followup(s, g.user, train)
    return jsonify(job_json(job)), 201 if created else 200
