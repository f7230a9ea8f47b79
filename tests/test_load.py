"""Load: 100 concurrent clients for 30 s against the API, mixing status, listings, results,
downloads and submissions; asserts no error and no lost job, and records the latency
percentiles and requests per second of each endpoint (not asserted: times are for
``benchmarks/bench_api_load.py`` and ``docs/performance.md``).

Two deployments, each a server with two API processes (``--workers 2``):

* the embedded one: SQLite and the local executor;
* scaled out: PostgreSQL and Celery workers on the machine's Redis.

The submissions are queue-only jobs (``service_debug.no_pipeline``: the same claims and
transitions, no pipeline), so the queue drains while the load runs; every accepted job must end
COMPLETE. Traffic goes to loopback only, bounded in time (``LOAD_SECONDS``) and count.

``pytest tests/test_load.py -v`` runs it; ``LOAD_SECONDS=60`` lengthens it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from brokers import Background, shared_broker
from databases import postgres_database
from loaddriver import Tally, drive, finished_jobs, format_table, mixed_step
from servers import ROOT, Server

CLIENTS = 100
LOAD_SECONDS = float(os.environ.get("LOAD_SECONDS", "30"))
MAX_REQUESTS = 200_000

pytestmark = [pytest.mark.xdist_group(name="load"), pytest.mark.postgres, pytest.mark.redis]


class Deployment:
    """A server (two API processes) plus, with Celery, two workers; a finished real job to read."""

    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        self.env = {
            "PRECISE_MRD_ENABLE_DEBUG_JOBS": "true",
            "PRECISE_MRD_WARM_KERNELS_ON_START": "false",
            "PRECISE_MRD_LOG_LEVEL": "warning",
            "MAX_CONCURRENT_JOBS": "2",
            **env,
        }
        self.directory = directory
        self.server = Server(
            directory / "data",
            [sys.executable, "-m", "precise_mrd.api", "--workers", "2"],
            **self.env,
        )
        self.workers: list[Background] = []

    def start_workers(self, count: int) -> None:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("PRECISE_MRD_")}
        # NB: info, so the worker says " ready."
        env = {**clean, "PRECISE_MRD_DATA_DIR": str(self.directory / "data"), **self.env,
               "PRECISE_MRD_LOG_LEVEL": "info"}  # fmt: skip
        for index in range(count):
            worker = Background(
                [sys.executable, "-m", "precise_mrd.cli", "worker", "--concurrency", "1",
                 "--hostname", f"load{index}@%h"],
                self.directory / f"worker-{index}.log",
                env=env,
            )  # fmt: skip
            self.workers.append(worker)  # NB: first, so close() stops it whatever happens
            worker.wait_for(" ready.", timeout=90)

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.server.stop()


def _run_load(deployment: Deployment, label: str) -> tuple[Tally, float, list[str]]:
    server = deployment.server
    real_id, known = finished_jobs(server)
    accepted: list[str] = []
    tally, seconds = asyncio.run(
        drive(
            [server.url],
            mixed_step(real_id, known, accepted),
            clients=CLIENTS,
            seconds=LOAD_SECONDS,
            max_requests=MAX_REQUESTS,
        )
    )
    rows = tally.rows(seconds=seconds)
    print("\n" + format_table(f"{label}: {CLIENTS} clients, {seconds:.1f} s", rows))
    print(json.dumps({"label": label, "seconds": round(seconds, 1), "endpoints": rows}))
    return tally, seconds, accepted


def _assert_nothing_lost(server: Server, accepted: list[str], timeout: float = 240) -> None:
    """Every accepted job exists and ends COMPLETE (queue-only jobs take milliseconds)."""
    deadline = time.monotonic() + timeout
    pending = set(accepted)
    while pending and time.monotonic() < deadline:
        for job_id in list(pending)[:200]:
            state = server.status(job_id).get("state")
            assert state is not None, f"accepted job {job_id} is gone"
            assert state not in ("SYSTEM_ERROR", "EXECUTOR_ERROR", "CANCELED"), (job_id, state)
            if state == "COMPLETE":
                pending.discard(job_id)
        time.sleep(0.5)
    assert not pending, f"{len(pending)} of {len(accepted)} accepted jobs did not finish"


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Deployment]:
    deployment = Deployment(tmp_path, {})
    yield deployment
    deployment.close()


@pytest.fixture
def scaled_out(tmp_path: Path) -> Iterator[Deployment]:
    with postgres_database("pmrd_load") as url, shared_broker("redis") as (broker, queue):
        deployment = Deployment(
            tmp_path,
            {
                "PRECISE_MRD_DATABASE_URL": url,
                "PRECISE_MRD_EXECUTOR": "celery",
                "PRECISE_MRD_BROKER_URL": broker,
                "PRECISE_MRD_CELERY_QUEUE": queue,
                "PRECISE_MRD_EXECUTOR_POLL_SECONDS": "0.5",
            },
        )
        try:
            deployment.start_workers(2)
            yield deployment
        finally:
            deployment.close()


def test_load_on_sqlite_and_the_local_executor(embedded: Deployment) -> None:
    tally, seconds, accepted = _run_load(embedded, "SQLite, local executor, 2 API processes")
    assert tally.errors == 0, (tally.failures, tally.rows(seconds=seconds))
    assert tally.requests > CLIENTS  # NB: the load ran
    assert accepted, "no submission was accepted"
    _assert_nothing_lost(embedded.server, accepted)


def test_load_on_postgresql_and_celery_workers(scaled_out: Deployment) -> None:
    tally, seconds, accepted = _run_load(
        scaled_out, "PostgreSQL, 2 Celery workers, 2 API processes"
    )
    assert tally.errors == 0, (tally.failures, tally.rows(seconds=seconds))
    assert tally.requests > CLIENTS
    assert accepted, "no submission was accepted"
    _assert_nothing_lost(scaled_out.server, accepted)


def test_driver_refuses_anything_but_loopback() -> None:
    with pytest.raises(ValueError, match="loopback only"):
        asyncio.run(
            drive(["http://10.0.0.1:8000"], mixed_step("x", ["x"], []), clients=1,
                  seconds=1, max_requests=1)
        )  # fmt: skip
    assert ROOT.is_dir()
