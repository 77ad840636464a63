"""Log in with an API token (the session keeps only its hash), log out."""

from __future__ import annotations

import logging

from flask import redirect, render_template, request, session, url_for

from shared.users import hash_token, user_for_token
from web.csrf import rotate
from web.dashboard import bp
from web.db import db_session

logger = logging.getLogger(__name__)


def safe_next(target: str | None) -> str:
    """Only same-site paths: an open redirect would let a link send a freshly logged-in user anywhere."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return url_for("dashboard.jobs")
    return target


@bp.route("/login", methods=["GET", "POST"])
def login():
    """GET: the form. POST: check the token; on success keep its hash in the session and go on."""
    next_url = request.values.get("next")
    if request.method == "GET":
        expired = request.args.get("expired") == "1"
        return render_template(
            "login.html", next=next_url, error="Your session ended; log in again." if expired else None
        )
    token = (request.form.get("token") or "").strip()
    user, tok = user_for_token(db_session(), token) if token else (None, None)
    if user is None or tok.revoked_at is not None:
        logger.info("dashboard login refused from %s", request.remote_addr)
        error = "That token was revoked." if user is not None else "Unknown token. Check it and try again."
        return render_template("login.html", next=next_url, error=error), 401
    session.clear()  # a new session at login: nothing from before it carries over
    session["token_hash"] = hash_token(token)
    rotate()
    return redirect(safe_next(next_url), code=303)


@bp.post("/logout")
def logout():
    session.clear()
    return redirect(url_for("dashboard.login"), code=303)
