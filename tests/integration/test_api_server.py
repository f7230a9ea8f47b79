"""The API as a user meets it: a real server process on a free loopback port (tests/servers.py).

Each server is ``python -m precise_mrd.api`` over its own data directory: SQLite, a local artifact
store and the local executor running real pipeline jobs in worker subprocesses. The deployment
guide's own examples run literally in tests/integration/test_guide.py.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from databases import database_url
from servers import TERMINAL, TINY, Server, curl, submit

# NB: one xdist worker runs this module, so the module's server is started once.
pytestmark = pytest.mark.xdist_group(name="api_server")


@pytest.fixture(
    scope="module",
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
    ids=["sqlite", "postgresql"],
)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One server per backend: every test of the module runs on SQLite, then on PostgreSQL."""
    data_dir = tmp_path_factory.mktemp(f"api_server_{request.param}")
    with database_url(request.param, data_dir) as url:
        running = Server(
            data_dir,
            PRECISE_MRD_DATABASE_URL=url,
            ENABLE_ML_CALLING="true",
            ENABLE_DEEP_LEARNING="true",
            PRECISE_MRD_ENABLE_DEBUG_JOBS="true",
            PRECISE_MRD_MAX_UPLOAD_BYTES=str(1024 * 1024),
            MAX_CONCURRENT_JOBS="2",
        )
        yield running
        running.stop()


def test_deep_learning_through_curl(server: Server) -> None:
    host_port = server.url.removeprefix("http://")
    submitted = curl(
        "-X",
        "POST",
        f"http://{host_port}/submit",
        "-F",
        "run_id=dl_job",
        "-F",
        "seed=43",
        "-F",
        "use_deep_learning=true",
        "-F",
        "dl_model_type=cnn",
    )
    job_id = submitted["job_id"]
    server.wait(job_id, TERMINAL)
    results = curl(f"http://{host_port}/results/{job_id}")
    assert results["state"] == "COMPLETE", results
    metrics = curl(f"http://{host_port}/download/{job_id}/metrics")
    assert metrics["ml_filter"]["model_type"] == "cnn"
    assert metrics["ml_filter"]["kind"] == "deep_learning"


def test_requests_snippet_full_lifecycle(server: Server) -> None:
    url = server.url
    response = requests.post(url + "/submit", data={"run_id": "test_job", "seed": 42})
    job_id = response.json()["job_id"]
    progress: list[float] = []
    deadline = time.monotonic() + 120
    while (status := server.status(job_id))["state"] not in TERMINAL:
        progress.append(status["progress"])
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
    assert status["state"] == "COMPLETE", status
    assert progress == sorted(progress) and status["progress"] == 1.0
    results = requests.get(f"{url}/results/{job_id}").json()
    assert results["sample_call"]["decision"] in {"positive", "negative", "undetermined"}
    assert results["metrics"]["molecules"] > 0
    report = requests.get(results["downloads"]["report"])
    assert report.status_code == 200
    assert report.headers["content-type"].startswith("text/html")
    assert 'filename="test_job.report.html"' in report.headers["content-disposition"]
    assert "<html" in report.text.lower()
    call = requests.get(f"{url}/download/{job_id}/sample_call").json()
    assert call["decision"] == results["sample_call"]["decision"]
    bam = requests.get(f"{url}/download/{job_id}/consensus_bam").content
    assert bam[:4] == b"\x1f\x8b\x08\x04"


def test_request_id_follows_the_job_into_its_worker_log(server: Server) -> None:
    response = requests.post(
        server.url + "/submit",
        data={"run_id": "traced", "config_yaml": TINY},
        headers={"X-Request-ID": "trace-me-123"},
    )
    assert response.headers["X-Request-ID"] == "trace-me-123"
    job_id = response.json()["job_id"]
    server.wait(job_id, TERMINAL)
    log_path = (
        server.data_dir / "artifacts" / "tenants" / "default" / "jobs" / job_id / "worker.log"
    )
    events = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    assert events and all(event["request_id"] == "trace-me-123" for event in events)
    assert all(event["job_id"] == job_id for event in events)


def test_cancel_a_running_job(server: Server) -> None:
    job_id = submit(server, config_yaml="service_debug:\n  sleep_seconds: 60\n")
    server.wait(job_id, {"RUNNING"}, timeout=60)
    response = requests.post(f"{server.url}/jobs/{job_id}/cancel")
    assert response.status_code == 202
    assert response.json()["state"] in {"CANCELING", "CANCELED"}
    final = server.wait(job_id, TERMINAL, timeout=30)
    assert final["state"] == "CANCELED"
    again = requests.post(f"{server.url}/jobs/{job_id}/cancel")
    assert again.status_code == 409 and again.json()["error"]["state"] == "CANCELED"


