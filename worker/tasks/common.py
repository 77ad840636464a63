"""Helpers the thin task modules share: running a task's job, looking up the job's user, model and dataset rows."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from shared.artifacts import ArtifactStore
from shared.db import session_scope
from shared.model_refs import find_model, model_source
from shared.models import Dataset, Model, User
from worker.context import JobContext, UserError
from worker.devices import current_device, reserve_devices
from worker.ml.common import Device
from worker.runtime import Handler, KindPolicy, delivery_tag_of, run_job


def run_task(request, job_id: str, handler: Handler, policy: KindPolicy) -> str:
    """Run ``job_id`` for a Celery task ``request``: its worker's name, this host's device, its message's tag; the
    handler holds the job's GPUs while it runs (:func:`holding_devices`)."""
    return run_job(
        job_id,
        holding_devices(handler, policy),
        policy,
        worker=request.hostname or "worker",
        device=current_device().name,
        delivery_tag=delivery_tag_of(request),
    )


def holding_devices(
    handler: Handler, policy: KindPolicy, device: Callable[[], Device] = current_device, root: Path | None = None
) -> Handler:
    """``handler`` run while its job holds the worker's GPUs (:func:`worker.devices.reserve_devices`): every kind's
    job takes its device shared (so a multi-GPU job, which takes its GPUs exclusively, never shares one with any
    other job), ``policy.devices(params, device)`` of them (1 without it). A CPU worker reserves nothing. ``root``:
    where the lock files are (default: the data dir's ``locks``)."""

    def held(ctx: JobContext):
        dev = device()
        n = policy.devices(ctx.params, dev) if policy.devices else 1
        with reserve_devices(dev, n, wait=ctx.check_stop, root=root):
            return handler(ctx)

    return held


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


def unique_model_name(wanted: str | None, default: str) -> str:
    """``wanted`` if free (it was checked at submit; a race may have taken it), else ``default`` with a suffix."""
    from sqlalchemy import select

    from shared.models import Model

    base = wanted or default
    with session_scope() as s:
        taken = set(s.scalars(select(Model.name).where(Model.name.like(f"{base}%"))))
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


def register_model(ctx: JobContext, **fields) -> str:
    """Register the job's model in a fenced transaction (a stale attempt registers nothing); returns its id."""
    from shared.registration import register_trained
    from worker.fencing import guard

    with session_scope() as s:
        guard(s, ctx.job_id, ctx.attempt)
        model = register_trained(s, owner_id=ctx.owner_id, job_id=ctx.job_id, **fields)
        return model.id
