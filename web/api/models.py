"""The model registry: list, get, download (a tar of the model's safetensors directory)."""

from __future__ import annotations

from flask import Response, g, jsonify, request, stream_with_context
from sqlalchemy import select

from shared.model_refs import find_model, visible
from shared.models import Model, ModelKind
from web.api import bp
from web.db import db_session
from web.errors import Invalid, NotFound
from web.serializers import model_json
from web.services.model_download import archive_name, plan, tar_size, tar_stream


@bp.get("/models")
def list_models():
    stmt = select(Model).where(visible(g.user)).order_by(Model.created_at.desc(), Model.id)
    if kind := request.args.get("kind"):
        if kind not in ModelKind.ALL:
            raise Invalid(f"`kind` must be one of {', '.join(ModelKind.ALL)}", code="invalid_query")
        stmt = stmt.where(Model.kind == kind)
    return jsonify({"items": [model_json(m) for m in db_session().scalars(stmt)], "next_cursor": None})


def _model(model_id: str) -> Model:
    model = find_model(db_session(), model_id, g.user)
    if model is None:
        raise NotFound(f"no model {model_id!r}")
    return model


@bp.get("/models/<model_id>")
def get_model(model_id: str):
    return jsonify(model_json(_model(model_id)))


@bp.get("/models/<model_id>/download")
def download_model(model_id: str):
    """A tar with one directory, ``<name>/``, that ``from_pretrained`` (or the GAN loader) opens as it is."""
    model = _model(model_id)
    entries = plan(model)
    db_session().close()  # the files are streamed after the request's work: no connection held meanwhile
    resp = Response(stream_with_context(tar_stream(entries)), mimetype="application/x-tar")
    resp.headers["Content-Length"] = str(tar_size(entries))
    resp.headers["Content-Disposition"] = f'attachment; filename="{archive_name(model)}.tar"'
    return resp
