"""``/api/docs``: the API reference, Swagger UI (vendored under ``static/vendor/swagger-ui``) over ``openapi.json``.

A page, not data: it is served under the dashboard's CSP (scripts and styles from this origin only), not the API's
``default-src 'none'``, and it is public like the document it renders.
"""

from __future__ import annotations

from flask import render_template

from web.dashboard import bp


@bp.get("/api/docs")
def api_docs():
    return render_template("api_docs.html")
