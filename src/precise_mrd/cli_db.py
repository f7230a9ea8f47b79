"""``precise-mrd db upgrade`` / ``db current``: the job database's schema, from the shell.

The database is ``--database-url`` or ``PRECISE_MRD_DATABASE_URL`` (default: the SQLite file under
``PRECISE_MRD_DATA_DIR``). ``upgrade`` applies the packaged Alembic migrations up to the newest
revision (idempotent; on PostgreSQL under an advisory lock, so processes starting together migrate
once); ``current`` prints the database's revision and the newest one the package ships, and exits
with status 1 when they differ. An unreachable database is one line naming it (password hidden)
and the setting to fix, exit status 2.
"""

from __future__ import annotations

from typing import Annotated

import typer

from precise_mrd.cli_support import EXIT_USER_ERROR

db_app = typer.Typer(help="The job database's schema (Alembic migrations).", no_args_is_help=True)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="SQLAlchemy URL (env PRECISE_MRD_DATABASE_URL, else SQLite under the data dir).",
    ),
]


def _resolve(database_url: str | None) -> str:
    from precise_mrd.service.settings import get_settings

    return database_url or get_settings().database_url


def _fail(url: str, error: Exception) -> typer.Exit:
    from precise_mrd.service.db.engine import describe_database_error

    typer.echo(f"error: {describe_database_error(url, error)}", err=True)
    return typer.Exit(EXIT_USER_ERROR)


@db_app.command()
def upgrade(database_url: DatabaseUrl = None) -> None:
    """Bring the database to the newest schema revision (creates it on an empty database)."""
    from sqlalchemy.exc import SQLAlchemyError

    from precise_mrd.service.db.engine import display_url
    from precise_mrd.service.db.migrate import current_revision, upgrade_database

    url = _resolve(database_url)
    try:
        upgrade_database(url)
        revision = current_revision(url)
    except SQLAlchemyError as error:
        raise _fail(url, error) from None
    typer.echo(f"{display_url(url)}: at revision {revision}")


@db_app.command()
def current(database_url: DatabaseUrl = None) -> None:
    """Print the database's revision and the package's newest; exit 1 when they differ."""
    from sqlalchemy.exc import SQLAlchemyError

    from precise_mrd.service.db.engine import display_url
    from precise_mrd.service.db.migrate import current_revision, head_revision

    url = _resolve(database_url)
    try:
        revision = current_revision(url)
    except SQLAlchemyError as error:
        raise _fail(url, error) from None
    head = head_revision()
    typer.echo(f"{display_url(url)}: current {revision or 'none (empty)'}, newest {head}")
    if revision != head:
        typer.echo("run `precise-mrd db upgrade` to migrate", err=True)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the ``db`` command group to ``app``."""
    app.add_typer(db_app, name="db")
