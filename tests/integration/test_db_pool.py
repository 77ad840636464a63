"""The connection pool's ping of idle connections (``shared.db``): a connection that sat idle past the threshold is
checked before use and replaced when its server side is gone; a recently used one is not (no round trip)."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from shared.db import _ping_idle_connections, database_url


def engine_with_ping(idle_seconds: float):
    engine = create_engine(database_url(), pool_size=1, max_overflow=0)
    _ping_idle_connections(engine, idle_seconds)
    pings = []
    original = engine.dialect.do_ping

    def counting(dbapi_connection):
        pings.append(1)
        return original(dbapi_connection)

    engine.dialect.do_ping = counting
    return engine, pings


def backend_pid(engine) -> int:
    with engine.connect() as c:
        return c.execute(text("SELECT pg_backend_pid()")).scalar()


def terminate(stack, pid: int) -> None:
    with stack.engine().begin() as c:
        c.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})


def test_an_idle_connection_whose_server_went_away_is_replaced_before_use(stack):
    engine, pings = engine_with_ping(idle_seconds=0.2)
    old = backend_pid(engine)
    terminate(stack, old)  # as a Postgres restart does to every pooled connection
    time.sleep(0.3)
    assert backend_pid(engine) != old and pings  # pinged, found dead, replaced: the query itself never failed
    engine.dispose()


def test_a_connection_used_a_moment_ago_is_not_pinged(stack):
    engine, pings = engine_with_ping(idle_seconds=60)
    for _ in range(5):
        backend_pid(engine)
    assert pings == []  # no round trip per checkout
    old = backend_pid(engine)
    terminate(stack, old)
    with pytest.raises(OperationalError):  # so a connection broken within the threshold fails its statement...
        backend_pid(engine)
    assert backend_pid(engine) != old  # ...and the pool, invalidated by that failure, connects anew
    engine.dispose()
