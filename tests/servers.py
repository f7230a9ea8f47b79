"""A Precise MRD server process on a free loopback port, for tests that meet the API as a user does.

``Server(data_dir, **env)`` starts ``python -m precise_mrd.api`` (or ``command``) over its own data
directory with a clean environment (no inherited ``PRECISE_MRD_``/``ENABLE_`` variables) and waits
for ``/health/live``; ``stop`` is graceful (SIGTERM), ``kill`` is SIGKILL. Test-only
``service_debug`` config sections (``PRECISE_MRD_ENABLE_DEBUG_JOBS``) make a job sleep or simulate
a tiny sample (``TINY``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
TERMINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}
TINY = "service_debug:\n  simulation: {n_variants: 2, molecules_per_locus: 40}\n"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    """A server process; ``stop`` is graceful (SIGTERM), ``kill`` is SIGKILL."""

    def __init__(
        self,
        data_dir: Path,
        command: list[str] | None = None,
        *,
        start_timeout: float = 60,
        verify: str | bool = True,
        cert: tuple[str, str] | None = None,
        port: int | None = None,
        **env: str,
    ) -> None:
        self.port = free_port() if port is None else port  # NB: a restart keeps its port
        tls = "PRECISE_MRD_TLS_CERTFILE" in env
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        #: what a client needs to reach a TLS server (the CA file; a client certificate for mTLS)
        self.verify, self.cert = verify, cert
        self.data_dir = data_dir
        clean = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("PRECISE_MRD_", "ENABLE_"))
            and key not in ("MAX_CONCURRENT_JOBS", "JOB_TIMEOUT_SECONDS", "CLEANUP_OLD_JOBS_HOURS")
        }
        clean.update(
            {
                "PRECISE_MRD_DATA_DIR": str(data_dir),
                "PRECISE_MRD_API_PORT": str(self.port),
                "PRECISE_MRD_EXECUTOR_POLL_SECONDS": "0.2",
                # NB: load and queue tests poll hard; the tests of the limits set their own
                "PRECISE_MRD_RATE_LIMIT": "off",
                "PRECISE_MRD_TENANT_RATE_LIMIT": "off",
                **env,
            }
        )
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = data_dir / f"server-{self.port}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop/kill
        self.process = subprocess.Popen(
            command or [sys.executable, "-m", "precise_mrd.api"],
            cwd=ROOT,
            env=clean,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # NB: stop/kill reach a shell's or a reloader's children
        )
        deadline = time.monotonic() + start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._log.close()
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
            try:
                live = requests.get(
                    self.url + "/health/live", timeout=1, verify=self.verify, cert=self.cert
                )
                if live.status_code == 200:
                    return
            except requests.ConnectionError:
                time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"server did not start: {self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.process.wait(40)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.process.wait()
        self._log.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self._signal(signal.SIGKILL)
            self.process.wait()
        self._log.close()

    def _signal(self, number: int) -> None:
        """Signal the server's process group (its job workers run in groups of their own)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, number)

    def log_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def status(self, job_id: str) -> dict[str, Any]:
        try:
            response = requests.get(f"{self.url}/status/{job_id}", timeout=10)
        except requests.ConnectionError as error:
            # NB: say why the server is gone (its own log), not just "connection refused".
            exit_code = self.process.poll()
            log = self.log_path.read_text(errors="replace")[-4000:]
            raise AssertionError(f"server unreachable (exit code {exit_code}): {log}") from error
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait(self, job_id: str, states: set[str], timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(job_id)
            if status["state"] in states:
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {status} after {timeout} s")
            time.sleep(0.2)


def submit(server: Server, **data: Any) -> str:
    response = requests.post(server.url + "/submit", data={"run_id": "it", "seed": 1, **data})
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


def curl(*args: str) -> Any:
    result = subprocess.run(["curl", "-s", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
