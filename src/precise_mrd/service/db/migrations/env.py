"""Alembic environment: uses the caller's connection when given one (``upgrade_database``),
otherwise connects to ``sqlalchemy.url``. Batch mode makes ALTERs work on SQLite too."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from precise_mrd.service.db.engine import create_engine_for_url
from precise_mrd.service.db.models import Base

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(
        url=context.config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    config = context.config
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine_for_url(str(config.get_main_option("sqlalchemy.url")))
    try:
        with engine.begin() as new_connection:
            _run(new_connection)
    finally:
        engine.dispose()


def main() -> None:
    """Entry point while Alembic runs this file."""
    if context.is_offline_mode():
        run_migrations_offline()
    else:
        run_migrations_online()


# NB: pytest's doctest collection imports this file outside Alembic, where there is no context.
if hasattr(context, "config"):
    main()
