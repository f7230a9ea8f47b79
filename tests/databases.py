"""Databases for the tests: a SQLite file, or a PostgreSQL database of the test's own.

The machine's PostgreSQL (``PRECISE_MRD_TEST_POSTGRES``, default
``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``, trust auth) holds one fresh database per
use, named ``pmrd_test_<random>``, created empty and dropped afterwards (``WITH (FORCE)``: even if
a test left a connection open). The shared server itself is never stopped or reconfigured.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ADMIN_URL = os.environ.get(
    "PRECISE_MRD_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
BACKENDS = ("sqlite", "postgresql")
START_HINT = (
    "the tests need the machine's PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth); "
    "start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
)


def _admin_execute(*statements: str) -> None:
    engine = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            for statement in statements:
                connection.execute(text(statement))
    except Exception as error:  # NB: any driver error: say what the suite needs
        raise RuntimeError(f"{START_HINT} ({type(error).__name__}: {error})") from error
    finally:
        engine.dispose()


@contextmanager
def postgres_database(prefix: str = "pmrd_test") -> Iterator[str]:
    """A new empty PostgreSQL database; yields its URL, drops it afterwards."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    _admin_execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def database_url(backend: str, directory: Path) -> Iterator[str]:
    """A URL of an empty database of ``backend`` ('sqlite': a file in ``directory``)."""
    if backend == "sqlite":
        yield f"sqlite:///{directory / 'jobs.db'}"
    elif backend == "postgresql":
        with postgres_database() as url:
            yield url
    else:
        raise ValueError(f"unknown backend {backend!r}; use one of {BACKENDS}")


@contextmanager
def read_only_role(url: str) -> Iterator[str]:
    """A login role that may only SELECT in the database at ``url``; yields the role's URL."""
    database = make_url(url).database
    role = f"pmrd_ro_{secrets.token_hex(4)}"
    _admin_execute(f'CREATE ROLE "{role}" LOGIN')
    grant = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with grant.connect() as connection:
            connection.execute(text(f'GRANT CONNECT ON DATABASE "{database}" TO "{role}"'))
            connection.execute(text(f'GRANT USAGE ON SCHEMA public TO "{role}"'))
            connection.execute(text(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"'))
        yield make_url(url).set(username=role).render_as_string(hide_password=False)
    finally:
        with grant.connect() as connection:
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :role"
                ),
                {"role": role},
            )
            connection.execute(text(f'DROP OWNED BY "{role}"'))  # NB: its grants, here
            connection.execute(text(f'REVOKE CONNECT ON DATABASE "{database}" FROM "{role}"'))
        grant.dispose()
        _admin_execute(f'DROP ROLE IF EXISTS "{role}"')
