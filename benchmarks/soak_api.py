"""A soak run: steady mixed load on the API for a long time, sampling what leaks.

A server with two API processes (SQLite and the local executor, or ``--backend postgresql``:
PostgreSQL and two Celery workers on the machine's Redis) takes the mixed load of
``tests/test_load.py`` (status, listings, results, downloads, queue-only submissions) from
``--clients`` closed-loop clients, loopback only, for ``--minutes`` (30 by default; not in CI).
Every ``--every`` seconds (10) one row goes to ``<out>/soak.csv``:

* ``rss_mb`` and ``fds``: resident memory and open file descriptors of the API processes (the
  uvicorn supervisor and its workers; not the job processes, which come and go);
* ``db_connections``: PostgreSQL backends on the job database, or, for SQLite, open handles on
  the database file across the API processes;
* ``queue_length``: QUEUED jobs (``precise_mrd_queue_length`` from ``/metrics``);
* ``py_blocks_k``, ``malloc_in_use_mb`` and ``malloc_free_mb``: Python's allocated blocks
  (thousands) and the C allocator's bytes in use and kept free, of the API process that answered
  the ``/metrics`` scrape (with ``--api-processes 1``, the one process): when RSS grows while
  these stay flat, the allocator keeps freed memory; nothing is leaking;
* ``requests`` and ``errors`` so far.

At the end it plots the series (``soak.png``) and prints the leak check: the slope of a
least-squares line through RSS and fds after the first fifth of the run (warm-up: caches fill,
the allocator settles), per hour, and whether either grows past its bound over the run, and the
same for the last half of that part, which tells growth that levels off from a leak
(:func:`leak_check`). ``--check soak.csv`` prints the check of an earlier run again.

    .venv/bin/python benchmarks/soak_api.py [--minutes 30] [--backend sqlite|postgresql]
        [--cache process|redis] [--clients 20] [--submit-share 0.004] [--api-processes 2]
        [--malloc-arena-max N] [--every 10] [--out soak-out]
    .venv/bin/python benchmarks/soak_api.py --check soak-out/soak.csv
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import requests
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from brokers import Background, shared_broker  # noqa: E402
from databases import postgres_database  # noqa: E402
from loaddriver import Tally, drive, finished_jobs, format_table, mixed_step  # noqa: E402
from precise_mrd.service.jobs.model import TERMINAL_STATES  # noqa: E402
from servers import Server  # noqa: E402

FINAL_STATES = {state.value for state in TERMINAL_STATES}
COLUMNS = (
    "seconds", "rss_mb", "fds", "db_connections", "queue_length", "py_blocks_k",
    "malloc_in_use_mb", "malloc_free_mb", "requests", "errors",
)  # fmt: skip
#: the leak check's bounds over the measured part of the run
MAX_RSS_GROWTH = 0.10  # of the RSS at the start of the fit
MAX_FD_GROWTH = 20


def api_processes(server: Server) -> list[psutil.Process]:
    """The uvicorn supervisor and its direct children (the API workers), not the job processes."""
    root = psutil.Process(server.process.pid)
    found = [root]
    for child in root.children(recursive=False):
        # NB: with one API process (no supervisor) the root's children are the job processes,
        # and one caught between fork and exec still has the root's command line
        with contextlib.suppress(psutil.Error):
            command = child.cmdline()
            if command != root.cmdline() and "precise_mrd.service.jobs.worker" not in command:
                found.append(child)
    return found


def sqlite_handles(processes: list[psutil.Process], database: Path) -> int:
    count = 0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            count += sum(1 for f in process.open_files() if Path(f.path) == database)
    return count


#: what one ``/metrics`` scrape adds to a row: column -> (metric line pattern, scale)
SCRAPED = {
    "queue_length": (r"precise_mrd_queue_length\{[^}]*\}", 1.0),
    "py_blocks_k": (r"precise_mrd_python_allocated_blocks", 1e-3),
    "malloc_in_use_mb": (r'precise_mrd_malloc_bytes\{kind="in_use"\}', 1 / 1024**2),
    "malloc_free_mb": (r'precise_mrd_malloc_bytes\{kind="free"\}', 1 / 1024**2),
}


def scrape(server: Server) -> dict[str, float]:
    """The queue length and the heap figures of the API process that answered (-1: absent)."""
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    row = {}
    for column, (pattern, scale) in SCRAPED.items():
        found = re.search(rf"^{pattern}\s+([\d.e+]+)$", text, re.MULTILINE)
        row[column] = round(float(found.group(1)) * scale, 1) if found else -1
    return row


class Sampler(threading.Thread):
    """Writes one row every ``every`` seconds until stopped."""

    def __init__(
        self, server: Server, tally: Tally, csv_path: Path, every: float, database_url: str
    ) -> None:
        super().__init__(daemon=True)
        self.server, self.tally, self.csv_path, self.every = server, tally, csv_path, every
        self.database_url = database_url
        self.stopped = threading.Event()
        self.rows: list[dict[str, float]] = []

    def db_connections(self, processes: list[psutil.Process]) -> int:
        if self.database_url.startswith("sqlite"):
            return sqlite_handles(processes, Path(self.database_url.removeprefix("sqlite:///")))
        name = sa.engine.make_url(self.database_url).database
        admin = sa.create_engine(self.database_url.replace(f"/{name}", "/postgres"))
        try:
            with admin.connect() as connection:
                return int(
                    connection.execute(
                        sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = :name"),
                        {"name": name},
                    ).scalar_one()
                )
        finally:
            admin.dispose()

    def sample(self, started: float) -> dict[str, float]:
        processes = api_processes(self.server)
        rss = fds = 0
        for process in processes:
            with contextlib.suppress(psutil.Error):
                rss += process.memory_info().rss
                fds += process.num_fds()
        return {
            "seconds": round(time.monotonic() - started, 1),
            "rss_mb": round(rss / 1024**2, 1),
            "fds": fds,
            "db_connections": self.db_connections(processes),
            **scrape(self.server),
            "requests": self.tally.requests,
            "errors": self.tally.errors,
        }

    def run(self) -> None:
        started = time.monotonic()
        with self.csv_path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            while not self.stopped.is_set():
                row = self.sample(started)
                self.rows.append(row)
                writer.writerow(row)
                handle.flush()
                print(", ".join(f"{key} {value}" for key, value in row.items()), flush=True)
                self.stopped.wait(self.every)


def _growth(rows: list[dict[str, float]], column: str) -> tuple[float, float]:
    """Slope (per hour) of a least-squares line through ``column``, and the growth it makes over
    the rows' span."""
    seconds = np.array([row["seconds"] for row in rows])
    values = np.array([row[column] for row in rows], dtype=float)
    slope = float(np.polyfit(seconds / 3600, values, 1)[0])
    return slope, slope * (seconds[-1] - seconds[0]) / 3600


