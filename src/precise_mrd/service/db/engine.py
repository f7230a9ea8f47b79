"""Engines and sessions: one place that knows what each database needs.

SQLite (the embedded default): every connection gets ``journal_mode=WAL`` (readers never block the
writer, so the API keeps answering while workers write progress), ``foreign_keys=ON`` (so deleting
a job cascades to its events) and a busy timeout (a writer waits for another instead of failing).

PostgreSQL (``postgresql+psycopg://``, psycopg 3; ``postgresql://`` and ``postgres://`` mean the
same): a bounded pool (:class:`PoolLimits`: size, overflow, checkout timeout, recycling) with
pre-ping, so a connection the server or a proxy dropped is replaced rather than failing a request;
a connect timeout, so an unreachable server fails fast; and no server-side prepared statements
(``prepare_threshold=None``), so it works behind PgBouncer in transaction mode, where consecutive
statements of a session may reach different server connections.

>>> import tempfile
>>> from pathlib import Path
>>> engine = create_engine_for_url(f"sqlite:///{Path(tempfile.mkdtemp()) / 'jobs.db'}")
>>> with engine.connect() as connection:
...     connection.exec_driver_sql("PRAGMA journal_mode").scalar()
'wal'
>>> engine.dispose()
>>> normalize_database_url("postgres://mrd:secret@db:5432/jobs")
'postgresql+psycopg://mrd:secret@db:5432/jobs'
>>> display_url("postgresql+psycopg://mrd:secret@db:5432/jobs")
'postgresql+psycopg://mrd:***@db:5432/jobs'
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from precise_mrd.service.settings import Settings, normalize_database_url

#: how long a SQLite writer waits for another writer before giving up
SQLITE_BUSY_TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class PoolLimits:
    """The connection pool of a PostgreSQL engine (per process)."""

    size: int = 5
    max_overflow: int = 10
    timeout_seconds: float = 10.0
    recycle_seconds: int = 1800
    connect_timeout_seconds: int = 5

    @classmethod
    def from_settings(cls, settings: Settings) -> PoolLimits:
        return cls(
            size=settings.database_pool_size,
            max_overflow=settings.database_max_overflow,
            timeout_seconds=settings.database_pool_timeout_seconds,
            recycle_seconds=settings.database_pool_recycle_seconds,
            connect_timeout_seconds=settings.database_connect_timeout_seconds,
        )


def display_url(url: str) -> str:
    """``url`` with its password hidden, for logs and error messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"


def describe_database_error(url: str, error: Exception) -> str:
    """One line naming the database (password hidden), what went wrong and the setting to fix."""
    detail = str(getattr(error, "orig", None) or error).strip().splitlines()
    reason = detail[0] if detail else type(error).__name__
    return (
        f"database {display_url(url)}: {reason}; fix: check PRECISE_MRD_DATABASE_URL "
        "(or --database-url) and that the database server runs and accepts this user"
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_SECONDS * 1000}")
    finally:
        cursor.close()


def create_engine_for_url(url: str, pool: PoolLimits | None = None) -> Engine:
    """An engine for ``url``; for a SQLite file, its directory is created and pragmas set."""
    url = normalize_database_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    limits = pool or PoolLimits()
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        connect_args = {
            "connect_timeout": limits.connect_timeout_seconds,
            "prepare_threshold": None,  # NB: PgBouncer transaction mode
            "application_name": "precise-mrd",
        }
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=limits.size,
        max_overflow=limits.max_overflow,
        pool_timeout=limits.timeout_seconds,
        pool_recycle=limits.recycle_seconds,
        connect_args=connect_args,
    )


def create_engine_from_settings(settings: Settings) -> Engine:
    """The engine for ``settings.database_url`` (writes, and reads without a read URL)."""
    return create_engine_for_url(settings.database_url, PoolLimits.from_settings(settings))


def create_read_engine_from_settings(settings: Settings) -> Engine | None:
    """The engine for ``settings.database_read_url`` (status, results, listings), if set."""
    if not settings.database_read_url:
        return None
    return create_engine_for_url(settings.database_read_url, PoolLimits.from_settings(settings))


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit."""
    return sessionmaker(engine, expire_on_commit=False)
