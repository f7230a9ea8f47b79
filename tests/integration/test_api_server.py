"""The API as a user meets it: a real server process on a free loopback port.

Each server is ``python -m precise_mrd.api`` (or ``./deploy.sh --local-python``) over its own data
directory: SQLite, a local artifact store and the local executor running real pipeline jobs in
worker subprocesses. The deployment guide's curl commands run literally through ``curl``, and its
Python snippet through ``requests``. Test-only ``service_debug`` config sections (enabled by
``PRECISE_MRD_ENABLE_DEBUG_JOBS``) make a job sleep or simulate a tiny sample.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
TERMINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}
# NB: one xdist worker runs this module, so the module's server is started once.
pytestmark = pytest.mark.xdist_group(name="api_server")
TINY = "service_debug:\n  simulation: {n_variants: 2, molecules_per_locus: 40}\n"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    """A server process; ``stop`` is graceful (SIGTERM), ``kill`` is SIGKILL."""

    def __init__(self, data_dir: Path, command: list[str] | None = None, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        clean = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("PRECISE_MRD_", "ENABLE_"))
            and key not in ("MAX_CONCURRENT_JOBS", "JOB_TIMEOUT_SECONDS", "CLEANUP_OLD_JOBS_HOURS")
        }
        clean.update(
            {
                "PRECISE_MRD_DATA_DIR": str(data_dir),
                "PRECISE_MRD_API_PORT": str(self.port),
                "PRECISE_MRD_EXECUTOR_POLL_SECONDS": "0.2",
                **env,
            }
        )
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = data_dir / f"server-{self.port}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop/kill
        self.process = subprocess.Popen(
            command or [sys.executable, "-m", "precise_mrd.api"],
            cwd=ROOT,
            env=clean,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
            try:
                if requests.get(self.url + "/health/live", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"server did not start: {self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()

    def status(self, job_id: str) -> dict[str, Any]:
        try:
            response = requests.get(f"{self.url}/status/{job_id}", timeout=10)
        except requests.ConnectionError as error:
            # NB: say why the server is gone (its own log), not just "connection refused".
            exit_code = self.process.poll()
            log = self.log_path.read_text(errors="replace")[-4000:]
            raise AssertionError(f"server unreachable (exit code {exit_code}): {log}") from error
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait(self, job_id: str, states: set[str], timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(job_id)
            if status["state"] in states:
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {status} after {timeout} s")
            time.sleep(0.2)


def submit(server: Server, **data: Any) -> str:
    response = requests.post(server.url + "/submit", data={"run_id": "it", "seed": 1, **data})
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(
        tmp_path_factory.mktemp("api_server"),
        ENABLE_ML_CALLING="true",
        ENABLE_DEEP_LEARNING="true",
        PRECISE_MRD_ENABLE_DEBUG_JOBS="true",
        PRECISE_MRD_MAX_UPLOAD_BYTES=str(1024 * 1024),
        MAX_CONCURRENT_JOBS="2",
    )
    yield running
    running.stop()


def curl(*args: str) -> Any:
    result = subprocess.run(["curl", "-s", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_guide_curl_examples_literally(server: Server) -> None:
    host_port = server.url.removeprefix("http://")
    submitted = curl(
        "-X",
        "POST",
        f"http://{host_port}/submit",
        "-F",
        "run_id=test_job",
        "-F",
        "seed=42",
        "-F",
        "use_ml_calling=true",
        "-F",
        "ml_model_type=ensemble",
    )
    job_id = submitted["job_id"]
    assert submitted["status"] == "QUEUED"
    status = curl(f"http://{host_port}/status/{job_id}")
    assert status["job_id"] == job_id and status["run_id"] == "test_job"
    server.wait(job_id, TERMINAL)
    results = curl(f"http://{host_port}/results/{job_id}")
    # NB: with ENABLE_ML_CALLING on, the job runs with the shipped ensemble artefact filter.
    assert results["state"] == "COMPLETE", results
    assert results["sample_call"]["decision"] in {"positive", "negative", "undetermined"}
    metrics = curl(f"http://{host_port}/download/{job_id}/metrics")
    assert metrics["ml_filter"]["model_type"] == "ensemble"


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
    log_path = server.data_dir / "artifacts" / "jobs" / job_id / "worker.log"
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


@pytest.mark.slow
def test_fifty_jobs_at_once_none_lost_or_duplicated(server: Server) -> None:
    """~150 s on 2 busy cores (each tiny job is a fresh Python process), hence slow."""
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=10) as pool:
        ids = list(
            pool.map(
                lambda index: submit(server, run_id=f"batch50-{index}", config_yaml=TINY),
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


def test_sigkill_mid_job_then_restart_leaves_nothing_running(tmp_path: Path) -> None:
    data_dir = tmp_path / "crash"
    settings = {
        "PRECISE_MRD_ENABLE_DEBUG_JOBS": "true",
        "PRECISE_MRD_HEARTBEAT_STALE_SECONDS": "2",
    }
    first = Server(data_dir, **settings)
    job_id = submit(first, config_yaml="service_debug:\n  sleep_seconds: 8\n" + TINY)
    first.wait(job_id, {"RUNNING"}, timeout=60)
    first.kill()
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


def test_deploy_local_python(tmp_path: Path) -> None:
    server = Server(
        tmp_path / "deploy", command=["bash", str(ROOT / "deploy.sh"), "--local-python"]
    )
    try:
        health = requests.get(server.url + "/health").json()
        assert health["status"] == "ok" and health["checks"]["executor"]["ok"]
        assert (tmp_path / "deploy" / "jobs.db").is_file()
        # NB: ENABLE_ML_CALLING is off by default: the guide's ML request is a 422 naming it.
        response = requests.post(
            server.url + "/submit",
            files={
                "run_id": (None, "test_job"),
                "seed": (None, "42"),
                "use_ml_calling": (None, "true"),
                "ml_model_type": (None, "ensemble"),
            },
        )
        assert response.status_code == 422
        assert "ENABLE_ML_CALLING" in response.json()["error"]["fix"]
    finally:
        server.stop()


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