def leak_check(rows: list[dict[str, float]]) -> list[str]:
    """Per-hour slopes of RSS and fds after the warm-up, and the verdict against the bounds.

    The bound (RSS: 10% of its value when the fit starts; fds: 20) is for the measured part,
    after the first fifth. Bounded caches and the allocator grow early and then level off; a
    leak keeps its slope. So the last half of the measured part is fitted too, against its
    share of the bound: growth past the bound over the measured part that has stopped by the
    last half is reported as settling, and a last half still past its share as a leak."""
    measured = rows[len(rows) // 5 :]
    last = measured[len(measured) // 2 :]
    if len(last) < 3:
        return ["too few samples for a leak check (run longer)"]
    span = measured[-1]["seconds"] - measured[0]["seconds"]
    last_share = (last[-1]["seconds"] - last[0]["seconds"]) / span
    lines = []
    for column, bound, unit in (("rss_mb", None, "MB"), ("fds", MAX_FD_GROWTH, "fds")):
        limit = bound if bound is not None else MAX_RSS_GROWTH * measured[0][column]
        slope, growth = _growth(measured, column)
        last_slope, last_growth = _growth(last, column)
        if last_growth > limit * last_share:
            verdict = "LEAK SUSPECTED"
        elif growth > limit:
            verdict = "settling (grew past the bound early, within its share by the last half)"
        else:
            verdict = "no leak"
        lines.append(
            f"{column}: {measured[0][column]:.1f} -> {measured[-1][column]:.1f}; "
            f"slope {slope:+.2f} {unit}/hour, {growth:+.2f} {unit} over the "
            f"{span / 60:.0f} measured minutes (bound {limit:.1f}); last half: slope "
            f"{last_slope:+.2f} {unit}/hour, {last_growth:+.2f} {unit} (its share of the bound "
            f"{limit * last_share:.1f}): {verdict}"
        )
    return lines


def read_samples(path: Path) -> list[dict[str, float]]:
    with path.open(newline="") as stream:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(stream)]


def plot(rows: list[dict[str, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [row["seconds"] / 60 for row in rows]
    panels: list[tuple[tuple[str, ...], str]] = [
        (("rss_mb",), "RSS of the API processes (MB)"),
        (("fds",), "open file descriptors"),
        (("db_connections",), "database connections"),
        (("queue_length",), "queued jobs"),
    ]
    if rows and rows[0].get("malloc_in_use_mb", -1) >= 0:
        panels.append((("malloc_in_use_mb", "malloc_free_mb"), "malloc in use / free (MB)"))
    figure, axes = plt.subplots(len(panels), 1, figsize=(8, 2.25 * len(panels)), sharex=True)
    for axis, (columns, label) in zip(axes, panels, strict=True):
        for column in columns:
            axis.plot(minutes, [row[column] for row in rows], marker=".", linewidth=1, label=column)
        if len(columns) > 1:
            axis.legend(fontsize=7)
        axis.set_ylabel(label, fontsize=8)
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
    axes[-1].set_xlabel("minutes")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


@contextlib.contextmanager
def deployment(
    backend: str,
    work: Path,
    cache: str = "process",
    processes: int = 2,
    extra_env: dict[str, str] | None = None,
) -> Iterator[tuple[Server, str]]:
    env = {
        "PRECISE_MRD_ENABLE_DEBUG_JOBS": "true",
        "PRECISE_MRD_WARM_KERNELS_ON_START": "false",
        "PRECISE_MRD_LOG_LEVEL": "warning",
        "MAX_CONCURRENT_JOBS": "2",
    }
    if cache == "redis":  # NB: entries expire (PRECISE_MRD_CACHE_TTL_SECONDS): nothing to clean
        env["PRECISE_MRD_REDIS_URL"] = "redis://127.0.0.1:6379/0"
        env["PRECISE_MRD_CACHE_PREFIX"] = f"pmrd-soak-{work.name}:"
    env |= extra_env or {}
    command = [sys.executable, "-m", "precise_mrd.api", "--workers", str(processes)]
    if backend == "sqlite":
        server = Server(work / "data", command, **env)
        try:
            yield server, f"sqlite:///{work / 'data' / 'jobs.db'}"
        finally:
            server.stop()
        return
    with postgres_database("pmrd_soak") as url, shared_broker("redis") as (broker, queue):
        env |= {
            "PRECISE_MRD_DATABASE_URL": url, "PRECISE_MRD_EXECUTOR": "celery",
            "PRECISE_MRD_BROKER_URL": broker, "PRECISE_MRD_CELERY_QUEUE": queue,
        }  # fmt: skip
        server = Server(work / "data", command, **env)
        worker_env = {"PATH": "/usr/bin:/bin", "PRECISE_MRD_DATA_DIR": str(work / "data"), **env,
                      "PRECISE_MRD_LOG_LEVEL": "info"}  # fmt: skip
        workers: list[Background] = []
        try:
            for index in range(2):
                workers.append(
                    Background(
                        [sys.executable, "-m", "precise_mrd.cli", "worker", "--concurrency", "1",
                         "--hostname", f"soak{index}@%h"],
                        work / f"worker-{index}.log", env=worker_env,
                    )
                )  # fmt: skip
                workers[-1].wait_for(" ready.", timeout=90)
            yield server, url
        finally:
            for worker in workers:
                worker.stop()
            server.stop()


def _allocator_env(args: argparse.Namespace) -> dict[str, str]:
    if args.malloc_arena_max is None:
        return {}
    return {"PRECISE_MRD_MALLOC_ARENA_MAX": str(args.malloc_arena_max)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument(
        "--submit-share", type=float, default=0.004,
        help="share of requests that submit a queue-only job (keep it under what the executor "
        "finishes, or the queue grows: a soak is steady)",
    )  # fmt: skip
    parser.add_argument(
        "--cache", choices=("process", "redis"), default="process",
        help="the API's response cache: in each process (bounded, 32 MB) or the machine's Redis",
    )  # fmt: skip
    parser.add_argument("--api-processes", type=int, default=2, help="uvicorn --workers")
    parser.add_argument(
        "--malloc-arena-max", type=int, default=None, metavar="N",
        help="PRECISE_MRD_MALLOC_ARENA_MAX for the API processes (default: the service's, 2; "
        "0: glibc's default, eight per core)",
    )  # fmt: skip
    parser.add_argument("--every", type=float, default=10, help="seconds between samples")
    parser.add_argument("--out", type=Path, default=Path("soak-out"))
    parser.add_argument(
        "--check", type=Path, default=None, metavar="CSV",
        help="run no load: print the leak check of a soak.csv written earlier",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.check is not None:
        report = leak_check(read_samples(args.check))
        print("\n".join(["leak check (after the first fifth of the run):", *report]))
        return 1 if any("LEAK" in line for line in report) else 0
    args.out.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="pmrd-soak-") as tmp,
        deployment(
            args.backend, Path(tmp), args.cache, args.api_processes, _allocator_env(args)
        ) as (server, database_url),
    ):
        real_id, known = finished_jobs(server)
        tally = Tally()
        sampler = Sampler(server, tally, args.out / "soak.csv", args.every, database_url)
        sampler.start()
        accepted: list[str] = []
        step = mixed_step(real_id, known, accepted, submit_share=args.submit_share)
        try:
            _, elapsed = asyncio.run(
                drive([server.url], step, clients=args.clients, seconds=args.minutes * 60,
                      max_requests=50_000_000, tally=tally)
            )  # fmt: skip
        finally:
            sampler.stopped.set()
            sampler.join(timeout=60)
        rows = sampler.rows
        # NB: every accepted job must end; the queue drains in seconds (queue-only jobs)
        outcomes = Counter(
            server.wait(job_id, FINAL_STATES, timeout=300)["state"] for job_id in accepted
        )
    title = (
        f"soak: {args.backend}, {args.cache} cache, {args.api_processes} API processes, "
        f"{args.clients} clients, "
        f"{args.minutes:.0f} min, {tally.requests} requests, {tally.errors} errors"
    )
    plot(rows, args.out / "soak.png", title)
    print("\n" + format_table(title, tally.rows(seconds=elapsed)))
    print(f"accepted submissions: {len(accepted)}, final states: {dict(outcomes)}")
    report = leak_check(rows)
    print("\n".join(["leak check (after the first fifth of the run):", *report]))
    print(f"samples: {args.out / 'soak.csv'}; plot: {args.out / 'soak.png'}")
    lost = len(accepted) - outcomes["COMPLETE"]
    return 1 if tally.errors or lost or any("LEAK" in line for line in report) else 0


if __name__ == "__main__":
    sys.exit(main())
