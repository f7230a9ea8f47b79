"""The API under load, side by side with its peers, in one run (loopback only, bounded).

1. ``GET /status/{id}`` of a finished job with ``wrk`` (Debian's; 100 connections, 2 threads):
   the project's server beside a bare FastAPI app with the same route on the same uvicorn, one
   process each. The bare route twice: as a plain ``def`` (FastAPI runs it in its thread pool)
   and as an ``async def`` (on the event loop, as the project's is), each on uvicorn's default
   loop (uvloop) and on the standard library's (the project's default,
   ``PRECISE_MRD_EVENT_LOOP``). Then the project's server on uvloop, and with ``--workers 2``.
2. The mixed load of ``tests/test_load.py`` (status, listings, results, downloads, queue-only
   submissions; 100 closed-loop clients), per endpoint, on SQLite + the local executor and on
   PostgreSQL + Celery workers (Redis), each with two API processes.

    .venv/bin/python benchmarks/bench_api_load.py [--seconds 15] [--repeats 1] [--warmup 0]
        [--mixed-seconds 30] [--skip-mixed]

Rate limits are off (one client address would hit them at once: a load balancer in front is
where a deployment limits); logs at ``warning``, as in production behind an access-logging proxy
(``--log-level info`` adds a JSON access line per request, and its cost).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from brokers import Background, shared_broker  # noqa: E402
from databases import postgres_database  # noqa: E402
from loaddriver import QUEUE_ONLY, drive, format_table, mixed_step  # noqa: E402
from servers import Server, free_port  # noqa: E402

BARE_APP = textwrap.dedent(
    """
    from fastapi import FastAPI

    sync_app = FastAPI()
    async_app = FastAPI()


    @sync_app.get("/status/{job_id}")
    def status(job_id: str) -> dict:
        return {"job_id": job_id, "state": "COMPLETE", "progress": 1.0}


    @async_app.get("/status/{job_id}")
    async def async_status(job_id: str) -> dict:
        return {"job_id": job_id, "state": "COMPLETE", "progress": 1.0}
    """
)

#: (row label, app in BARE_APP, uvicorn --loop) of the bare rows
BARE_ROWS = (
    ("bare FastAPI, def route, uvloop", "sync_app", "auto"),
    ("bare FastAPI, def route, asyncio loop", "sync_app", "asyncio"),
    ("bare FastAPI, async route, uvloop", "async_app", "auto"),
    ("bare FastAPI, async route, asyncio loop", "async_app", "asyncio"),
)


#: seconds of the same wrk load before each measured run (0: measure a cold server)
WARMUP_SECONDS = 0


def wrk(url: str, seconds: int, connections: int = 100) -> dict[str, float]:
    """requests/s, p50 and p99 (ms) and non-2xx count of one wrk run (after the warm-up)."""
    if WARMUP_SECONDS:
        subprocess.run(
            ["wrk", "-t2", f"-c{connections}", f"-d{WARMUP_SECONDS}s", url],
            capture_output=True, check=True, timeout=WARMUP_SECONDS + 60,
        )  # fmt: skip
    done = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    )  # fmt: skip
    out = done.stdout

    def ms(label: str) -> float:
        found = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, flags=re.MULTILINE)
        assert found, out
        value, unit = float(found.group(1)), found.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: .*", out)
    assert rate, out
    return {
        "per_second": float(rate.group(1)),
        "p50_ms": ms("50"),
        "p99_ms": ms("99"),
        "non_2xx": float(bad.group(1)) if bad else 0.0,
        "socket_errors": 0.0 if not errors else 1.0,
    }


@contextlib.contextmanager
def bare_server(directory: Path, app: str, loop: str) -> Iterator[str]:
    (directory / "bare_app.py").write_text(BARE_APP)
    port = free_port()
    process = Background(
        [sys.executable, "-m", "uvicorn", f"bare_app:{app}", "--port", str(port),
         "--loop", loop, "--log-level", "warning", "--app-dir", str(directory)],
        directory / f"bare-{app}-{loop}.log",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"http://127.0.0.1:{port}/status/x", timeout=1).ok:
                    break
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stop()


def project_server(directory: Path, workers: int = 1, **env: str) -> Server:
    return Server(
        directory,
        [sys.executable, "-m", "precise_mrd.api", "--workers", str(workers)],
        PRECISE_MRD_LOG_LEVEL="warning",
        PRECISE_MRD_ENABLE_DEBUG_JOBS="true",
        PRECISE_MRD_WARM_KERNELS_ON_START="false",
        **env,
    )


def finished_job(server: Server, *, real: bool = False) -> str:
    data = {"run_id": "bench", "seed": "3"}
    if not real:
        data["config_yaml"] = QUEUE_ONLY
    job_id: str = requests.post(f"{server.url}/submit", data=data, timeout=30).json()["job_id"]
    server.wait(job_id, {"COMPLETE"}, timeout=300)
    return job_id


def repeated(url: str, seconds: int, repeats: int) -> dict[str, float]:
    """``repeats`` wrk runs back to back: the median of each figure, and the p99's range (one
    run's p99 moves by a third or more on this machine)."""
    runs = [wrk(url, seconds) for _ in range(repeats)]
    row = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    row["p99_low"] = min(run["p99_ms"] for run in runs)
    row["p99_high"] = max(run["p99_ms"] for run in runs)
    row["non_2xx"] = sum(run["non_2xx"] for run in runs)
    return row


