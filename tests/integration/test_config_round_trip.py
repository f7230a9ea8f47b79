"""Real jobs: a job's ``config`` download, submitted again, runs the same job with the same hash.

The app runs in-process with its embedded backends (SQLite, local store, local executor running
real worker subprocesses). Two templates go round: ``smoke`` with the ML filter and
``use_parallel`` requested by flags (so the 202's hash must include them), and
``validation-dilution`` shrunk by overrides to three samples. Every template's round trip at the
level of configs is in tests/unit/test_config_contract.py.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

from precise_mrd.service.app import create_app
from precise_mrd.service.settings import Settings

TERMINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}
TINY_SERIES = {
    "calling.n_bootstrap": 200,
    "validation.tumor_fractions": [0.0, 0.02],
    "validation.replicates": 1,
    "validation.blank_replicates": 2,
    "validation.n_variants": 2,
    "validation.molecules_per_locus": 100,
}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        data_dir=tmp_path,
        enable_ml_calling=True,
        enable_parallel_processing=True,
        executor_poll_seconds=0.1,
        max_concurrent_jobs=2,
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def run(client: TestClient, **fields: Any) -> tuple[str, dict[str, Any]]:
    """Submit, wait for a final state, return the 202's hash and the results."""
    accepted = client.post("/submit", data={"run_id": "round-trip", **fields})
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    deadline = time.monotonic() + 300
    while (state := client.get(f"/status/{job_id}").json()["state"]) not in TERMINAL:
        assert time.monotonic() < deadline, f"job {job_id} still {state}"
        time.sleep(0.2)
    results = client.get(f"/results/{job_id}").json()
    assert results["state"] == "COMPLETE", results
    return str(accepted.json()["config_hash"]), dict(results)


def config_of(client: TestClient, results: dict[str, Any]) -> str:
    download = client.get(results["downloads"]["config"])
    assert download.status_code == 200
    return download.text


def test_ml_sample_job_round_trips_with_one_hash(client: TestClient) -> None:
    built = client.post("/config-from-template", json={"template": "smoke"}).json()
    flags = {"use_ml_calling": "true", "ml_model_type": "ensemble", "use_parallel": "true"}
    first_hash, first = run(client, config_yaml=built["config_yaml"], seed="5", **flags)
    assert first["sample_call"]["config_hash"] == first_hash  # 202 and results agree
    assert first_hash != built["config_hash"]  # the ML flag is part of what ran
    config = config_of(client, first)
    assert config.splitlines()[0] == f"# config_hash: {first_hash}"
    assert "use_ml_calling: true" in config and "job_type: sample" in config
    again_hash, again = run(client, config_yaml=config)
    assert again_hash == first_hash == again["sample_call"]["config_hash"]
    assert again["validation"] is None
    assert again["sample_call"]["tumor_fraction"] == first["sample_call"]["tumor_fraction"]


def test_validation_job_round_trips_as_a_validation_job(client: TestClient) -> None:
    built = client.post(
        "/config-from-template", json={"template": "validation-dilution", "overrides": TINY_SERIES}
    ).json()
    first_hash, first = run(client, config_yaml=built["config_yaml"])
    assert first_hash == built["config_hash"]
    assert first["sample_call"] is None and {"lob", "lod95"} <= set(first["validation"])
    assert {"validation", "validation_report", "config"} <= set(first["downloads"])
    config = config_of(client, first)
    assert config.splitlines()[0] == f"# config_hash: {first_hash}"
    again_hash, again = run(client, config_yaml=config)
    assert again_hash == first_hash
    assert again["sample_call"] is None and again["validation"] == first["validation"]
