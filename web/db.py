"""One database session per request, closed on teardown.

A ``GET`` or ``HEAD`` request's session runs in autocommit: a read needs no transaction around its statements (each
sees the data committed when it starts, as in a READ COMMITTED transaction), and the ``BEGIN`` and the closing
``ROLLBACK`` were two of the round trips of every poll of a job. A request that changes data keeps one transaction.
"""

from __future__ import annotations

from flask import Flask, g, has_request_context, request
from sqlalchemy.orm import Session

from shared.db import new_session

READS = ("GET", "HEAD")


def db_session() -> Session:
    if "db" not in g:
        g.db = new_session(autocommit=has_request_context() and request.method in READS)
    return g.db


def init_app(app: Flask) -> None:
    @app.teardown_appcontext
    def _close(exc: BaseException | None) -> None:
        s = g.pop("db", None)
        if s is not None:
            if exc is not None:
                s.rollback()
            s.close()
