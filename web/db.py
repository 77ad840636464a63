"""One database session per request, closed on teardown."""

from __future__ import annotations

from flask import Flask, g
from sqlalchemy.orm import Session

from shared.db import new_session


def db_session() -> Session:
    if "db" not in g:
        g.db = new_session()
    return g.db


def init_app(app: Flask) -> None:
    @app.teardown_appcontext
    def _close(exc: BaseException | None) -> None:
        s = g.pop("db", None)
        if s is not None:
            if exc is not None:
                s.rollback()
            s.close()
