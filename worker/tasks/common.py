"""Helpers the thin task modules share: running a task's job, looking up the job's user, model and dataset rows."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from shared.db import session_scope
from shared.kinds import KINDS, JobKind
from shared.model_refs import find_model_for_owner_recent, model_source
from shared.models import Dataset, Model, User
from shared.objcache import get_cache
from shared.storage import ObjectMissing, get_storage
from worker.context import JobContext, UserError
from worker.devices import current_device, reserve_devices
from worker.ml.common import Device
from worker.runtime import Handler, KindPolicy, delivery_tag_of, run_job


def kind_of(module: str) -> JobKind:
    """The registry entry of the task module ``module`` (``__name__``): its task name and default timeout."""
    return next(k for k in KINDS.values() if k.module == module)


def policy_of(
    kind: JobKind,
    transient: tuple[type[BaseException], ...] = (),
    devices: Callable[[dict[str, Any], Any], int] | None = None,
) -> KindPolicy:
    """The runtime policy of ``kind``: the registry's default timeout plus the kind's own transient errors and, for a
    kind that can hold more than one GPU, how many a job holds (:class:`worker.runtime.KindPolicy`)."""
    return KindPolicy(default_timeout_seconds=kind.default_timeout_seconds, transient=transient, devices=devices)


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
    """The registry row the job refers to (it was checked at submit; it may have been removed since: a row found for
    the same owner and ref a moment ago is reused, :func:`shared.model_refs.recent_model`)."""
    with session_scope() as s:
        model = find_model_for_owner_recent(s, ref, ctx.owner_id)
    if model is None or model.kind != kind:
        raise UserError("unknown_model", f"model {ref!r} is not in the registry (any more)")
    return model


def load_dataset_row(ctx: JobContext, ds_id: str) -> tuple[Dataset, Path]:
    with session_scope() as s:
        ds = s.get(Dataset, ds_id)
        if ds is None or ds.owner_id != ctx.owner_id and not _is_admin(s, ctx.owner_id):
            raise UserError("unknown_dataset", f"dataset {ds_id!r} no longer exists")
        s.expunge(ds)
    try:  # through this host's cache, verified against the sha256 recorded at upload
        return ds, get_cache().file(ds.path, ds.sha256)
    except ObjectMissing as exc:
        raise UserError("dataset_missing", f"the stored file of dataset {ds_id!r} is missing") from exc


def _is_admin(s, user_id: str) -> bool:
    user = s.get(User, user_id)
    return bool(user and user.is_admin)


def hub_online() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("1", "true", "True")


def weights_source(model: Model) -> str:
    """A local directory (a stored model through this host's cache) or a hub id; a stored model whose files are
    gone fails the job at once (retrying cannot bring them back)."""
    try:
        return model_source(model)
    except ObjectMissing as exc:
        raise UserError("model_files_missing", f"the stored files of model {model.name!r} are missing") from exc


@contextmanager
def training_errors(base_name: str, *invalid: type[Exception]) -> Iterator[None]:
    """A training's own refusals (``invalid``: too little data, a block size the base cannot take...) end the job as
    ``invalid_params``; a base model that cannot be loaded (a hub id neither cached nor reachable) as
    ``model_unavailable``. Both are the user's to fix: no retry."""
    try:
        yield
    except invalid as exc:
        raise UserError("invalid_params", str(exc)) from exc
    except OSError as exc:
        raise UserError("model_unavailable", f"cannot load {base_name!r}: {exc}") from exc


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


def register_model(ctx: JobContext, path: Path, **fields) -> str:
    """Upload the model directory ``path`` to ``models/<id>/`` and register it in a fenced transaction (a stale
    attempt registers nothing, and its upload is deleted); returns its id."""
    from shared.ids import new_id
    from shared.registration import register_trained
    from worker.fencing import Fenced, guard

    model_id, store = new_id("mdl"), get_storage()
    key = f"models/{model_id}"
    store.put_dir(key, path)
    try:
        with session_scope() as s:
            guard(s, ctx.job_id, ctx.attempt)
            register_trained(
                s, model_id=model_id, object_key=key, path=path, owner_id=ctx.owner_id, job_id=ctx.job_id, **fields
            )
    except Fenced:
        store.delete(key)
        raise
    return model_id
