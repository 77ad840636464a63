"""The dashboard: server-rendered pages plus a little JavaScript that polls the same JSON API clients use."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("dashboard", __name__)

from web.dashboard import account, compare, docs, pages, security, submit  # noqa: E402,F401  (routes and hooks register on bp)
