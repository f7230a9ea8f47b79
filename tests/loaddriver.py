"""A closed-loop HTTP load driver: N clients, each sending its next request when the last one is
answered, for a bounded time and a bounded count, to loopback servers only.

Used by ``tests/test_load.py`` (asserts no error and no lost job) and by
``benchmarks/bench_api_load.py`` (prints the figures). Latencies are per endpoint (the route
template, not the path), from the request's start to the last byte of its body.

>>> summary = Tally()
>>> for ms in (1.0, 2.0, 3.0, 4.0, 100.0):
...     summary.add("status", 200, ms / 1000)
>>> row = summary.rows(seconds=1.0)["status"]
>>> row["requests"], row["errors"], row["p50_ms"], row["p99_ms"]
(5, 0, 3.0, 96.2)
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import numpy as np
import requests

#: hosts a load may be sent to (the workplace's rule: loopback only)
LOOPBACK = ("127.0.0.1", "localhost", "::1")
#: a job that takes the queue's claims and transitions and runs no pipeline (debug jobs on)
QUEUE_ONLY = "service_debug:\n  no_pipeline: true\n"


@dataclass
class Tally:
    """Latencies and statuses by endpoint; an error is a transport failure or a 5xx."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    failures: Counter[str] = field(default_factory=Counter)

    def add(self, endpoint: str, status: int, seconds: float) -> None:
        self.latencies[endpoint].append(seconds)
        self.statuses[endpoint][status] += 1

    def fail(self, endpoint: str, error: BaseException) -> None:
        self.failures[f"{endpoint}: {type(error).__name__}"] += 1
        self.statuses[endpoint][0] += 1

    @property
    def errors(self) -> int:
        return sum(
            count
            for counts in self.statuses.values()
            for status, count in counts.items()
            if status == 0 or status >= 500
        )

    def status_counts(self) -> Counter[int]:
        """Answers by HTTP status over every endpoint (0: a transport failure)."""
        total: Counter[int] = Counter()
        for counts in self.statuses.values():
            total.update(counts)
        return total

    @property
    def requests(self) -> int:
        return sum(sum(counts.values()) for counts in self.statuses.values())

    def rows(self, *, seconds: float) -> dict[str, dict[str, Any]]:
        """Per endpoint: requests, errors, requests/s, p50/p95/p99 in ms, statuses."""
        table = {}
        for endpoint in sorted(self.statuses):
            values = np.array(self.latencies.get(endpoint) or [np.nan]) * 1000
            counts = self.statuses[endpoint]
            table[endpoint] = {
                "requests": sum(counts.values()),
                "errors": sum(n for s, n in counts.items() if s == 0 or s >= 500),
                "per_second": round(sum(counts.values()) / seconds, 1),
                "p50_ms": round(float(np.percentile(values, 50)), 1),
                "p95_ms": round(float(np.percentile(values, 95)), 1),
                "p99_ms": round(float(np.percentile(values, 99)), 1),
                "statuses": dict(sorted(counts.items())),
            }
        return table


#: one client step: given the client and a seeded generator, send one request and return
#: (endpoint name, response); the driver times it
Step = Callable[[httpx.AsyncClient, random.Random], Awaitable[tuple[str, httpx.Response]]]


class JobServer(Protocol):
    """What :func:`finished_jobs` needs of a server (``tests/servers.py``'s ``Server``)."""

    url: str

    def wait(self, job_id: str, states: set[str], timeout: float = ...) -> dict[str, Any]: ...


def finished_jobs(server: JobServer, *, n_quick: int = 5) -> tuple[str, list[str]]:
    """A real finished job (for results and downloads) and ``n_quick`` queue-only ones (for
    status reads), submitted and waited for."""
    real = requests.post(
        f"{server.url}/submit", data={"run_id": "load-real", "seed": 5}, timeout=30
    )
    assert real.status_code == 202, real.text
    real_id = real.json()["job_id"]
    quick = []
    for index in range(n_quick):
        done = requests.post(
            f"{server.url}/submit",
            data={"run_id": f"load-pre-{index}", "seed": index, "config_yaml": QUEUE_ONLY},
            timeout=30,
        )
        assert done.status_code == 202, done.text
        quick.append(done.json()["job_id"])
    for job_id in [real_id, *quick]:
        assert server.wait(job_id, {"COMPLETE"}, timeout=300)["state"] == "COMPLETE"
    return real_id, quick


