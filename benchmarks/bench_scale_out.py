"""Benchmark: N ``smoke`` samples through the API, on each executor, side by side.

Each configuration gets a PostgreSQL database of its own, an API process and, for Celery, two
``precise-mrd worker --concurrency 1`` processes (two jobs at once, as the local executor's
``MAX_CONCURRENT_JOBS=2``: one per core of this machine):

  * ``local``: the embedded executor (a subprocess per job, in the API's machine);
  * ``celery-redis``: workers on the machine's Redis (a queue of the benchmark's own);
  * ``celery-rabbitmq``: workers on the machine's RabbitMQ (a vhost of the benchmark's own).

Every sample is a default service job (no uploads: the worker simulates a ``smoke`` sample from
the job's seed, then runs the whole pipeline and stores every artifact). Printed per configuration:
samples per hour (N / wall time from the first submit to the last job's end), p50 and p95 latency
per sample (submit to end, from the job's own timestamps), peak RSS of one job's process, of each
Celery worker process and of the API, and how many jobs did not complete. Then what the measured
per-sample cost implies for 10 such 2-core pods. Figures, not assertions.

Usage: .venv/bin/python benchmarks/bench_scale_out.py [--samples 100] [--only local,celery-redis]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
CONFIGS = ("local", "celery-redis", "celery-rabbitmq")
TERMINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def psql(statement: str) -> None:
    subprocess.run(["psql", ADMIN, "-qAtc", statement], check=True, capture_output=True)


@dataclass
class PeakRss:
    """Samples the RSS of the API, the Celery workers and every job process every 0.2 s."""

    roots: dict[str, int]  # role -> pid
    peaks: dict[str, float] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.wait(0.2):
            for role, pid in self.roots.items():
                with contextlib.suppress(psutil.Error):
                    process = psutil.Process(pid)
                    self._peak(role, process.memory_info().rss)
                    for child in process.children(recursive=True):
                        with contextlib.suppress(psutil.Error):
                            if "precise_mrd.service.jobs.worker" in " ".join(child.cmdline()):
                                self._peak("job process", child.memory_info().rss)

    def _peak(self, role: str, rss: int) -> None:
        self.peaks[role] = max(self.peaks.get(role, 0.0), rss / 2**20)


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            if requests.get(url + "/health/ready", timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not become ready")


def stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, 15)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)


def run_config(name: str, samples: int, workdir: Path) -> dict[str, object]:
    token = secrets.token_hex(4)
    database = f"pmrd_bench_{token}"
    psql(f"CREATE DATABASE {database}")
    vhost = None
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRECISE_MRD_", "ENABLE_"))}
    port = free_port()
    env.update(
        PRECISE_MRD_DATA_DIR=str(workdir / name),
        PRECISE_MRD_DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}",
        PRECISE_MRD_API_PORT=str(port),
        PRECISE_MRD_LOG_LEVEL="warning",
        MAX_CONCURRENT_JOBS="2",
        PRECISE_MRD_WARM_KERNELS_ON_START="false",
        NUMBA_CACHE_DIR=os.environ.get(
            "NUMBA_CACHE_DIR", str(Path(PYTHON).parents[1] / "numba-cache")
        ),
    )
    if name.startswith("celery"):
        queue = f"pmrd-bench-{token}"
        env.update(PRECISE_MRD_EXECUTOR="celery", PRECISE_MRD_CELERY_QUEUE=queue)
        if name == "celery-redis":
            env["PRECISE_MRD_BROKER_URL"] = "redis://127.0.0.1:6379/0"
        else:
            vhost = f"pmrd-bench-{token}"
            subprocess.run(["rabbitmqctl", "add_vhost", vhost], check=True, capture_output=True)
            subprocess.run(
                ["rabbitmqctl", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
                check=True,
                capture_output=True,
            )
            env["PRECISE_MRD_BROKER_URL"] = f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    (workdir / name).mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{port}"
    processes = []
    try:
        subprocess.run([PYTHON, "-m", "precise_mrd.cli", "db", "upgrade"], env=env, check=True,
                       capture_output=True)  # fmt: skip
        api = start([PYTHON, "-m", "precise_mrd.api"], env, workdir / name / "api.log")
        processes.append(api)
        roots = {"API": api.pid}
        if name.startswith("celery"):
            for index in range(2):
                worker = start(
                    [PYTHON, "-m", "precise_mrd.cli", "worker", "--concurrency", "1",
                     "--hostname", f"bench{index}@%h"],
                    env,
                    workdir / name / f"worker{index}.log",
                )  # fmt: skip
                processes.append(worker)
                roots[f"Celery worker {index + 1}"] = worker.pid
        wait_ready(url)
        time.sleep(3 if name.startswith("celery") else 0)  # NB: workers connect to the broker
        sampler = PeakRss(roots)
        thread = threading.Thread(target=sampler.run, daemon=True)
        thread.start()
        session = requests.Session()
        started = time.monotonic()
        jobs = []
        for index in range(samples):
            response = session.post(
                url + "/submit", data={"run_id": f"bench-{index}", "seed": 1000 + index}, timeout=60
            )
            response.raise_for_status()
            jobs.append(response.json()["job_id"])
        pending = set(jobs)
        statuses: dict[str, dict[str, object]] = {}
        deadline = time.monotonic() + 3600
        while pending and time.monotonic() < deadline:
            for job_id in list(pending):
                status = session.get(f"{url}/status/{job_id}", timeout=30).json()
                if status["state"] in TERMINAL:
                    statuses[job_id] = status
                    pending.discard(job_id)
            time.sleep(0.5)
        wall = time.monotonic() - started
        sampler.stop.set()
        thread.join()
        latencies = sorted(
            (
                datetime.fromisoformat(str(s["finished_at"]))
                - datetime.fromisoformat(str(s["created_at"]))
            ).total_seconds()
            for s in statuses.values()
        )
        failed = sum(1 for s in statuses.values() if s["state"] != "COMPLETE") + len(pending)
        return {
            "name": name,
            "wall": wall,
            "per_hour": samples / wall * 3600,
            "p50": statistics.median(latencies),
            "p95": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))],
            "peaks": sampler.peaks,
            "failed": failed,
        }
    finally:
        for process in processes:
            stop(process)
        psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        if vhost:
            subprocess.run(["rabbitmqctl", "delete_vhost", vhost], capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--only", default=",".join(CONFIGS))
    args = parser.parse_args()
    names = [name for name in args.only.split(",") if name]
    workdir = Path(tempfile.mkdtemp(prefix="pmrd-bench-scale-"))
    results = []
    for name in names:
        print(f"running {name}: {args.samples} samples ...", flush=True)
        results.append(run_config(name, args.samples, workdir))
    print()
    print(
        f"{args.samples} smoke samples through the API, 2 jobs at a time, on {os.cpu_count()} cores"
    )
    print(
        f"{'executor':<17}{'samples/h':>10}{'wall s':>9}{'p50 s':>8}{'p95 s':>8}{'failed':>8}"
        "  peak RSS (MiB)"
    )
    for result in results:
        peaks = ", ".join(f"{role} {mib:.0f}" for role, mib in sorted(result["peaks"].items()))  # type: ignore[attr-defined]
        print(
            f"{result['name']:<17}{result['per_hour']:>10.0f}{result['wall']:>9.1f}"
            f"{result['p50']:>8.1f}{result['p95']:>8.1f}{result['failed']:>8}  {peaks}"
        )
    best = max(float(r["per_hour"]) for r in results)  # type: ignore[arg-type]
    per_sample_core_seconds = 3600 / best * (os.cpu_count() or 2)
    print()
    print(
        f"one {os.cpu_count()}-core machine: {best:.0f} samples/h at best, "
        f"{per_sample_core_seconds:.1f} core-seconds per smoke sample; "
        f"10 such pods: about {10 * best:.0f} samples/h "
        f"(100 samples in {100 / (10 * best) * 60:.1f} min), if the database and the store keep up"
    )


if __name__ == "__main__":
    main()
