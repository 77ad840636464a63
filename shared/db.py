"""SQLAlchemy engine and sessions, built once per process from the settings."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine
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
_makers: dict[str, sessionmaker[Session]] = {}


def get_engine(url: str | None = None) -> Engine:
    """One engine per URL per process; connections are checked before use so a restarted Postgres is survived."""
    url = url or database_url()
    if url not in _engines:
        _engines[url] = create_engine(
            url,
            pool_pre_ping=True,
            pool_size=5,
            max_overflow=10,
            pool_recycle=1800,
            connect_args={"connect_timeout": 5},
        )
    return _engines[url]


def new_session(url: str | None = None) -> Session:
    url = url or database_url()
    if url not in _makers:
        _makers[url] = sessionmaker(bind=get_engine(url), expire_on_commit=False)
    return _makers[url]()


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
