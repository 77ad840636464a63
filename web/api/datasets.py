"""Datasets: upload (multipart ``file``) and list."""

from __future__ import annotations

from flask import g, jsonify, request
from sqlalchemy import select

from shared.models import Dataset
from web.api import bp
from web.db import db_session
from web.errors import NotFound
from web.serializers import dataset_json
from web.services.datasets import upload


@bp.post("/datasets")
def upload_dataset():
    ds, created = upload(db_session(), g.user, request.files.get("file"), request.form.get("name"))
    return jsonify(dataset_json(ds)), 201 if created else 200


@bp.get("/datasets")
def list_datasets():
    stmt = select(Dataset).order_by(Dataset.id.desc())
    if not g.user.is_admin:
        stmt = stmt.where(Dataset.owner_id == g.user.id)
    if kind := request.args.get("kind"):
        stmt = stmt.where(Dataset.kind == kind)
    return jsonify({"items": [dataset_json(d) for d in db_session().scalars(stmt)], "next_cursor": None})


@bp.get("/datasets/<dataset_id>")
def get_dataset(dataset_id: str):
    stmt = select(Dataset).where(Dataset.id == dataset_id)
    if not g.user.is_admin:
        stmt = stmt.where(Dataset.owner_id == g.user.id)
    ds = db_session().scalars(stmt).first()
    if ds is None:
        raise NotFound(f"no dataset {dataset_id!r}")
    return jsonify(dataset_json(ds))
