"""Engines and sessions: one place that knows SQLite needs pragmas.

Every SQLite connection gets ``journal_mode=WAL`` (readers never block the writer, so the API keeps
answering while workers write progress), ``foreign_keys=ON`` (so deleting a job cascades to its
events) and a busy timeout (a writer waits for another instead of failing). Other URLs
(PostgreSQL) get a pre-ping pool and no pragmas.

>>> import tempfile
>>> from pathlib import Path
>>> engine = create_engine_for_url(f"sqlite:///{Path(tempfile.mkdtemp()) / 'jobs.db'}")
>>> with engine.connect() as connection:
...     connection.exec_driver_sql("PRAGMA journal_mode").scalar()
'wal'
>>> engine.dispose()
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from precise_mrd.service.settings import Settings

#: how long a SQLite writer waits for another writer before giving up
SQLITE_BUSY_TIMEOUT_SECONDS = 30


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_SECONDS * 1000}")
    finally:
        cursor.close()


def create_engine_for_url(url: str) -> Engine:
    """An engine for ``url``; for a SQLite file, its directory is created and pragmas set."""
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
    return create_engine(url, pool_pre_ping=True)


def create_engine_from_settings(settings: Settings) -> Engine:
    """The engine for ``settings.database_url``."""
    return create_engine_for_url(settings.database_url)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit."""
    return sessionmaker(engine, expire_on_commit=False)
