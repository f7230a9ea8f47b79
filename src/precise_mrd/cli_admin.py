"""``precise-mrd admin``: operator commands over the job database and the artifact store.

``admin backup OUT`` writes every job, its state changes and its stored files to the new directory
``OUT`` (each file checked against the SHA-256 recorded when it was written); ``admin restore IN``
puts such a backup into an empty database (migrated first) and the configured store. Both read the
service's settings: ``PRECISE_MRD_DATABASE_URL`` (or ``--database-url``) and
``PRECISE_MRD_STORAGE_URL`` (or ``--storage-url``; default ``<data dir>/artifacts``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from precise_mrd.cli_support import EXIT_USER_ERROR

admin_app = typer.Typer(
    help="Operator commands: backups of jobs and artifacts, API keys.", no_args_is_help=True
)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        help="SQLAlchemy URL (env PRECISE_MRD_DATABASE_URL, else SQLite under the data dir)."
    ),
]
StorageUrl = Annotated[
    str | None,
    typer.Option(help="Artifact store (env PRECISE_MRD_STORAGE_URL, else <data dir>/artifacts)."),
]


def _open(database_url: str | None, storage_url: str | None) -> tuple[Any, Any, str]:
    from precise_mrd.cli_worker import settings_or_exit
    from precise_mrd.service.db.engine import create_engine_for_url
    from precise_mrd.service.settings import Settings
    from precise_mrd.service.storage import store_from_settings

    overrides: dict[str, object] = {}
    if database_url:
        overrides["database_url"] = database_url
    if storage_url:
        overrides["storage_url"] = storage_url
    settings = settings_or_exit(**overrides)
    assert isinstance(settings, Settings)
    return (
        create_engine_for_url(settings.database_url),
        store_from_settings(settings),
        settings.database_url,
    )


@contextlib.contextmanager
def _operator_errors(engine: Any, url: str) -> Iterator[None]:
    """One line and exit 2 for what an operator can fix; the engine is closed either way."""
    from sqlalchemy.exc import SQLAlchemyError

    from precise_mrd.service.backup import BackupError
    from precise_mrd.service.db.engine import describe_database_error
    from precise_mrd.service.storage import ArtifactStoreError

    try:
        yield
    except SQLAlchemyError as error:
        typer.echo(f"error: {describe_database_error(url, error)}", err=True)
        raise typer.Exit(EXIT_USER_ERROR) from None
    except (BackupError, ArtifactStoreError, OSError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(EXIT_USER_ERROR) from None
    finally:
        engine.dispose()


@admin_app.command()
def backup(
    out: Annotated[Path, typer.Argument(help="A new (or empty) directory for the backup.")],
    database_url: DatabaseUrl = None,
    storage_url: StorageUrl = None,
) -> None:
    """Back up every job, its events and its stored files into OUT."""
    from precise_mrd.service.backup import backup as run_backup

    engine, store, url = _open(database_url, storage_url)
    with _operator_errors(engine, url):
        manifest = run_backup(engine, store, out)
    typer.echo(
        f"backed up {manifest['jobs']} jobs, {manifest['events']} events and "
        f"{manifest['objects']} files to {out}"
    )


@admin_app.command()
def restore(
    source: Annotated[Path, typer.Argument(help="A directory written by `admin backup`.")],
    database_url: DatabaseUrl = None,
    storage_url: StorageUrl = None,
) -> None:
    """Restore a backup into an empty job database and the artifact store."""
    from precise_mrd.service.backup import restore as run_restore
    from precise_mrd.service.db.migrate import upgrade_database

    engine, store, url = _open(database_url, storage_url)
    with _operator_errors(engine, url):
        upgrade_database(url)
        counts = run_restore(engine, store, source)
    typer.echo(
        f"restored {counts['jobs']} jobs, {counts['events']} events and {counts['objects']} files"
    )


def register(app: typer.Typer) -> None:
    """Add the ``admin`` command group to ``app``."""
    from precise_mrd.cli_keys import add_key_commands

    add_key_commands(admin_app)
    app.add_typer(admin_app, name="admin")
