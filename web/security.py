"""App-wide request hygiene: body caps per endpoint, text the database cannot store, and the API's headers.

The dashboard sets its own headers (``web/dashboard/security.py``, a CSP that lets its pages load their assets);
API responses are data, never pages, so they get the most restrictive policy: nothing may load, nothing may run,
nothing may frame them, even when a browser is tricked into rendering one (an SVG artifact, a JSON error).
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, request

from shared.settings import get_settings
from web.errors import Invalid, NotFound

API_PREFIX = "/api/"
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'; sandbox"
# Endpoints that take a multipart upload: their body cap is the largest per-type upload cap (plus room for the
# multipart framing and form fields); each type's own cap is enforced while the file is streamed to disk.
UPLOAD_ENDPOINTS = frozenset({"api.upload_dataset", "dashboard.datasets", "dashboard.submit"})
MULTIPART_OVERHEAD = 1 << 20
# Pages under /api/ (the browsable reference): they get the dashboard's headers, which let them load their assets.
PAGE_ENDPOINTS = frozenset({"dashboard.api_docs"})


def init_app(app: Flask) -> None:
    app.before_request(_body_cap)
    app.after_request(_api_headers)


def _body_cap() -> None:
    """Uploads may be larger than JSON bodies (``MAX_CONTENT_LENGTH``): raise the cap for those endpoints only."""
    if request.endpoint in UPLOAD_ENDPOINTS and request.method == "POST":
        s = get_settings()
        request.max_content_length = max(s.max_text_upload_bytes, s.max_image_upload_bytes) + MULTIPART_OVERHEAD


def _api_headers(resp: Response) -> Response:
    """Every API response (errors included): no sniffing, no rendering, no framing, no shared caching."""
    if not request.path.startswith(API_PREFIX) or request.endpoint in PAGE_ENDPOINTS:
        return resp
    resp.headers["Content-Security-Policy"] = API_CSP
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["Referrer-Policy"] = "no-referrer"
    resp.headers["Cross-Origin-Resource-Policy"] = "same-origin"
    if resp.cache_control.public:  # per-user data must never sit in a shared cache
        resp.cache_control.public = False
        resp.cache_control.private = True
    elif "Cache-Control" not in resp.headers:
        resp.headers["Cache-Control"] = "no-store"
    return resp


MAX_JSON_DEPTH = 32  # job bodies nest 4 deep; anything far deeper is an attack on a recursive parser or encoder


def _bad_str(value: str) -> bool:
    if "\x00" in value:
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def bad_text(value: Any) -> bool:
    """True for text Postgres cannot store: NUL characters, or lone UTF-16 surrogates (not encodable as UTF-8)."""
    return _scan(value)[0]


def _scan(value: Any) -> tuple[bool, int]:
    """(holds bad text, nesting depth) of a decoded JSON value, walked without recursion."""
    stack, deepest = [(value, 1)], 0
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, str):
            if _bad_str(item):
                return True, deepest
        elif isinstance(item, dict):
            stack.extend((k, depth + 1) for k in item)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list | tuple):
            stack.extend((v, depth + 1) for v in item)
    return False, deepest


def check_request_text() -> None:
    """Path and query values that could never match a stored row: 404 for a path, 422 for a query parameter."""
    if request.view_args and bad_text(list(request.view_args.values())):
        raise NotFound("no such object (the path holds a NUL character)")
    for name, value in request.args.items(multi=True):
        if bad_text(name) or bad_text(value):
            raise Invalid(f"query parameter {name!r} holds a NUL character", code="invalid_query")


def check_body_text(body: Any) -> None:
    """422 for a JSON body nested absurdly deep, or holding text the database cannot store (not a 500 later)."""
    bad, depth = _scan(body)
    if depth > MAX_JSON_DEPTH:
        raise Invalid(f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels", code="invalid_body")
    if bad:
        raise Invalid("strings must not contain NUL (\\u0000) characters or lone surrogates", code="invalid_body")


def json_body() -> Any:
    """The request's JSON (None when it is not JSON); 422 for one too deeply nested for the parser to read."""
    try:
        body = request.get_json(silent=True)
    except RecursionError as exc:
        raise Invalid(f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels", code="invalid_body") from exc
    if body is not None:
        check_body_text(body)
    return body
