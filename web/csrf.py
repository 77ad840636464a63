"""CSRF tokens for the dashboard: one random token per session, sent back in forms and in ``X-CSRF-Token``.

Bearer-token API clients are not affected: a browser cannot attach an ``Authorization`` header cross-site, so only
requests authenticated by the session cookie need the token.
"""

from __future__ import annotations

import hmac
import secrets

from flask import request, session

SESSION_KEY = "csrf_token"
FORM_FIELD = "csrf_token"
HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


def csrf_token() -> str:
    """This session's token, created on first use (it is stored in the signed session cookie)."""
    token = session.get(SESSION_KEY)
    if not token:
        token = session[SESSION_KEY] = secrets.token_urlsafe(32)
    return token


def rotate() -> str:
    """A fresh token (at login, so a token seen before login is worthless after it)."""
    session[SESSION_KEY] = secrets.token_urlsafe(32)
    return session[SESSION_KEY]


def is_valid(candidate: str | None) -> bool:
    expected = session.get(SESSION_KEY)
    return bool(candidate and expected) and hmac.compare_digest(str(candidate), str(expected))


def request_token() -> str | None:
    """The token a request carries: the ``X-CSRF-Token`` header, else the form field."""
    return request.headers.get(HEADER) or request.form.get(FORM_FIELD)


def needs_check() -> bool:
    return request.method not in SAFE_METHODS
