"""The deployment guide (docs/deployment.md), run literally.

Every fenced ``bash`` and ``python`` block under "Quick start" and "Debugging" is read from the
guide and run as written on a server with no feature variable set. Two things are changed, as the
guide says: the address (``localhost:8000`` becomes the test's free port, and the server is told
that port) and the data directory (a temporary one, so a test never writes into the checkout).
The placeholder ``JOB_ID`` becomes the id the submit example returned. A block that no test runs
fails the suite, so a new example cannot go untested.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from servers import ROOT, TERMINAL, Server

GUIDE = ROOT / "docs" / "deployment.md"
TESTED_SECTIONS = ("Quick start", "Debugging")
GUIDE_ADDRESS = "localhost:8000"
pytestmark = pytest.mark.xdist_group(name="guide")


def guide_blocks() -> dict[str, list[tuple[str, str]]]:
    """Section title -> its fenced (language, code) blocks, in order."""
    sections: dict[str, list[tuple[str, str]]] = {}
    title = ""
    for chunk in re.split(r"^## ", GUIDE.read_text(), flags=re.MULTILINE)[1:]:
        title = chunk.splitlines()[0].split(" (")[0].strip()
        sections[title] = re.findall(r"^```(\w+)\n(.*?)^```", chunk, flags=re.MULTILINE | re.DOTALL)
    return sections


BLOCKS = guide_blocks()
QUICK_START = BLOCKS["Quick start"]
DEBUGGING = BLOCKS["Debugging"]


def venv_env() -> dict[str, str]:
    """The environment of a shell with the virtual environment active and nothing else set."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PRECISE_MRD_", "ENABLE_", "VIRTUAL_ENV"))
    }
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env["VIRTUAL_ENV"] = str(Path(sys.executable).parents[1])
    return env


def literal(code: str, server: Server, job_id: str = "") -> str:
    code = code.replace(GUIDE_ADDRESS, server.url.removeprefix("http://"))
    return code.replace("JOB_ID", job_id) if job_id else code


def run_bash_line(line: str, cwd: Path) -> str:
    completed = subprocess.run(
        ["bash", "-c", line], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert completed.returncode == 0, (line, completed.stderr)
    return completed.stdout


def test_every_guide_block_is_one_this_module_runs() -> None:
    """The blocks the tests below expect, no more (a new example needs a test)."""
    assert [lang for lang, _ in QUICK_START] == ["bash", "bash", "bash", "python"]
    assert QUICK_START[0][1].strip() == "./deploy.sh --local-python"
    assert QUICK_START[1][1].strip().startswith("curl -X POST http://localhost:8000/submit")
    assert [lang for lang, _ in DEBUGGING] == ["bash", "bash"]
    assert set(TESTED_SECTIONS) <= set(BLOCKS)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``./deploy.sh --local-python`` as the guide's first block says, on a free port."""
    command = QUICK_START[0][1].strip()
    data_dir = tmp_path_factory.mktemp("guide") / "data"
    server = Server(data_dir, ["bash", "-c", command], start_timeout=300)
    yield server
    server.stop()


def test_deploy_serves_with_the_defaults(deployed: Server) -> None:
    health = requests.get(deployed.url + "/health", timeout=10).json()
    assert health["status"] == "ok" and health["checks"]["executor"]["ok"], health
    assert (deployed.data_dir / "jobs.db").is_file()
    log = deployed.log_text()
    assert "deploy.sh: database migrated" in log and "deploy.sh: serving on" in log


def test_quick_start_curl_examples(deployed: Server, tmp_path: Path) -> None:
    submitted = json.loads(run_bash_line(literal(QUICK_START[1][1], deployed), tmp_path))
    assert submitted["status"] == "QUEUED", submitted
    job_id = submitted["job_id"]
    lines = [line for line in QUICK_START[2][1].splitlines() if line.strip()]
    status = json.loads(run_bash_line(literal(lines[0], deployed, job_id), tmp_path))
    assert status["job_id"] == job_id and status["run_id"] == "test_job"
    final = deployed.wait(job_id, TERMINAL, timeout=300)
    assert final["state"] == "COMPLETE", final
    results = json.loads(run_bash_line(literal(lines[1], deployed, job_id), tmp_path))
    assert results["sample_call"]["decision"] in {"positive", "negative", "undetermined"}
    metrics = requests.get(f"{deployed.url}/download/{job_id}/metrics", timeout=30).json()
    assert metrics["ml_filter"]["model_type"] == "ensemble"  # the filter the example asked for
    run_bash_line(literal(lines[2], deployed, job_id), tmp_path)
    report = tmp_path / "test_job.report.html"
    assert report.is_file(), sorted(p.name for p in tmp_path.iterdir())
    assert report.read_text().lstrip().lower().startswith("<!doctype html")


def test_quick_start_python_snippet(deployed: Server, tmp_path: Path) -> None:
    script = tmp_path / "snippet.py"
    script.write_text(literal(QUICK_START[3][1], deployed))
    completed = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    decision, tumor_fraction = completed.stdout.split()
    assert decision in {"positive", "negative", "undetermined"}
    assert 0.0 <= float(tumor_fraction) <= 1.0
    assert (tmp_path / "report.html").read_text().lstrip().lower().startswith("<!doctype html")


def test_deep_learning_on_a_default_server(deployed: Server) -> None:
    """The guide's deep-learning variant of the submit example."""
    response = requests.post(
        deployed.url + "/submit",
        files={
            "run_id": (None, "dl_job"),
            "seed": (None, "43"),
            "use_deep_learning": (None, "true"),
            "dl_model_type": (None, "cnn"),
        },
        timeout=30,
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    final = deployed.wait(job_id, TERMINAL, timeout=300)
    assert final["state"] == "COMPLETE", final
    metrics = requests.get(f"{deployed.url}/download/{job_id}/metrics", timeout=30).json()
    assert metrics["ml_filter"]["kind"] == "deep_learning"


def _debug_lines(server: Server, needles: list[str], timeout: float = 120) -> list[dict[str, Any]]:
    """The server's debug-level JSON log lines once each needle appears in one of them."""
    deadline = time.monotonic() + timeout
    while True:
        events = []
        for line in server.log_text().splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict) and str(event.get("level", "")).lower() == "debug":
                events.append(event)
        text = [json.dumps(event) for event in events]
        missing = [needle for needle in needles if not any(needle in line for line in text)]
        if not missing:
            return events
        assert time.monotonic() < deadline, f"no debug line with {missing}: {text[-20:]}"
        time.sleep(0.5)


@pytest.mark.parametrize("block", [0, 1], ids=["env-PRECISE_MRD_LOG_LEVEL", "option-log-level"])
def test_debug_recipe_adds_debug_lines(block: int, tmp_path: Path) -> None:
    """Each debug command, with the venv active, logs per request, per decision, per stage."""
    command = DEBUGGING[block][1].strip()
    env = venv_env()
    # NB: Server sets the port and the data directory; the venv's PATH is the only other change.
    server = Server(
        tmp_path / "data", ["bash", "-c", command], PATH=env["PATH"], VIRTUAL_ENV=env["VIRTUAL_ENV"]
    )
    try:
        response = requests.post(
            server.url + "/submit", data={"run_id": "debug_job", "seed": 7}, timeout=30
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        server.wait(job_id, TERMINAL, timeout=300)
        _debug_lines(
            server,
            [
                "request received",
                f"claimed job {job_id}",
                "queue empty",
                f"job {job_id} RUNNING, stage",
            ],
        )
    finally:
        server.stop()