def status_side_by_side(work: Path, seconds: int, repeats: int = 1) -> None:
    each = f"{seconds} s" if repeats == 1 else f"{repeats} runs of {seconds} s each (medians)"
    print(f"\n1. GET /status/{{id}} of a finished job: wrk, 2 threads, 100 connections, {each}")
    rows: dict[str, dict[str, float]] = {}
    for label, app, loop in BARE_ROWS:
        with bare_server(work, app, loop) as bare_url:
            rows[f"{label} (1 process)"] = repeated(f"{bare_url}/status/some-job", seconds, repeats)
    ours = "Precise MRD, SQLite (1 process)"
    for label, workers, env in (
        (ours, 1, {}),
        ("Precise MRD, SQLite, EVENT_LOOP=uvloop (1 process)", 1,
         {"PRECISE_MRD_EVENT_LOOP": "uvloop"}),
        ("Precise MRD, SQLite (--workers 2)", 2, {}),
    ):  # fmt: skip
        server = project_server(work / f"{workers}-{len(rows)}", workers=workers, **env)
        try:
            job_id = finished_job(server)
            rows[label] = repeated(f"{server.url}/status/{job_id}", seconds, repeats)
        finally:
            server.stop()
    spread = repeats > 1
    print(
        f"{'server':<54}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'p99 range' if spread else '':>15}{'non-2xx':>9}"
    )
    for name, row in rows.items():
        low_high = f"{row['p99_low']:.1f}-{row['p99_high']:.1f}" if spread else ""
        print(
            f"{name:<54}{row['per_second']:>8.0f}{row['p50_ms']:>9.1f}{row['p99_ms']:>9.1f}"
            f"{low_high:>15}{row['non_2xx']:>9.0f}"
        )
    print(f"ratios of '{ours}' (targets: throughput >= 0.7x, p99 <= 1.5x):")
    for label, _, _ in BARE_ROWS:
        bare = rows[f"{label} (1 process)"]
        print(
            f"  to {label + ':':<44} throughput "
            f"{rows[ours]['per_second'] / bare['per_second']:.2f}x, "
            f"p99 {rows[ours]['p99_ms'] / bare['p99_ms']:.2f}x"
        )


def mixed(work: Path, seconds: float) -> None:
    print(f"\n2. Mixed load: 100 closed-loop clients, {seconds:.0f} s, 2 API processes")

    def run(label: str, server: Server) -> None:
        real_id = finished_job(server, real=True)
        known = [finished_job(server) for _ in range(5)]
        tally, elapsed = asyncio.run(
            drive([server.url], mixed_step(real_id, known, []), clients=100,
                  seconds=seconds, max_requests=500_000)
        )  # fmt: skip
        print(format_table(f"{label} ({tally.requests / elapsed:.0f} req/s in all)",
                           tally.rows(seconds=elapsed)))  # fmt: skip

    server = project_server(work / "mixed-sqlite", workers=2)
    try:
        run("SQLite, local executor", server)
    finally:
        server.stop()
    with postgres_database("pmrd_bench") as url, shared_broker("redis") as (broker, queue):
        env = {
            "PRECISE_MRD_DATABASE_URL": url, "PRECISE_MRD_EXECUTOR": "celery",
            "PRECISE_MRD_BROKER_URL": broker, "PRECISE_MRD_CELERY_QUEUE": queue,
        }  # fmt: skip
        server = project_server(work / "mixed-pg", workers=2, **env)
        clean = {"PATH": "/usr/bin:/bin", "PRECISE_MRD_DATA_DIR": str(work / "mixed-pg"), **env,
                 "PRECISE_MRD_ENABLE_DEBUG_JOBS": "true"}  # fmt: skip
        workers = [
            Background([sys.executable, "-m", "precise_mrd.cli", "worker", "--concurrency", "1",
                        "--hostname", f"bench{i}@%h"], work / f"worker{i}.log", env=clean)
            for i in range(2)
        ]  # fmt: skip
        try:
            for worker in workers:
                worker.wait_for(" ready.", timeout=90)
            run("PostgreSQL, 2 Celery workers (Redis)", server)
        finally:
            for worker in workers:
                worker.stop()
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=15, help="each wrk run")
    parser.add_argument("--mixed-seconds", type=float, default=30, help="each mixed run")
    parser.add_argument("--skip-mixed", action="store_true")
    parser.add_argument(
        "--repeats", type=int, default=1,
        help="wrk runs per server in part 1; figures are their medians, with the p99's range",
    )  # fmt: skip
    parser.add_argument(
        "--warmup", type=int, default=0,
        help="seconds of the same load before each measured wrk run, for every server alike",
    )  # fmt: skip
    args = parser.parse_args()
    global WARMUP_SECONDS
    WARMUP_SECONDS = args.warmup
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    with tempfile.TemporaryDirectory(prefix="pmrd-load-") as tmp:
        work = Path(tmp)
        status_side_by_side(work, args.seconds, args.repeats)
        if not args.skip_mixed:
            mixed(work, args.mixed_seconds)


if __name__ == "__main__":
    main()
