"""Run the Alembic migrations shipped inside the package, from code or from the shell.

:func:`upgrade_database` brings a database (empty or older) to the newest revision; the API and
``deploy.sh`` call it at start-up (unless ``PRECISE_MRD_DATABASE_MIGRATE_ON_START=false``), and
``precise-mrd db upgrade`` from the shell. The same revisions run on SQLite and PostgreSQL: they
use only portable column types and batch mode for SQLite ALTERs. ``alembic_config(url)`` gives a
configuration for the ``alembic`` command API (e.g. ``command.revision(..., autogenerate=True)``
while developing).

>>> import tempfile
>>> from pathlib import Path
>>> url = f"sqlite:///{Path(tempfile.mkdtemp()) / 'jobs.db'}"
>>> upgrade_database(url)
>>> current_revision(url) == head_revision()
True
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

from precise_mrd.service.db.engine import create_engine_for_url

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: the PostgreSQL advisory lock held while migrating (any 64-bit number unique to this schema)
MIGRATION_LOCK_KEY = 0x50524D5244_01  # "PRMRD", 1


def alembic_config(url: str) -> Config:
    """An Alembic configuration pointing at the packaged migrations and at ``url``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # NB: configparser interpolates '%', which URL-encoded passwords contain.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade_database(url: str, revision: str = "head") -> None:
    """Apply every migration up to ``revision`` (idempotent).

    On PostgreSQL the whole upgrade is one transaction that first takes the advisory lock
    :data:`MIGRATION_LOCK_KEY` (``pg_advisory_xact_lock``: released at commit or rollback, and
    valid behind PgBouncer in transaction mode, unlike a session lock). Processes that start
    together therefore migrate one after the other: the first applies the revisions, the others
    wait, then find the database at head and do nothing. On a SQLite file the same holds through
    an exclusive lock on ``<database>.migrate.lock`` (``serve --workers N`` starts N processes
    that migrate at once; SQLite's own locking starts only at the first write, after Alembic has
    looked for its table).
    """
    engine = create_engine_for_url(url)
    try:
        with _sqlite_file_lock(engine), engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
                )
            config = alembic_config(url)
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    finally:
        engine.dispose()


@contextlib.contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    """An exclusive lock beside a SQLite database file (nothing for other databases)."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:" or database.startswith("file:"):
        yield
        return
    with open(f"{database}.migrate.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def head_revision() -> str | None:
    """The newest revision shipped with the package."""
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(url: str) -> str | None:
    """The revision the database at ``url`` is at (None for an empty database)."""
    engine = create_engine_for_url(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
