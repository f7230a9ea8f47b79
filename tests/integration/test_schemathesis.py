"""A schemathesis run against a served API's ``/openapi.json``, with and without credentials:
no 5xx, no response outside its schema or of an undeclared status code or content type."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from servers import ROOT, Server

ST = str(Path(sys.executable).parent / "st")
CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    )
)


def _key(data_dir: Path) -> str:
    env = {"PRECISE_MRD_DATA_DIR": str(data_dir), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "precise_mrd.cli",
            "admin",
            "create-key",
            "--tenant",
            "lab-a",
            "--role",
            "admin",
            "--json",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return str(json.loads(done.stdout)["key"])


@pytest.mark.parametrize("credentials", [False, True])
def test_schemathesis_finds_no_server_error(tmp_path: Path, credentials: bool) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    key = _key(data_dir) if credentials else ""
    server = Server(
        data_dir,
        PRECISE_MRD_AUTH_MODE="api_key",
        PRECISE_MRD_RATE_LIMIT="off",
        PRECISE_MRD_TENANT_RATE_LIMIT="off",
        PRECISE_MRD_WARM_KERNELS_ON_START="false",
    )
    try:
        command = [
            ST,
            "run",
            f"{server.url}/openapi.json",
            "--max-examples",
            "25",
            "--seed",
            "7",
            "--phases",
            "examples,coverage,fuzzing",
            "--checks",
            CHECKS,
            "--no-color",
        ]
        if credentials:
            command += ["--header", f"X-API-Key: {key}"]
        # NB: in tmp_path: st keeps a cache (.schemathesis/) in its working directory
        done = subprocess.run(
            command, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False
        )
    finally:
        server.stop()
    summary = done.stdout[-3000:]
    print(summary[-400:])  # NB: the figures the README quotes (pytest -s)
    assert done.returncode == 0, summary
    generated = re.search(r"(\d+) generated", done.stdout)
    assert generated is not None and int(generated.group(1)) > 200, summary
    log = server.log_path.read_text(errors="replace")
    assert "unhandled error" not in log and "Traceback" not in log
