"""The packaged Alembic migrations build exactly the tables the ORM models describe."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from precise_mrd.service.db import (
    Base,
    create_engine_for_url,
    current_revision,
    head_revision,
    upgrade_database,
)
from precise_mrd.service.db.migrate import alembic_config


def _url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'nested' / 'jobs.db'}"


def test_upgrade_an_empty_database(tmp_path: Path) -> None:
    url = _url(tmp_path)
    assert current_revision(url) is None
    upgrade_database(url)
    assert current_revision(url) == head_revision() is not None
    engine = create_engine_for_url(url)
    try:
        inspector = inspect(engine)
        assert {"jobs", "job_events", "alembic_version"} <= set(inspector.get_table_names())
        indexes = {index["name"] for index in inspector.get_indexes("jobs")}
        assert {"ix_jobs_tenant_created", "ix_jobs_state", "ix_jobs_tenant_run_id"} <= indexes
        foreign_keys = inspector.get_foreign_keys("job_events")
        assert foreign_keys[0]["referred_table"] == "jobs"
        assert foreign_keys[0]["options"].get("ondelete") == "CASCADE"
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()
    upgrade_database(url)  # idempotent
    assert current_revision(url) == head_revision()


def test_models_match_migrations(tmp_path: Path) -> None:
    """The `alembic check` of this project: autogenerate finds nothing to add or change."""
    url = _url(tmp_path)
    upgrade_database(url)
    engine = create_engine_for_url(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert differences == []


def test_downgrade_and_upgrade_again(tmp_path: Path) -> None:
    url = _url(tmp_path)
    upgrade_database(url)
    engine = create_engine_for_url(url)
    try:
        with engine.begin() as connection:
            config = alembic_config(url)
            config.attributes["connection"] = connection
            command.downgrade(config, "base")
        assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    finally:
        engine.dispose()
    upgrade_database(url)
    assert current_revision(url) == head_revision()
