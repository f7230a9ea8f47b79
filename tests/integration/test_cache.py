"""The Redis cache on the machine's Redis (keys under a prefix of the test's own) and on a Redis of
the test's own that it stops: listings and results are served from the cache but never stale, the
counters are shared between processes, and Redis going away costs speed, never a request."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests

from brokers import OwnRedis
from precise_mrd.service.cache import RedisCache
from servers import TERMINAL, Server, submit

pytestmark = pytest.mark.redis

SHARED = "redis://127.0.0.1:6379/0"


@pytest.fixture
def prefix() -> Iterator[str]:
    name = f"pmrd-test-{os.urandom(6).hex()}:"
    yield name
    client = redis.Redis.from_url(SHARED)
    keys = list(client.scan_iter(match=name + "*"))
    if keys:
        client.delete(*keys)
    client.close()


def _hits(server: Server, kind: str) -> float:
    text = requests.get(server.url + "/metrics", timeout=10).text
    pattern = (
        rf'precise_mrd_cache_requests_total\{{cache="redis",kind="{kind}",outcome="hit"\}} (\S+)'
    )
    match = re.search(pattern, text)
    return float(match.group(1)) if match else 0.0


def test_listings_come_from_the_cache_and_are_never_stale(prefix: str, tmp_path: Path) -> None:
    server = Server(
        tmp_path / "data",
        PRECISE_MRD_REDIS_URL=SHARED,
        PRECISE_MRD_CACHE_PREFIX=prefix,
        PRECISE_MRD_ENABLE_DEBUG_JOBS="true",
        PRECISE_MRD_WARM_KERNELS_ON_START="false",
    )
    try:
        job_id = submit(server, config_yaml="service_debug: {sleep_seconds: 3}\n")
        seen = set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = server.status(job_id)["state"]
            listed = requests.get(server.url + "/jobs", timeout=10).json()["jobs"][0]
            order = ["QUEUED", "INITIALIZING", "RUNNING", "COMPLETE"]
            # NB: the listing read after the status is never behind it
            assert order.index(listed["state"]) >= order.index(state), (state, listed)
            seen.add(listed["state"])
            if state in TERMINAL:
                break
            time.sleep(0.1)
        assert "RUNNING" in seen and "COMPLETE" in seen
        # NB: asked while the job was running, a page can be a miss every time: each change of
        # the job raises the generation. At rest the second read is a hit.
        first = requests.get(server.url + "/jobs", timeout=10).json()
        second = requests.get(server.url + "/jobs", timeout=10).json()
        assert _hits(server, "jobs") >= 1 and first == second
        client = redis.Redis.from_url(SHARED)
        assert list(client.scan_iter(match=prefix + "jobs:*"))
        client.close()
        results = [requests.get(f"{server.url}/results/{job_id}", timeout=10) for _ in range(2)]
        assert results[0].json() == results[1].json() and _hits(server, "results") >= 1
    finally:
        server.stop()


def test_counters_are_shared_between_processes(prefix: str) -> None:
    one, two = RedisCache(SHARED, prefix=prefix), RedisCache(SHARED, prefix=prefix)
    counts = [cache.incr("tenant-a:submit", window_seconds=60) for cache in (one, two, one, two)]
    assert counts == [1, 2, 3, 4]
    assert two.incr("tenant-b:submit", window_seconds=60) == 1


def test_redis_down_costs_speed_never_a_request(tmp_path: Path) -> None:
    own = OwnRedis(tmp_path / "redis")
    server = None
    try:
        server = Server(
            tmp_path / "data",
            PRECISE_MRD_REDIS_URL=own.url,
            PRECISE_MRD_ENABLE_DEBUG_JOBS="true",
            PRECISE_MRD_WARM_KERNELS_ON_START="false",
        )
        job_id = submit(server, config_yaml="service_debug: {no_pipeline: true}\n")
        server.wait(job_id, TERMINAL)
        own.stop()
        for path in ("/jobs", f"/results/{job_id}", "/config-templates", f"/status/{job_id}"):
            assert requests.get(server.url + path, timeout=10).status_code == 200, path
        after = submit(server, config_yaml="service_debug: {no_pipeline: true}\n")
        assert server.wait(after, TERMINAL)["state"] == "COMPLETE"
        health = requests.get(server.url + "/health", timeout=10)
        assert health.status_code == 200 and health.json()["status"] == "degraded"
        assert not health.json()["checks"]["cache"]["ok"]
        assert requests.get(server.url + "/health/ready", timeout=10).status_code == 200
        own.start()
        deadline = time.monotonic() + 20
        while requests.get(server.url + "/health", timeout=10).json()["status"] != "ok":
            assert time.monotonic() < deadline, "the cache did not come back"
            time.sleep(0.5)
        log = server.log_text()
        assert "Traceback" not in log
        assert log.count("unavailable") <= 2  # NB: one line per outage, not one per request
    finally:
        if server is not None:
            server.stop()
        own.stop()


def test_the_service_guide_redis_example(prefix: str, tmp_path: Path) -> None:
    """docs/service.md's Redis block as written (its own port and key prefix): /health finds the
    cache answering."""
    import sys

    from guides import start_block, stop
    from servers import free_port

    port = str(free_port())
    env = {key: value for key, value in os.environ.items() if not key.startswith("PRECISE_MRD_")}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        PRECISE_MRD_DATA_DIR=str(tmp_path / "data"),
        PRECISE_MRD_CACHE_PREFIX=prefix,
        PRECISE_MRD_WARM_KERNELS_ON_START="false",
    )
    health, shell = start_block(
        "Redis cache",
        {
            "python -m precise_mrd.api": f"python -m precise_mrd.api --port {port}",
            "127.0.0.1:8000": f"127.0.0.1:{port}",
        },
        cwd=tmp_path,
        env=env,
    )
    try:
        assert health["status"] == "ok" and health["checks"]["cache"]["ok"], health
    finally:
        stop(shell)
