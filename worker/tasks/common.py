"""Helpers the thin task modules share: looking up the job's user, model and dataset rows."""

from __future__ import annotations

import os
from pathlib import Path

from shared.artifacts import ArtifactStore
from shared.db import session_scope
from shared.model_refs import find_model, model_source
from shared.models import Dataset, Model, User
from worker.context import JobContext, UserError


def load_model_row(ctx: JobContext, ref: str, kind: str) -> Model:
    """The registry row the job refers to (it was checked at submit; it may have been removed since)."""
    with session_scope() as s:
        user = s.get(User, ctx.owner_id)
        model = find_model(s, ref, user) if user else None
        if model is None or model.kind != kind:
            raise UserError("unknown_model", f"model {ref!r} is not in the registry (any more)")
        s.expunge(model)
        return model


def load_dataset_row(ctx: JobContext, ds_id: str) -> tuple[Dataset, Path]:
    with session_scope() as s:
        ds = s.get(Dataset, ds_id)
        if ds is None or ds.owner_id != ctx.owner_id and not _is_admin(s, ctx.owner_id):
            raise UserError("unknown_dataset", f"dataset {ds_id!r} no longer exists")
        s.expunge(ds)
    return ds, ArtifactStore().path(ds.path)


def _is_admin(s, user_id: str) -> bool:
    user = s.get(User, user_id)
    return bool(user and user.is_admin)


def hub_online() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("1", "true", "True")


def weights_source(model: Model) -> str:
    return model_source(model)
