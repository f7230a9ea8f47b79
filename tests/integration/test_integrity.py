"""Every stored file's SHA-256 and size are recorded when written and checked when read: a worker
refuses a corrupted input, the API refuses to serve a corrupted artifact (and tells a client the
digest of a good one), each as one clear error."""

from __future__ import annotations

import base64
import hashlib
import io
import time
from pathlib import Path

import requests

from precise_mrd.service.db import (
    create_engine_from_settings,
    make_session_factory,
    upgrade_database,
)
from precise_mrd.service.jobs.executor import LocalExecutor
from precise_mrd.service.jobs.model import JobSpec, JobState
from precise_mrd.service.jobs.service import SqlJobService
from precise_mrd.service.settings import Settings
from precise_mrd.service.storage import LocalArtifactStore
from servers import TERMINAL, TINY, Server, submit


def test_a_worker_refuses_an_input_that_changed_in_the_store(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, enable_debug_jobs=True, executor_poll_seconds=0.1)
    upgrade_database(settings.database_url)
    engine = create_engine_from_settings(settings)
    store = LocalArtifactStore(settings.artifact_dir)
    service = SqlJobService(make_session_factory(engine), store, settings)
    inputs, checksums = {}, {}
    for kind, body in (
        ("reads", b"BAM\x01" * 64),
        ("reference", b">c\nACGT\n"),
        ("variants", b"#"),
    ):
        key = f"jobs/in/{kind}.dat"
        store.put_stream(key, io.BytesIO(body))
        inputs[kind] = key
        checksums[key] = {"sha256": hashlib.sha256(body).hexdigest(), "size": len(body)}
    store.put_stream("jobs/in/reads.dat", io.BytesIO(b"BAM\x02" * 64))  # NB: bit rot
    job = service.submit(
        JobSpec(run_id="rot", seed=1, config_yaml="", inputs=inputs, checksums=checksums)
    )
    executor = LocalExecutor(service, settings)
    executor.start()
    try:
        deadline = time.monotonic() + 60
        while not service.load(job.job_id).state.is_terminal:
            assert time.monotonic() < deadline, service.load(job.job_id)
            time.sleep(0.1)
    finally:
        executor.stop()
        engine.dispose()
    finished = service.load(job.job_id)
    assert finished.state == JobState.SYSTEM_ERROR
    assert "jobs/in/reads.dat is corrupted: recorded sha256" in (finished.reason or "")
    assert checksums["jobs/in/reads.dat"]["sha256"] in (finished.reason or "")


def test_the_api_serves_an_artifact_only_as_it_was_written(tmp_path: Path) -> None:
    server = Server(
        tmp_path / "data",
        PRECISE_MRD_ENABLE_DEBUG_JOBS="true",
        PRECISE_MRD_WARM_KERNELS_ON_START="false",
    )
    try:
        job_id = submit(server, config_yaml=TINY)
        assert server.wait(job_id, TERMINAL, timeout=180)["state"] == "COMPLETE"
        metrics = requests.get(f"{server.url}/download/{job_id}/metrics", timeout=30)
        assert metrics.status_code == 200
        digest = base64.b64encode(hashlib.sha256(metrics.content).digest()).decode()
        assert metrics.headers["Repr-Digest"] == f"sha-256=:{digest}:"

        report = (
            tmp_path
            / "data"
            / "artifacts"
            / "tenants"
            / "default"
            / "jobs"
            / job_id
            / "report.html"
        )
        report.write_bytes(report.read_bytes().replace(b"<html", b"<HTML", 1))  # same size
        response = requests.get(f"{server.url}/download/{job_id}/report", timeout=30)
        assert response.status_code == 500
        error = response.json()["error"]
        assert error["code"] == "artifact_corrupted"
        assert (
            "report.html is corrupted" in error["message"] and "run the job again" in error["fix"]
        )
        assert "Traceback" not in server.log_text()
    finally:
        server.stop()
