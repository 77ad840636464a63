"""Dashboard security: login required, CSRF on every form, cookie flags, and security headers on responses."""

from __future__ import annotations

import logging
import os

from flask import Response, current_app, g, has_request_context, redirect, render_template, request, session, url_for
from flask.sessions import SecureCookieSessionInterface

from shared.kinds import presentation
from web.auth import authenticate_session
from web.csrf import csrf_token, is_valid, needs_check, request_token
from web.dashboard import bp
from web.dashboard.format import FILTERS, STATUS_ICONS
from web.errors import ApiError

logger = logging.getLogger(__name__)

PUBLIC_ENDPOINTS = {"dashboard.login", "dashboard.api_docs"}
CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


class SessionInterface(SecureCookieSessionInterface):
    """The signed-cookie session, marked ``Secure`` whenever the request itself came over HTTPS."""

    def get_cookie_secure(self, app) -> bool:
        return bool(app.config.get("SESSION_COOKIE_SECURE")) or (has_request_context() and request.is_secure)


@bp.record_once
def _setup(state) -> None:
    app = state.app
    app.session_interface = SessionInterface()
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = app.config.get("SESSION_COOKIE_SAMESITE") or "Lax"
    app.jinja_env.filters.update(FILTERS)
    app.jinja_env.globals["status_icons"] = STATUS_ICONS  # macros imported without context see globals only
    app.jinja_env.autoescape = True


class CsrfFailed(ApiError):
    status, code = 403, "csrf_failed"


@bp.before_request
def _guard():
    """POSTs carry the session's CSRF token; every page but the login needs a logged-in session."""
    if needs_check() and not is_valid(request_token()):
        raise CsrfFailed("The form's security token is missing or expired. Reload the page and try again.")
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    if not session.get("token_hash"):
        return redirect(url_for("dashboard.login", next=request.full_path.rstrip("?")))
    try:
        authenticate_session()
    except ApiError:
        session.clear()
        return redirect(url_for("dashboard.login", next=request.full_path.rstrip("?"), expired=1))
    return None


@bp.after_app_request
def _headers(resp: Response) -> Response:
    """Security headers on every response (the API's JSON too: harmless there, and one place to look)."""
    resp.headers.setdefault("Content-Security-Policy", CSP)
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    resp.headers.setdefault("Referrer-Policy", "same-origin")
    resp.headers.setdefault("X-Frame-Options", "DENY")
    if request.blueprint == "dashboard" and resp.mimetype == "text/html":
        resp.headers.setdefault("Cache-Control", "no-store")
    return resp


def asset_url(filename: str) -> str:
    """A static URL with the file's mtime as a cache-busting version."""
    try:
        version = int(os.path.getmtime(os.path.join(current_app.static_folder, filename)))
    except OSError:
        version = 0
    return url_for("static", filename=filename, v=version)


KIND_PRESENTATION = presentation()  # labels, charts and model params of the kinds, for common.js / job.js


@bp.app_context_processor
def _template_globals() -> dict:
    return {
        "csrf_token": csrf_token,
        "asset_url": asset_url,
        "current_user": getattr(g, "user", None),
        "kind_presentation": KIND_PRESENTATION,
    }


@bp.errorhandler(ApiError)
def _error_page(exc: ApiError):
    titles = {401: "Not logged in", 403: "Not allowed", 404: "Not found", 409: "Conflict", 422: "Invalid request"}
    title = titles.get(exc.status, "Something went wrong")
    return render_template("error.html", title=title, message=exc.message, status=exc.status), exc.status
