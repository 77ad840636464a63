"""The REST API blueprint (``/api/v1``): every route authenticates, queries are scoped to the owner."""

from __future__ import annotations

from flask import Blueprint, request

from web.auth import authenticate
from web.security import check_request_text

bp = Blueprint("api", __name__, url_prefix="/api/v1")

PUBLIC = {"api.health", "api.openapi"}


@bp.before_request
def _auth() -> None:
    if request.endpoint not in PUBLIC:
        authenticate()
    check_request_text()


def page_limit(default: int = 50, maximum: int = 200) -> int:
    from web.errors import Invalid

    raw = request.args.get("limit", str(default))
    try:
        limit = int(raw)
    except ValueError as exc:
        raise Invalid("`limit` must be an integer", code="invalid_query") from exc
    if not 1 <= limit <= maximum:
        raise Invalid(f"`limit` must be between 1 and {maximum}", code="invalid_query")
    return limit


from web.api import datasets, demo, health, jobs, models, openapi, system, webhooks  # noqa: E402,F401  (routes register on bp)