def mixed_step(
    real_id: str, known: list[str], accepted: list[str], *, submit_share: float = 0.02
) -> Step:
    """52% status, 20% listings, 14% results, 12% downloads, 2% queue-only submissions (about
    what two Celery workers or four local slots finish as they arrive: a job is a process);
    ``submit_share`` changes the submissions' share, the reads keeping their proportions.
    Accepted job ids are appended to ``accepted``."""
    read_scale = 0.98 / (1 - submit_share)

    async def step(client: httpx.AsyncClient, rng: random.Random) -> tuple[str, httpx.Response]:
        roll = rng.random() * read_scale  # NB: >= 0.98 is a submission
        if roll < 0.52:
            job_id = rng.choice(known if rng.random() < 0.7 or not accepted else accepted[-50:])
            return "GET /status/{id}", await client.get(f"/status/{job_id}")
        if roll < 0.72:
            return "GET /jobs", await client.get("/jobs", params={"limit": 20})
        if roll < 0.86:
            return "GET /results/{id}", await client.get(f"/results/{real_id}")
        if roll < 0.98:
            kind = rng.choice(["config", "calls", "sample_call", "metrics"])
            response = await client.get(f"/download/{real_id}/{kind}")
            return f"GET /download/{{id}}/{kind}", response
        response = await client.post(
            "/submit",
            data={"run_id": f"load-{rng.getrandbits(32)}", "seed": "1", "config_yaml": QUEUE_ONLY},
        )
        if response.status_code == 202:
            accepted.append(response.json()["job_id"])
        return "POST /submit", response

    return step


def check_loopback(urls: Sequence[str]) -> None:
    for url in urls:
        host = urlsplit(url).hostname
        if host not in LOOPBACK:
            raise ValueError(f"load goes to loopback only; {url} is not")


async def drive(
    base_urls: Sequence[str],
    step: Step,
    *,
    clients: int,
    seconds: float,
    max_requests: int,
    seed: int = 7,
    timeout: float = 30.0,
    tally: Tally | None = None,
) -> tuple[Tally, float]:
    """Run ``clients`` closed loops of ``step`` until ``seconds`` pass or ``max_requests`` are
    sent; client i talks to ``base_urls[i % len(base_urls)]`` (two API processes get half each).
    Counts into ``tally`` (a new one by default: pass one to watch it from another thread).
    Returns the tally and the elapsed seconds."""
    check_loopback(base_urls)
    tally = Tally() if tally is None else tally
    budget = itertools.count()
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client_loop(index: int) -> None:
        rng = random.Random(seed * 1_000_003 + index)
        base = base_urls[index % len(base_urls)]
        async with httpx.AsyncClient(base_url=base, timeout=timeout, limits=limits) as client:
            while time.monotonic() < deadline and next(budget) < max_requests:
                started = time.perf_counter()
                try:
                    endpoint, response = await step(client, rng)
                except (httpx.HTTPError, OSError) as error:
                    tally.fail("transport", error)
                    continue
                tally.add(endpoint, response.status_code, time.perf_counter() - started)

    started = time.monotonic()
    await asyncio.gather(*(client_loop(i) for i in range(clients)))
    return tally, time.monotonic() - started


def format_table(title: str, rows: dict[str, dict[str, Any]]) -> str:
    """A fixed-width table of :meth:`Tally.rows`."""
    lines = [
        title,
        f"{'endpoint':<28}{'requests':>9}{'errors':>7}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}"
        f"{'p99 ms':>9}",
    ]
    for endpoint, row in rows.items():
        lines.append(
            f"{endpoint:<28}{row['requests']:>9}{row['errors']:>7}{row['per_second']:>9}"
            f"{row['p50_ms']:>9}{row['p95_ms']:>9}{row['p99_ms']:>9}"
        )
    return "\n".join(lines)
