"""Bearer-token authentication for the API (the dashboard's session login builds on the same lookup)."""

from __future__ import annotations

from datetime import timedelta

from flask import g, request, session

from shared.timeutil import utcnow
from shared.users import user_for_token
from web.db import db_session
from web.errors import Forbidden, Unauthorized


def authenticate() -> None:
    """Set ``g.user`` from ``Authorization: Bearer``, or from the dashboard session cookie; 401/403 otherwise."""
    header = request.headers.get("Authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else None
    if token is None and session.get("token_hash"):
        _from_session()
        return _check_csrf()
    if not token:
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
    user, tok = user_for_token(db_session(), token)
    if user is None:
        raise Unauthorized("unknown token")
    if tok.revoked_at is not None:
        raise Forbidden("this token was revoked", code="token_revoked")
    g.user = user
    g.token_id = tok.id
    touch_token(tok)


def _from_session() -> None:
    from sqlalchemy import select

    from shared.models import ApiToken, User

    row = (
        db_session()
        .execute(
            select(User, ApiToken)
            .join(ApiToken, ApiToken.user_id == User.id)
            .where(ApiToken.token_hash == session["token_hash"])
        )
        .first()
    )
    if row is None or row[1].revoked_at is not None:
        session.clear()
        raise Unauthorized("session expired; log in again")
    g.user, g.token_id = row[0], row[1].id
    touch_token(row[1])


def authenticate_session() -> None:
    """The dashboard's pages: the session cookie only (the dashboard checks its forms' CSRF field itself)."""
    if not session.get("token_hash"):
        raise Unauthorized("not logged in")
    _from_session()


def _check_csrf() -> None:
    """A state-changing request authenticated by the session cookie must carry the session's CSRF token."""
    from web.csrf import HEADER, is_valid, needs_check

    if needs_check() and not is_valid(request.headers.get(HEADER)):
        raise Forbidden(f"missing or invalid CSRF token (send the {HEADER} header)", code="csrf_failed")


TOUCH_EVERY = timedelta(seconds=60)


def touch_token(tok) -> None:
    """Record when a token was last used (``genqueue users tokens``), at most once a minute per token."""
    from sqlalchemy import func, update

    from shared.models import ApiToken

    if tok.last_used_at is not None and utcnow() - tok.last_used_at < TOUCH_EVERY:
        return
    s = db_session()
    s.execute(update(ApiToken).where(ApiToken.id == tok.id).values(last_used_at=func.now()))
    s.commit()
