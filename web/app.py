"""The Flask app factory: REST API blueprint + dashboard blueprint, extensions bound with ``init_app``."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask

from shared.settings import get_settings
from web import db, metrics, security
from web.errors import register_error_handlers

logger = logging.getLogger(__name__)


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    settings = get_settings()
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=settings.session_secret(),
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        JSON_SORT_KEYS=False,
    )
    if test_config:
        app.config.update(test_config)
    app.json.sort_keys = False
    db.init_app(app)
    security.init_app(app)
    register_error_handlers(app)
    metrics.init_app(app)

    from web.api import bp as api_bp

    app.register_blueprint(api_bp)
    try:
        from web.dashboard import bp as dashboard_bp
    except ImportError:  # the dashboard is optional at this stage of the build
        dashboard_bp = None
    if dashboard_bp is not None:
        app.register_blueprint(dashboard_bp)
    return app
