"""Datasets: upload (multipart ``file``), list, get, delete."""

from __future__ import annotations

from typing import get_args

from flask import g, jsonify, request
from sqlalchemy import select

from shared.models import Dataset
from shared.schemas.api import DatasetKind
from web.api import bp
from web.db import db_session
from web.errors import Invalid, NotFound
from web.security import bad_text
from web.serializers import dataset_json
from web.services.cleanup import delete_dataset
from web.services.datasets import upload
from web.services.limits import check_rate


@bp.post("/datasets")
def upload_dataset():
    check_rate(g.user)  # before the body is read: a refused upload costs no disk
    file, name = request.files.get("file"), request.form.get("name")
    if bad_text(name) or (file is not None and bad_text(file.filename or "")):
        raise Invalid("the file name and `name` must not contain NUL characters", code="invalid_body")
    ds, created = upload(db_session(), g.user, file, name)
    return jsonify(dataset_json(ds)), 201 if created else 200


@bp.get("/datasets")
def list_datasets():
    stmt = select(Dataset).order_by(Dataset.id.desc())
    if not g.user.is_admin:
        stmt = stmt.where(Dataset.owner_id == g.user.id)
    if kind := request.args.get("kind"):
        if kind not in get_args(DatasetKind):
            raise Invalid(f"`kind` must be one of {', '.join(get_args(DatasetKind))}", code="invalid_query")
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


@bp.delete("/datasets/<dataset_id>")
def remove_dataset(dataset_id: str):
    delete_dataset(db_session(), g.user, dataset_id)
    return jsonify({"id": dataset_id, "deleted": True})
