"""Resolving a ``model`` param (registry id, registry name) to a registry row the user may use.

The registry is the allow-list: hub models appear as built-in rows (``gpt2``, ``distilgpt2``), trained models when
their job succeeds, local directories when an operator registers them (``genqueue models add``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from functools import lru_cache
from pathlib import Path

from sqlalchemy import bindparam, or_, select
from sqlalchemy.orm import Session

from shared.models import Model, User
from shared.objcache import get_cache
from shared.storage import get_storage


def visible(user: User):
    """A filter for models ``user`` may see: built-ins (no owner), their own, or all for admins."""
    if user.is_admin:
        return True
    return or_(Model.owner_id.is_(None), Model.owner_id == user.id)


# Built once, run with parameters: every submission resolves its model, and building the statement anew each time
# cost more CPU than running it.
_BY_REF = select(Model).where(or_(Model.id == bindparam("ref"), Model.name == bindparam("ref"))).limit(1)
_BY_REF_VISIBLE = _BY_REF.where(or_(Model.owner_id.is_(None), Model.owner_id == bindparam("user_id")))


def find_model(session: Session, ref: str, user: User) -> Model | None:
    """The registry model named or identified by ``ref`` that ``user`` can see (:func:`visible`), or None."""
    if user.is_admin:
        return session.scalars(_BY_REF, {"ref": ref}).first()
    return session.scalars(_BY_REF_VISIBLE, {"ref": ref, "user_id": user.id}).first()


# find_model for a user known by id only (a worker running that user's job): one statement, no User row loaded.
_BY_REF_FOR_OWNER = (
    select(Model)
    .join(User, User.id == bindparam("user_id"))
    .where(or_(Model.id == bindparam("ref"), Model.name == bindparam("ref")))
    .where(or_(User.is_admin, Model.owner_id.is_(None), Model.owner_id == User.id))
    .limit(1)
)


def find_model_for_owner(session: Session, ref: str, user_id: str) -> Model | None:
    """:func:`find_model` for the user ``user_id`` (None also when that user no longer exists)."""
    return session.scalars(_BY_REF_FOR_OWNER, {"ref": ref, "user_id": user_id}).first()


# A registry row found for a submission or a job is reused for this long by the ones that follow on the same process
# with the same key (a stream of small jobs on one model would otherwise look it up once each, in the web and again
# in the worker). A model removed from the registry is thus still accepted, or used, for at most this long; an
# unknown ref is never remembered (it is refused at once, however recently it was looked up).
RECENT_SECONDS = 2.0
_recent: dict[Hashable, tuple[float, Model]] = {}


def recent_model(session: Session, key: Hashable, find: Callable[[], Model | None]) -> Model | None:
    """``find()``'s model, or the one it returned for ``key`` less than :data:`RECENT_SECONDS` ago. The model is
    detached from ``session`` (it is shared by the requests and jobs that follow, read-only)."""
    now, hit = time.monotonic(), _recent.get(key)
    if hit is not None and now - hit[0] < RECENT_SECONDS:
        return hit[1]
    model = find()
    if model is not None:
        session.expunge(model)
        if len(_recent) > 256:
            _recent.clear()
        _recent[key] = (now, model)
    return model


def find_model_recent(session: Session, ref: str, user: User) -> Model | None:
    """:func:`find_model` through :func:`recent_model` (per user: what a user may see is theirs)."""
    return recent_model(session, ("user", ref, user.id, user.is_admin), lambda: find_model(session, ref, user))


def find_model_for_owner_recent(session: Session, ref: str, user_id: str) -> Model | None:
    """:func:`find_model_for_owner` through :func:`recent_model`."""
    return recent_model(session, ("owner", ref, user_id), lambda: find_model_for_owner(session, ref, user_id))


def model_source(model: Model) -> str:
    """Where the weights are: a local directory, or the hub id (loaded online or from the local HF cache).

    A model kept in the object store (``object_key``) is fetched into this host's cache first.
    """
    if model.object_key:
        return str(get_cache().tree(model.object_key))
    return model.path or model.hub_id or model.name


def stored_file(model: Model, name: str) -> Path | None:
    """A local copy of one file of ``model`` (a stored model's through the cache, not the whole directory)."""
    if model.object_key:
        meta = _stored_files(model.object_key).get(name)
        return get_cache().file(f"{model.object_key}/{name}", meta["sha256"]) if meta else None
    return Path(model.path, name) if model.path else None


@lru_cache(maxsize=64)
def _stored_files(object_key: str) -> dict:
    """The files of a stored model, from its manifest: read once a process (a model's objects are written once, under
    its own id, and never changed), not once a submission."""
    return get_storage().manifest(object_key)[0]["files"]
