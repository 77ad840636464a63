"""Server-side rendering reads the JSON API itself, so a page and its polling JS show the same data, scoped alike."""

from __future__ import annotations

from typing import Any

from flask import current_app, url_for


def api_json(endpoint: str, query: dict[str, Any] | None = None, **view_args: Any) -> Any:
    """The JSON body of ``GET <endpoint's URL>?query``, as the current user would get it from the API.

    The inner request shares this request's app context, so ``g.user`` and the database session carry over;
    API errors (404, 422) propagate as exceptions to the dashboard's error pages.
    """
    path = url_for(endpoint, **view_args)
    args = {k: v for k, v in (query or {}).items() if v not in (None, "")}
    with current_app.test_request_context(path, query_string=args):
        response = current_app.make_response(current_app.view_functions[endpoint](**view_args))
    return response.get_json()
