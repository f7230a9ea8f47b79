"""The Celery executor on real brokers: the API (``PRECISE_MRD_EXECUTOR=celery``) and
``precise-mrd worker`` processes over PostgreSQL, on the machine's Redis and RabbitMQ (a queue or a
vhost of the test's own) and on brokers the tests start and restart themselves.

Faults are real: a worker is sent SIGTERM (a preempted node) or SIGKILL mid-job, a broker is
restarted with jobs queued, a message is delivered three times. The database, not the queue, says
what happened: every test reads the job's audited state changes.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
from sqlalchemy import create_engine, text

from brokers import BROKERS, Background, OwnRabbit, OwnRedis, shared_broker
from databases import postgres_database
from servers import TERMINAL, TINY, Server, free_port, submit

pytestmark = [pytest.mark.celery, pytest.mark.postgres]

SLEEP = "service_debug: {{sleep_seconds: {seconds}}}\n"
QUEUE_ONLY = "service_debug: {no_pipeline: true}\n"


def _clean_environment() -> dict[str, str]:
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PRECISE_MRD_", "ENABLE_"))
        and key not in ("MAX_CONCURRENT_JOBS", "JOB_TIMEOUT_SECONDS", "CLEANUP_OLD_JOBS_HOURS")
    }


class Cluster:
    """An API process and any number of workers over one database, broker and queue."""

    def __init__(self, directory: Path, broker_url: str, queue: str, db_url: str, **env: str):
        self.directory = directory
        self.db_url = db_url
        self.env = {
            "PRECISE_MRD_EXECUTOR": "celery",
            "PRECISE_MRD_BROKER_URL": broker_url,
            "PRECISE_MRD_CELERY_QUEUE": queue,
            "PRECISE_MRD_DATABASE_URL": db_url,
            "PRECISE_MRD_DATA_DIR": str(directory / "data"),
            "PRECISE_MRD_ENABLE_DEBUG_JOBS": "true",
            "PRECISE_MRD_EXECUTOR_POLL_SECONDS": "0.2",
            "PRECISE_MRD_HEARTBEAT_STALE_SECONDS": "5",
            "PRECISE_MRD_WARM_KERNELS_ON_START": "false",
            **env,
        }
        self.api = Server(directory / "data", **self.env)
        self.workers: list[Background] = []

    def start_worker(self, concurrency: int = 1, *extra: str) -> Background:
        name = f"w{len(self.workers)}"
        worker = Background(
            [
                sys.executable,
                "-m",
                "precise_mrd.cli",
                "worker",
                "--concurrency",
                str(concurrency),
                "--hostname",
                f"{name}@%h",
                *extra,
            ],
            self.directory / f"worker-{name}.log",
            env={**_clean_environment(), **self.env},
        )
        worker.wait_for(" ready.", timeout=60)
        self.workers.append(worker)
        return worker

    def stop_workers(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.workers.clear()

    def close(self) -> None:
        self.stop_workers()
        self.api.stop()

    def events(self, job_id: str) -> list[tuple[str | None, str, str | None]]:
        engine = create_engine(self.db_url)
        try:
            with engine.connect() as connection:
                rows = connection.execute(
                    text(
                        "SELECT from_state, to_state, reason FROM job_events "
                        "WHERE job_id = :id ORDER BY id"
                    ),
                    {"id": job_id},
                ).all()
        finally:
            engine.dispose()
        return [(row[0], row[1], row[2]) for row in rows]

    def state_counts(self) -> dict[str, int]:
        engine = create_engine(self.db_url)
        try:
            with engine.connect() as connection:
                rows = connection.execute(
                    text("SELECT state, count(*) FROM jobs GROUP BY state")
                ).all()
        finally:
            engine.dispose()
        return {row[0]: int(row[1]) for row in rows}


@pytest.fixture(scope="module", params=BROKERS)
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """An API on the Celery executor, per broker, over a PostgreSQL database of its own."""
    with shared_broker(request.param) as (broker_url, queue), postgres_database() as db_url:
        directory = tmp_path_factory.mktemp(f"celery-{request.param}")
        cluster = Cluster(directory, broker_url, queue, db_url)
        try:
            yield cluster
        finally:
            cluster.close()


@pytest.fixture
def workers(cluster: Cluster) -> Iterator[Cluster]:
    """The cluster, with every worker a test started stopped afterwards."""
    try:
        yield cluster
    finally:
        cluster.stop_workers()


def _running_on(cluster: Cluster, job_id: str, timeout: float = 60) -> dict[str, Any]:
    status = cluster.api.wait(job_id, {"RUNNING", *TERMINAL}, timeout=timeout)
    assert status["state"] == "RUNNING", status
    return status


def _sleepers(seconds: int) -> list[psutil.Process]:
    marker = f"time.sleep({float(seconds)})"
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if marker in " ".join(process.info["cmdline"] or []):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def test_a_job_runs_on_a_worker_and_carries_its_request_id(workers: Cluster) -> None:
    metrics_port = free_port()
    worker = workers.start_worker(2, "--metrics-port", str(metrics_port))
    health = requests.get(workers.api.url + "/health", timeout=10).json()
    assert health["status"] == "ok", health
    response = requests.post(
        workers.api.url + "/submit",
        data={"run_id": "celery-real", "seed": 5, "config_yaml": TINY},
        headers={"X-Request-ID": "req-celery-real-1"},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    status = workers.api.wait(job_id, TERMINAL, timeout=180)
    assert status["state"] == "COMPLETE", status
    results = requests.get(f"{workers.api.url}/results/{job_id}", timeout=10).json()
    assert results["sample_call"]["decision"] in {"positive", "negative", "undetermined"}
    report = requests.get(f"{workers.api.url}/download/{job_id}/report", timeout=30)
    assert report.status_code == 200 and b"<html" in report.content[:2000].lower()
    assert "req-celery-real-1" in worker.log_text()
    metrics = requests.get(workers.api.url + "/metrics", timeout=10).text
    assert 'precise_mrd_queue_length{executor="celery"} 0.0' in metrics
    queue = workers.env["PRECISE_MRD_CELERY_QUEUE"]
    assert f'precise_mrd_broker_messages{{queue="{queue}"}} 0.0' in metrics
    for stage in ("validate", "consensus", "evidence", "calling", "report"):
        assert f'precise_mrd_stage_duration_seconds_count{{stage="{stage}"}} 1.0' in metrics
    assert 'precise_mrd_sample_molecules_count{kind="informative"} 1.0' in metrics
    assert "precise_mrd_variant_detection_rate_count 1.0" in metrics
    assert "process_resident_memory_bytes" in metrics and "process_open_fds" in metrics
    counted = 'precise_mrd_worker_jobs_total{outcome="COMPLETE"} 1.0'
    deadline = time.monotonic() + 10  # NB: the task ends a poll after the job's COMPLETE
    while True:
        exported = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        if counted in exported or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert counted in exported
    assert "precise_mrd_worker_running_jobs 0.0" in exported
    assert "process_open_fds" in exported
    transitions = [(old, new) for old, new, _ in workers.events(job_id)]
    assert transitions == [
        (None, "QUEUED"),
        ("QUEUED", "INITIALIZING"),
        ("INITIALIZING", "RUNNING"),
        ("RUNNING", "COMPLETE"),
    ]


def test_cancel_stops_a_running_job_and_its_process_group(workers: Cluster) -> None:
    workers.start_worker()
    job_id = submit(workers.api, config_yaml=SLEEP.format(seconds=61))
    _running_on(workers, job_id)
    deadline = time.monotonic() + 10
    while not _sleepers(61) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _sleepers(61), "the job's child process never started"
    response = requests.post(f"{workers.api.url}/jobs/{job_id}/cancel", timeout=10)
    assert response.status_code == 202, response.text
    assert response.json()["state"] == "CANCELING"
    status = workers.api.wait(job_id, TERMINAL, timeout=20)
    assert status["state"] == "CANCELED", status
    deadline = time.monotonic() + 10
    while _sleepers(61) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _sleepers(61), "the job's child process outlived the cancel"


def test_sigterm_gives_a_running_job_to_another_worker(workers: Cluster) -> None:
    first = workers.start_worker()
    job_id = submit(workers.api, config_yaml=SLEEP.format(seconds=12))
    _running_on(workers, job_id)
    workers.start_worker()
    started = time.monotonic()
    first.signal(signal.SIGTERM, group=False)  # NB: as a node going away signals its pods
    first.process.wait(30)
    assert time.monotonic() - started < 8, "the worker waited for its job instead of giving it back"
    status = workers.api.wait(job_id, TERMINAL, timeout=90)
    assert status["state"] == "COMPLETE", status
    assert status["attempts"] == 1  # NB: a preemption does not use up an attempt
    events = workers.events(job_id)
    assert ("RUNNING", "QUEUED") in [(old, new) for old, new, _ in events]
    assert any("shutting down" in (reason or "") for _, _, reason in events)
    assert "given back to the queue" in first.log_text()


def test_sigkill_mid_job_delivers_the_job_again(workers: Cluster) -> None:
    first = workers.start_worker()
    job_id = submit(workers.api, config_yaml=SLEEP.format(seconds=6))
    _running_on(workers, job_id)
    workers.start_worker()
    first.kill()
    status = workers.api.wait(job_id, TERMINAL, timeout=90)
    assert status["state"] == "COMPLETE", status
    assert status["attempts"] == 2
    reasons = [reason or "" for _, _, reason in workers.events(job_id)]
    assert any("re-queued after a crash" in reason for reason in reasons), reasons


def _ignored(worker: Background, job_id: str) -> int:
    """How many of this job's messages the worker ignored (the module's queue is shared, so a
    message an earlier test left behind, e.g. one a killed worker never acknowledged, may be
    ignored in the same log)."""
    return sum(
        1
        for line in worker.log_text().splitlines()
        if f"job {job_id} " in line and "message ignored" in line
    )


def test_a_message_delivered_three_times_runs_the_job_once(workers: Cluster) -> None:
    from precise_mrd.service.jobs.celery_app import make_celery, send_jobs
    from precise_mrd.service.settings import Settings

    job_id = submit(workers.api, config_yaml=SLEEP.format(seconds=2))
    settings = Settings(
        executor="celery",
        broker_url=workers.env["PRECISE_MRD_BROKER_URL"],
        celery_queue=workers.env["PRECISE_MRD_CELERY_QUEUE"],
        data_dir=workers.directory / "sender",
    )
    app = make_celery(settings)
    try:
        assert send_jobs(app, settings, [(job_id, None), (job_id, None)]) == [job_id, job_id]
    finally:
        app.close()
    worker = workers.start_worker(concurrency=3)
    status = workers.api.wait(job_id, TERMINAL, timeout=60)
    assert status["state"] == "COMPLETE", status
    deadline = time.monotonic() + 10
    while _ignored(worker, job_id) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _ignored(worker, job_id) == 2
    transitions = [(old, new) for old, new, _ in workers.events(job_id)]
    assert transitions.count(("QUEUED", "INITIALIZING")) == 1
    assert transitions.count(("INITIALIZING", "RUNNING")) == 1


@pytest.mark.parametrize("kind", BROKERS)
def test_jobs_queued_across_a_broker_restart_all_run(kind: str, tmp_path: Path) -> None:
    broker = OwnRedis(tmp_path / "redis") if kind == "redis" else OwnRabbit(tmp_path / "rabbit")
    with postgres_database() as db_url:
        cluster = Cluster(
            tmp_path, broker.url, "pmrd-restart", db_url, PRECISE_MRD_REDISPATCH_SECONDS="2"
        )
        try:
            jobs = [submit(cluster.api, config_yaml=QUEUE_ONLY) for _ in range(5)]
            deadline = time.monotonic() + 10
            while cluster.state_counts().get("QUEUED", 0) < 5 and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(1)  # NB: the API has sent the messages
            broker.stop()
            health = requests.get(cluster.api.url + "/health", timeout=30)
            assert health.status_code == 503
            assert "broker" in health.json()["checks"]["executor"]["detail"]
            broker.start()
            cluster.start_worker(concurrency=2)
            for job_id in jobs:
                status = cluster.api.wait(job_id, TERMINAL, timeout=60)
                assert status["state"] == "COMPLETE", status
            assert requests.get(cluster.api.url + "/health", timeout=30).status_code == 200
        finally:
            cluster.close()
            broker.stop()


@pytest.mark.slow
def test_a_burst_of_500_jobs_on_two_workers_ends_each_job_exactly_once(
    tmp_path: Path,
) -> None:
    with shared_broker("redis") as (broker_url, queue), postgres_database() as db_url:
        cluster = Cluster(tmp_path, broker_url, queue, db_url)
        try:
            cluster.start_worker(concurrency=2)
            cluster.start_worker(concurrency=2)
            session = requests.Session()
            submitted = []
            for index in range(500):
                response = session.post(
                    cluster.api.url + "/submit",
                    data={"run_id": f"burst-{index}", "seed": index, "config_yaml": QUEUE_ONLY},
                    timeout=30,
                )
                assert response.status_code == 202, response.text
                submitted.append(response.json()["job_id"])
            assert len(set(submitted)) == 500
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                counts = cluster.state_counts()
                if sum(counts.get(state, 0) for state in TERMINAL) == 500:
                    break
                time.sleep(1)
            counts = cluster.state_counts()
            assert counts == {"COMPLETE": 500}, counts
            engine = create_engine(db_url)
            with engine.connect() as connection:
                per_job = connection.execute(
                    text(
                        "SELECT job_id, count(*) FILTER (WHERE to_state = 'RUNNING'), "
                        "count(*) FILTER (WHERE to_state = 'COMPLETE') FROM job_events "
                        "GROUP BY job_id"
                    )
                ).all()
            engine.dispose()
            assert len(per_job) == 500
            assert all(runs == 1 and completions == 1 for _, runs, completions in per_job)
        finally:
            cluster.close()


def test_the_service_guide_celery_example(tmp_path: Path) -> None:
    """docs/service.md's Celery block as written, on a database, queue, port and data directory
    of the test's own; the job it submits completes on the worker it starts."""
    import secrets
    import subprocess

    from guides import start_block, stop

    name = f"pmrd_guide_{secrets.token_hex(4)}"
    port = str(free_port())
    with shared_broker("redis") as (_, queue):
        env = {
            **_clean_environment(),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "PRECISE_MRD_CELERY_QUEUE": queue,
            "PRECISE_MRD_WARM_KERNELS_ON_START": "false",
        }
        job, shell = start_block(
            "Celery workers",
            {
                "precise_mrd_celery": name,
                "python -m precise_mrd.api": f"python -m precise_mrd.api --port {port}",
                "127.0.0.1:8000": f"127.0.0.1:{port}",
                "$HOME/precise-mrd-data": str(tmp_path / "data"),
            },
            cwd=tmp_path,
            env=env,
        )
        try:
            url = f"http://127.0.0.1:{port}/status/{job['job_id']}"
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                state = requests.get(url, timeout=10).json()["state"]
                if state in TERMINAL:
                    break
                time.sleep(0.5)
            assert state == "COMPLETE", (tmp_path / "worker.log").read_text()[-3000:]
        finally:
            stop(shell)
            subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", name])