def test_upload_over_the_limit_is_413(server: Server) -> None:
    big = b"@r1\n" + b"A" * (1024 * 1024) + b"\n+\n" + b"I" * (1024 * 1024) + b"\n"
    response = requests.post(
        server.url + "/submit",
        data={"run_id": "big"},
        files={"reads": ("big.fastq", big), "reads_r2": ("r2.fastq", big)},
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert not list((server.data_dir / "artifacts").rglob("reads_R1*"))


def test_a_file_that_is_not_a_bam_is_422(server: Server) -> None:
    response = requests.post(
        server.url + "/submit",
        data={"run_id": "bad"},
        files={
            "reads": ("sample.bam", b"#!/bin/sh\necho not a bam\n"),
            "reference": ("ref.fa", b">c\nACGT\n"),
            "variants": ("v.vcf", b"##fileformat=VCFv4.2\n"),
        },
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["field"] == "reads" and "BAM" in error["message"]


def test_path_traversal_in_names_and_download_types(server: Server) -> None:
    response = requests.post(
        server.url + "/submit",
        data={"run_id": "t"},
        files={"reads": ("../../../etc/cron.d/x.bam", b"\x1f\x8b\x08\x04")},
    )
    assert response.status_code == 422 and response.json()["error"]["field"] == "reads"
    response = requests.post(server.url + "/submit", data={"run_id": "t"})
    job_id = response.json()["job_id"]
    server.wait(job_id, {"COMPLETE"})
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    for raw in (
        f"/download/{job_id}/..%2F..%2Fjobs.db",
        f"/download/{job_id}/../../jobs.db",
        f"/download/{job_id}/%2e%2e",
        f"/download/{job_id}/report.html",
    ):
        connection.request("GET", raw)
        answer = connection.getresponse()
        body = answer.read()
        assert answer.status == 404, (raw, answer.status)
        assert b"SQLite" not in body
    connection.close()


QUEUE_ONLY = "service_debug:\n  no_pipeline: true\n"


def test_fifty_jobs_at_once_none_lost_or_duplicated(server: Server) -> None:
    """Fifty submissions at once through the real queue, claims and worker processes; the jobs
    skip the pipeline (``no_pipeline``), which the other tests here run."""
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=10) as pool:
        ids = list(
            pool.map(
                lambda index: submit(server, run_id=f"batch50-{index}", config_yaml=QUEUE_ONLY),
                range(50),
            )
        )
    assert len(set(ids)) == 50
    for job_id in ids:
        final = server.wait(job_id, TERMINAL, timeout=300)
        assert final["state"] == "COMPLETE", json.dumps(final)
        assert final["attempts"] == 1
    listed: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 20, "state": "COMPLETE"}
        if cursor:
            params["cursor"] = cursor
        page = requests.get(server.url + "/jobs", params=params).json()
        listed += [job["job_id"] for job in page["jobs"] if job["run_id"].startswith("batch50-")]
        if not (cursor := page["next_cursor"]):
            break
    assert sorted(listed) == sorted(ids)
    metrics = requests.get(server.url + "/metrics").text
    assert 'precise_mrd_jobs{state="RUNNING"} 0.0' in metrics
    print(f"50 tiny jobs: {time.monotonic() - started:.1f} s")


def test_timeout_ends_in_system_error(tmp_path: Path) -> None:
    server = Server(
        tmp_path / "timeout", PRECISE_MRD_ENABLE_DEBUG_JOBS="true", JOB_TIMEOUT_SECONDS="3"
    )
    try:
        job_id = submit(server, config_yaml="service_debug:\n  sleep_seconds: 60\n")
        final = server.wait(job_id, TERMINAL, timeout=60)
        assert final["state"] == "SYSTEM_ERROR" and final["reason"] == "timeout"
    finally:
        server.stop()


def test_sigkill_mid_job_then_restart_leaves_nothing_running(tmp_path: Path, db_url: str) -> None:
    data_dir = tmp_path / "crash"
    settings = {
        "PRECISE_MRD_DATABASE_URL": db_url,
        "PRECISE_MRD_ENABLE_DEBUG_JOBS": "true",
        "PRECISE_MRD_HEARTBEAT_STALE_SECONDS": "2",
    }
    first = Server(data_dir, **settings)
    try:
        # NB: one service_debug section (a second one was silently dropped before duplicate
        # keys became an error)
        job_id = submit(first, config_yaml=TINY + "  sleep_seconds: 8\n")
        first.wait(job_id, {"RUNNING"}, timeout=60)
    finally:
        first.kill()  # NB: the crash under test, and the cleanup when a step above fails
    time.sleep(2.5)  # NB: past the heartbeat staleness, so the orphan is recognised
    second = Server(data_dir, **settings)
    try:
        final = second.wait(job_id, TERMINAL, timeout=120)
        assert final["state"] in {"COMPLETE", "SYSTEM_ERROR"}, final
        if final["state"] == "SYSTEM_ERROR":
            assert final["reason"]
        counts = requests.get(second.url + "/jobs", params={"state": "RUNNING"}).json()
        assert counts["jobs"] == []
    finally:
        second.stop()


VALIDATION_GRID = """\
job_type: validation
calling:
  n_bootstrap: 200
validation:
  tumor_fractions: [0.0, 0.02]
  replicates: 2
  blank_replicates: 3
  n_variants: 3
  molecules_per_locus: 150
"""


def test_validation_dilution_job_downloads_validation_report(server: Server) -> None:
    templates = requests.get(server.url + "/config-templates").json()
    names = {template["name"] for template in templates["templates"]}
    assert "validation-dilution" in names
    job_id = submit(server, config_yaml=VALIDATION_GRID)
    final = server.wait(job_id, TERMINAL, timeout=300)
    assert final["state"] == "COMPLETE", final
    results = requests.get(f"{server.url}/results/{job_id}").json()
    assert results["sample_call"] is None
    validation = results["validation"]
    assert {"lob", "lod95", "specificity", "auc", "linearity"} <= set(validation)
    assert 0.0 <= validation["specificity"] <= 1.0
    assert set(results["downloads"]) == {"validation", "validation_report", "config"}
    report = requests.get(f"{server.url}/download/{job_id}/validation_report")
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    document = requests.get(f"{server.url}/download/{job_id}/validation").json()
    assert len(document["samples"]) == 3 + 2  # 3 blanks and 2 replicates at TF 0.02
