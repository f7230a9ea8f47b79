"""PostgreSQL going away under a running API, on a cluster of the test's own (never the machine's).

While the database is down the API answers 503 ``database_unavailable`` with ``Retry-After`` (never
a 500), ``/health`` names the database as the failing backend and liveness still answers; when the
database is back both recover by themselves: no restart, and the job submitted before the outage
and one submitted after both complete.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from databases import OwnPostgres
from servers import TERMINAL, Server, free_port, submit

pytestmark = pytest.mark.postgres

QUEUE_ONLY = "service_debug: {no_pipeline: true}\n"


def test_the_api_answers_503_while_postgresql_is_down_and_recovers(tmp_path: Path) -> None:
    database = OwnPostgres(free_port())
    server = None
    try:
        server = Server(
            tmp_path / "data",
            PRECISE_MRD_DATABASE_URL=database.url,
            PRECISE_MRD_DATABASE_CONNECT_TIMEOUT_SECONDS="2",
            PRECISE_MRD_ENABLE_DEBUG_JOBS="true",
            PRECISE_MRD_WARM_KERNELS_ON_START="false",
        )
        before = submit(server, config_yaml=QUEUE_ONLY)
        assert server.wait(before, TERMINAL, timeout=60)["state"] == "COMPLETE"

        database.stop()
        # NB: a finished job this process has read is answered from its memory (it cannot
        # change); anything else needs the database
        cached = requests.get(f"{server.url}/status/{before}", timeout=30)
        assert cached.status_code == 200 and cached.json()["state"] == "COMPLETE"
        assert requests.get(f"{server.url}/results/{before}", timeout=30).status_code == 200
        unseen = "01a24534-4eff-72b4-bdde-4df1c256d9d7"
        for method, path in (
            ("GET", f"/status/{unseen}"),
            ("GET", f"/results/{unseen}"),
            ("GET", "/jobs"),
            ("POST", "/submit"),
        ):
            data = {"run_id": "down", "seed": 1} if method == "POST" else None
            response = requests.request(method, server.url + path, data=data, timeout=30)
            assert response.status_code == 503, (path, response.status_code, response.text)
            assert response.headers["Retry-After"].isdigit()
            error = response.json()["error"]
            assert error["code"] == "database_unavailable"
            assert "/health" in error["fix"]
            assert "Traceback" not in response.text
        health = requests.get(server.url + "/health", timeout=30)
        assert health.status_code == 503
        checks = health.json()["checks"]
        assert not checks["database"]["ok"] and checks["artifact_store"]["ok"]
        assert str(database.port) in checks["database"]["detail"]
        assert requests.get(server.url + "/health/live", timeout=10).status_code == 200

        database.start()
        deadline = time.monotonic() + 30
        while requests.get(server.url + "/health", timeout=30).status_code != 200:
            assert time.monotonic() < deadline, "the API did not recover with the database"
            time.sleep(0.5)
        assert server.status(before)["state"] == "COMPLETE"
        after = submit(server, config_yaml=QUEUE_ONLY)
        assert server.wait(after, TERMINAL, timeout=60)["state"] == "COMPLETE"
        assert "Traceback" not in server.log_text()
    finally:
        if server is not None:
            server.stop()
        database.close()
