"""``precise-mrd admin backup`` / ``restore`` round-trip jobs, their state changes and their files:
from SQLite and a local store into an empty PostgreSQL database and another store, every job,
state, event and artifact identical; a damaged backup is refused before anything is written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from databases import postgres_database
from precise_mrd.service.db import create_engine_for_url, make_session_factory
from precise_mrd.service.jobs.service import SqlJobService
from precise_mrd.service.settings import Settings
from precise_mrd.service.storage import LocalArtifactStore
from servers import TERMINAL, TINY, Server, submit

pytestmark = pytest.mark.postgres


def _admin(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "precise_mrd.cli", "admin", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _snapshot(database_url: str, store: LocalArtifactStore, data_dir: Path) -> dict[str, object]:
    settings = Settings(data_dir=data_dir, database_url=database_url)
    engine = create_engine_for_url(database_url)
    service = SqlJobService(make_session_factory(engine), store, settings)
    try:
        jobs, _ = service.list_jobs(tenant_id="default", limit=100)
        views = {job.job_id: job for job in jobs}
        events = {job_id: service.events(job_id) for job_id in views}
    finally:
        engine.dispose()
    files = {key: store.path_for(key).read_bytes() for key in store.list_keys("tenants/")}
    return {"jobs": views, "events": events, "files": files}


def test_backup_and_restore_round_trip_every_job_and_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = Server(
        data, PRECISE_MRD_ENABLE_DEBUG_JOBS="true", PRECISE_MRD_WARM_KERNELS_ON_START="false"
    )
    try:
        complete = submit(server, config_yaml=TINY)
        crashed = submit(server, config_yaml="service_debug: {exit_code: 3}\n")
        sleeping = submit(server, config_yaml="service_debug: {sleep_seconds: 60}\n")
        for job_id in (complete, crashed):
            server.wait(job_id, TERMINAL, timeout=180)
        server.wait(sleeping, {"RUNNING"}, timeout=60)
        requests.post(f"{server.url}/jobs/{sleeping}/cancel", timeout=10)
        server.wait(sleeping, TERMINAL, timeout=30)
    finally:
        server.stop()
    source_url = f"sqlite:///{data / 'jobs.db'}"
    before = _snapshot(source_url, LocalArtifactStore(data / "artifacts"), data)
    states = sorted(job.state.value for job in before["jobs"].values())  # type: ignore[attr-defined]
    assert states == ["CANCELED", "COMPLETE", "SYSTEM_ERROR"]

    env = {key: value for key, value in os.environ.items() if not key.startswith("PRECISE_MRD_")}
    backup_dir = tmp_path / "backup"
    made = _admin("backup", str(backup_dir), env={**env, "PRECISE_MRD_DATA_DIR": str(data)})
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("backed up 3 jobs")

    with postgres_database() as target_url:
        target_store = tmp_path / "restored-artifacts"
        restored = _admin(
            "restore",
            str(backup_dir),
            "--database-url",
            target_url,
            "--storage-url",
            str(target_store),
            env={**env, "PRECISE_MRD_DATA_DIR": str(tmp_path / "elsewhere")},
        )
        assert restored.returncode == 0, restored.stderr
        after = _snapshot(target_url, LocalArtifactStore(target_store), tmp_path / "elsewhere")
        assert after == before

        again = _admin(
            "restore", str(backup_dir), "--database-url", target_url,
            "--storage-url", str(target_store), env=env,
        )  # fmt: skip
        assert again.returncode == 2 and "already holds 3 jobs" in again.stderr


def test_a_damaged_backup_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = Server(
        data, PRECISE_MRD_ENABLE_DEBUG_JOBS="true", PRECISE_MRD_WARM_KERNELS_ON_START="false"
    )
    try:
        server.wait(submit(server, config_yaml="service_debug: {no_pipeline: true}\n"), TERMINAL)
    finally:
        server.stop()
    env = {key: value for key, value in os.environ.items() if not key.startswith("PRECISE_MRD_")}
    backup_dir = tmp_path / "backup"
    assert (
        _admin("backup", str(backup_dir), env={**env, "PRECISE_MRD_DATA_DIR": str(data)}).returncode
        == 0
    )
    damaged = next(path for path in (backup_dir / "objects").rglob("*") if path.is_file())
    damaged.write_bytes(damaged.read_bytes() + b"\n")
    target = tmp_path / "target"
    refused = _admin("restore", str(backup_dir), env={**env, "PRECISE_MRD_DATA_DIR": str(target)})
    assert refused.returncode == 2
    assert "restore stopped before writing anything" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (target / "artifacts").exists() or not any((target / "artifacts").rglob("*.*"))
