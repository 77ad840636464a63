"""Users and API tokens: creation (CLI, first start), lookup by token (web)."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from shared.ids import new_id
from shared.models import ApiToken, User


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_user(session: Session, name: str, is_admin: bool = False) -> User:
    """A new user; :class:`UserError` if the name is taken."""
    if session.scalars(select(User.id).where(User.name == name)).first() is not None:
        raise UserError(f"a user named {name!r} already exists")
    user = User(id=new_id("usr"), name=name, is_admin=is_admin)
    session.add(user)
    session.flush()
    return user


def issue_token(session: Session, user: User, name: str = "cli") -> str:
    """A new random token for ``user``; only its hash is stored, the token itself is returned once."""
    token = "gq_" + secrets.token_urlsafe(32)
    session.add(ApiToken(id=new_id("tok"), user_id=user.id, token_hash=hash_token(token), name=name))
    session.flush()
    return token


class UserError(ValueError):
    """A user command that cannot be done (an unknown user, a name already taken)."""


def get_user(session: Session, name: str) -> User:
    user = session.scalars(select(User).where(User.name == name)).first()
    if user is None:
        raise UserError(f"no user named {name!r}")
    return user


def list_tokens(session: Session, name: str) -> list[ApiToken]:
    """The tokens of user ``name``, oldest first (revoked ones included; the token values are never stored)."""
    user = get_user(session, name)
    return list(session.scalars(select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.created_at)))


# Built once (every API request runs it): building the statement anew each time cost more CPU than running it.
_BY_TOKEN_HASH = (
    select(User, ApiToken).join(ApiToken, ApiToken.user_id == User.id).where(ApiToken.token_hash == bindparam("h"))
)


def user_for_token(session: Session, token: str) -> tuple[User | None, ApiToken | None]:
    row = session.execute(_BY_TOKEN_HASH, {"h": hash_token(token)}).first()
    return (row[0], row[1]) if row else (None, None)


def revoke_token(session: Session, token: str) -> int:
    """Revoke by token value (or by token id ``tok_…``); returns how many were revoked."""
    from sqlalchemy import or_, update

    from shared.timeutil import utcnow

    result = session.execute(
        update(ApiToken)
        .where(or_(ApiToken.token_hash == hash_token(token), ApiToken.id == token), ApiToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return result.rowcount or 0
