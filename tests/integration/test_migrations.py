"""The packaged Alembic migrations build exactly the tables the ORM models describe, on SQLite
and on PostgreSQL (the ``db_url`` fixture), and ``precise-mrd db`` runs them from the shell."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from databases import postgres_database
from precise_mrd.service.db import (
    Base,
    create_engine_for_url,
    current_revision,
    head_revision,
    upgrade_database,
)
from precise_mrd.service.db.migrate import MIGRATION_LOCK_KEY, alembic_config

CLI = str(Path(sys.executable).parent / "precise-mrd")


def test_upgrade_an_empty_database(db_url: str) -> None:
    url = db_url
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
        if engine.dialect.name == "sqlite":
            with engine.connect() as connection:
                assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
                assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()
    upgrade_database(url)  # idempotent
    assert current_revision(url) == head_revision()


def test_models_match_migrations(db_url: str) -> None:
    """The `alembic check` of this project: autogenerate finds nothing to add or change."""
    url = db_url
    upgrade_database(url)
    engine = create_engine_for_url(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert differences == []


def test_downgrade_and_upgrade_again(db_url: str) -> None:
    url = db_url
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


def _db_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "db", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_db_commands_from_the_shell(db_url: str) -> None:
    before = _db_cli("current", "--database-url", db_url)
    assert before.returncode == 1 and "current none (empty)" in before.stdout, before
    assert "precise-mrd db upgrade" in before.stderr
    upgraded = _db_cli("upgrade", "--database-url", db_url)
    assert upgraded.returncode == 0 and f"at revision {head_revision()}" in upgraded.stdout
    after = _db_cli("current", "--database-url", db_url)
    assert after.returncode == 0 and f"current {head_revision()}" in after.stdout


def test_an_unreachable_database_is_one_line_naming_it() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # NB: nothing listens once the probe is closed
    url = f"postgresql://mrd:s3cret@127.0.0.1:{port}/jobs"
    result = _db_cli("current", "--database-url", url)
    assert result.returncode == 2, result
    message = result.stderr.strip()
    assert "\n" not in message and "Traceback" not in message
    assert f"127.0.0.1:{port}/jobs" in message and "s3cret" not in message
    assert "fix: check PRECISE_MRD_DATABASE_URL" in message


def _upgrade_together(url: str, n_processes: int) -> None:
    """``precise-mrd db upgrade`` from ``n_processes`` processes at once; each must succeed."""
    together = [
        subprocess.Popen(
            [CLI, "db", "upgrade", "--database-url", url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n_processes)
    ]
    outcomes = [process.communicate(timeout=120) for process in together]
    assert [process.returncode for process in together] == [0] * n_processes, outcomes


@pytest.mark.postgres
def test_processes_migrating_together_migrate_once() -> None:
    """The advisory lock: an upgrade waits while another holds it, and three at once agree."""
    with postgres_database() as url:
        holder = create_engine_for_url(url)
        try:
            with holder.connect() as connection:
                connection.execute(
                    text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
                )
                waiting = subprocess.Popen(
                    [CLI, "db", "upgrade", "--database-url", url],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                time.sleep(3)
                assert waiting.poll() is None, "the upgrade did not wait for the lock"
                assert current_revision(url) is None
                connection.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY}
                )
            _, stderr = waiting.communicate(timeout=120)
            assert waiting.returncode == 0, stderr
        finally:
            holder.dispose()
        assert current_revision(url) == head_revision()
    with postgres_database() as url:
        _upgrade_together(url, 3)
        engine = create_engine_for_url(url)
        try:
            with engine.connect() as connection:
                versions = connection.execute(text("SELECT version_num FROM alembic_version"))
                assert [row[0] for row in versions] == [head_revision()]
        finally:
            engine.dispose()


def test_processes_migrating_one_new_sqlite_file_together_all_succeed(tmp_path: Path) -> None:
    """``serve --workers N`` on a new SQLite file: N processes migrate at once (without the
    lock beside the file, the second found no table, created it too, and died)."""
    for trial in range(3):
        url = f"sqlite:///{tmp_path / f'jobs-{trial}.db'}"
        _upgrade_together(url, 4)
        assert current_revision(url) == head_revision()


@pytest.mark.postgres
def test_the_service_guide_postgresql_example(tmp_path: Path) -> None:
    """docs/service.md's PostgreSQL block, as written up to serving (which test_api_server covers
    on PostgreSQL), on a database name of the test's own, dropped afterwards."""
    guide = (Path(__file__).resolve().parents[2] / "docs" / "service.md").read_text()
    section = guide.split("## PostgreSQL", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    lines = [line for line in block.splitlines() if not line.startswith("./deploy.sh")]
    name = f"pmrd_guide_{secrets.token_hex(4)}"
    script = "set -e\n" + "\n".join(lines).replace("precise_mrd\n", f"{name}\n")
    script = script.replace("/precise_mrd", f"/{name}")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    try:
        result = subprocess.run(
            ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        assert f"at revision {head_revision()}" in result.stdout
        assert f"current {head_revision()}, newest {head_revision()}" in result.stdout
    finally:
        subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", name])
