"""The model registry."""

from __future__ import annotations

from flask import g, jsonify, request
from sqlalchemy import select

from shared.model_refs import find_model, visible
from shared.models import Model
from web.api import bp
from web.db import db_session
from web.errors import NotFound
from web.serializers import model_json


@bp.get("/models")
def list_models():
    stmt = select(Model).where(visible(g.user)).order_by(Model.created_at.desc(), Model.id)
    if kind := request.args.get("kind"):
        stmt = stmt.where(Model.kind == kind)
    return jsonify({"items": [model_json(m) for m in db_session().scalars(stmt)], "next_cursor": None})


@bp.get("/models/<model_id>")
def get_model(model_id: str):
    model = find_model(db_session(), model_id, g.user)
    if model is None:
        raise NotFound(f"no model {model_id!r}")
    return jsonify(model_json(model))
