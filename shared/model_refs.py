"""Resolving a ``model`` param (registry id, registry name) to a registry row the user may use.

The registry is the allow-list: hub models appear as built-in rows (``gpt2``, ``distilgpt2``), trained models when
their job succeeds, local directories when an operator registers them (``genqueue models add``).
"""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from shared.models import Model, User


def visible(user: User):
    """A filter for models ``user`` may see: built-ins (no owner), their own, or all for admins."""
    if user.is_admin:
        return True
    return or_(Model.owner_id.is_(None), Model.owner_id == user.id)


def find_model(session: Session, ref: str, user: User) -> Model | None:
    """The registry model named or identified by ``ref`` that ``user`` can see, or None."""
    stmt = select(Model).where(or_(Model.id == ref, Model.name == ref)).where(visible(user))
    return session.scalars(stmt).first()


def model_source(model: Model) -> str:
    """Where the weights are: a local directory, or the hub id (loaded online or from the local HF cache)."""
    return model.path or model.hub_id or model.name
