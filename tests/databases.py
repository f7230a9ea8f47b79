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


PG_BIN = (
    Path("/usr/lib/postgresql")
    / (
        sorted(os.listdir("/usr/lib/postgresql"))[-1]
        if os.path.isdir("/usr/lib/postgresql")
        else "15"
    )
    / "bin"
)


class OwnPostgres:
    """A PostgreSQL cluster of the test's own (initdb in a temporary folder, a free port,
    loopback only), run as the ``postgres`` user, so a test may stop and start it. ``close``
    stops it and removes its folder."""

    def __init__(self, port: int) -> None:
        import shutil
        import tempfile

        self.port = port
        # NB: not under pytest's tmp_path: the postgres user must be able to enter the folder
        self.directory = Path(tempfile.mkdtemp(prefix="pmrd-pg-"))
        shutil.chown(self.directory, user="postgres")
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        self._as_postgres(
            str(PG_BIN / "initdb"), "-D", str(self.directory / "data"), "-A", "trust",
            "-U", "postgres", "-E", "UTF8", "--no-sync",
        )  # fmt: skip
        self.start()

    def _as_postgres(self, *command: str) -> None:
        import subprocess

        subprocess.run(
            ["runuser", "-u", "postgres", "--", *command],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.directory / "data"), "-o", options,
            "-l", str(self.directory / "server.log"), "-w", "start",
        )  # fmt: skip

    def stop(self) -> None:
        self._as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.directory / "data"), "-m", "fast", "-w", "stop"
        )

    def close(self) -> None:
        import contextlib
        import shutil
        import subprocess

        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
