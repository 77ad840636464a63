"""SQLAlchemy engine and sessions, built once per process from the settings."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from shared.settings import get_settings

logger = logging.getLogger(__name__)


def database_url() -> str:
    """``DATABASE_URL``, else the embedded server recorded by a running ``genqueue up``."""
    settings = get_settings()
    if settings.database_url:
        return _with_driver(settings.database_url)
    from shared.embedded import read_services

    info = read_services(settings.data_dir)
    if info:
        return info["database_url"]
    raise RuntimeError(
        "No database: set DATABASE_URL, or start the embedded services with `genqueue up` "
        f"(data dir {settings.data_dir})."
    )


def _with_driver(url: str) -> str:
    """Accept plain ``postgresql://`` URLs (as docker images print them) and use psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


_engines: dict[str, Engine] = {}
_makers: dict[tuple[str, bool], sessionmaker[Session]] = {}


# A pooled connection idle longer than this is pinged before use (one round trip); one used more recently is not.
# Under load a connection goes back and forth many times a second, and the ping would be one round trip in three of a
# job submission; a connection that sat through a Postgres restart (seconds) is pinged and replaced.
IDLE_PING_SECONDS = 1.0


def get_engine(url: str | None = None) -> Engine:
    """One engine per URL per process; a connection idle for a while is checked before use, so a restarted Postgres is
    survived (:func:`_ping_idle_connections`)."""
    url = url or database_url()
    if url not in _engines:
        engine = create_engine(
            url,
            pool_size=5,
            max_overflow=10,
            pool_recycle=1800,
            pool_use_lifo=True,  # the most recently used connection first: the others idle out, and are pinged
            connect_args={"connect_timeout": 5},
        )
        _ping_idle_connections(engine)
        _engines[url] = engine
    return _engines[url]


def _ping_idle_connections(engine: Engine, idle_seconds: float = IDLE_PING_SECONDS) -> None:
    """SQLAlchemy's ``pool_pre_ping``, for connections idle ``idle_seconds`` or more only: a dead one is replaced
    before it is handed out. A connection broken while in use (or within the last second) fails its statement; the
    pool then drops every connection older than the failure (SQLAlchemy's disconnect handling), and the worker's
    writes wait the outage out (``worker/fencing.ride_out``)."""

    @event.listens_for(engine, "checkin")
    def _checked_in(dbapi_connection, record) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection, record, proxy) -> None:
        since = record.info.pop("idle_since", None)
        if since is None or time.monotonic() - since < idle_seconds:
            return  # new, or in use a moment ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # any failure: the pool discards it and connects anew
            raise DisconnectionError(f"idle connection failed its ping: {exc}") from exc


def new_session(url: str | None = None, autocommit: bool = False) -> Session:
    """A session on the pooled engine of ``url``. With ``autocommit``, every statement is its own transaction: no
    ``BEGIN`` and no ``COMMIT``/``ROLLBACK`` round trips around it (for work that reads, or writes one statement at a
    time, such as the web's GET requests); ``commit()`` and ``rollback()`` then have nothing to end."""
    url = url or database_url()
    key = (url, autocommit)
    if key not in _makers:
        engine = get_engine(url)
        if autocommit:
            engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        _makers[key] = sessionmaker(bind=engine, expire_on_commit=False)
    return _makers[key]()


@contextmanager
def session_scope() -> Iterator[Session]:
    """A unit of work: commit on success, roll back on error, always close."""
    session = new_session()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def reset_engines() -> None:
    """Forget engines (after a fork, or when tests switch databases)."""
    for engine in _engines.values():
        engine.dispose(close=False)
    _engines.clear()
    _makers.clear()
