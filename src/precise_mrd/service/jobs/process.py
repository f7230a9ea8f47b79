"""One job's worker subprocess, as every executor starts and stops it.

:class:`JobProcess` starts ``python -m precise_mrd.service.jobs.worker --job-id ...`` in a new
session (its own process group, so a cancel, a timeout or a preemption stops the worker and
everything it started) with its output in ``<work dir>/<job_id>/worker-output.log``. On Linux the
worker also asks the kernel to SIGKILL it when the thread that started it dies
(``PR_SET_PDEATHSIG``): a supervisor killed with SIGKILL never leaves a worker running unseen.

The database URL and the compiled-kernel cache reach the worker through its environment, never its
command line, where ``ps`` would show a password.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import psutil

from precise_mrd.service.jobs.model import job_work_dir
from precise_mrd.service.settings import Settings

logger = logging.getLogger("precise_mrd.service.executor")

WORKER_MODULE = "precise_mrd.service.jobs.worker"
WORKER_OUTPUT = "worker-output.log"
_PR_SET_PDEATHSIG = 1


def describe_exit(returncode: int) -> str:
    """A reason for a worker that exited without finishing its job.

    >>> describe_exit(-9)
    'worker exited with code -9 (killed by SIGKILL)'
    >>> describe_exit(3)
    'worker exited with code 3'
    """
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"worker exited with code {returncode} (killed by {name})"
    return f"worker exited with code {returncode}"


def is_worker_process(pid: int, job_id: str) -> bool:
    """True when ``pid`` is alive and is the worker of ``job_id`` (not a reused pid)."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        command = process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return WORKER_MODULE in command and job_id in command


def kill_process_group(pid: int, sig: signal.Signals = signal.SIGKILL) -> None:
    """Send ``sig`` to the process group led by ``pid`` (workers start their own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def kill_orphan_group(pid: int, job_id: str) -> None:
    """Kill what is left of a lost worker's process group on this host.

    The group is killed when its leader is still the job's worker, or when the leader is gone:
    Linux never reuses a pid that is still some group's id, so a group with that id is the
    worker's own (children it started, which the kernel did not kill with it)."""
    if is_worker_process(pid, job_id) or not psutil.pid_exists(pid):
        kill_process_group(pid)


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGKILL the child when its parent thread dies."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return None

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

    return preexec


def worker_command(settings: Settings, job_id: str, python: str = sys.executable) -> list[str]:
    """The command line of one job's worker (no secrets in it)."""
    command = [
        python,
        "-m",
        WORKER_MODULE,
        "--job-id",
        job_id,
        "--artifact-root",
        str(settings.artifact_dir),
        "--work-root",
        str(settings.work_dir),
        "--log-level",
        settings.log_level,
    ]
    if settings.enable_debug_jobs:
        command.append("--enable-debug-jobs")
    return command


def worker_environment(settings: Settings) -> dict[str, str]:
    """This process's environment plus the database and the kernel cache the install warmed."""
    return {
        **os.environ,
        "PRECISE_MRD_DATABASE_URL": settings.database_url,
        "NUMBA_CACHE_DIR": str(settings.kernel_cache_dir),
    }


class JobProcess:
    """A started worker subprocess for one job."""

    def __init__(
        self,
        job_id: str,
        process: subprocess.Popen[bytes],
        output_path: Path,
        output: IO[bytes],
    ) -> None:
        self.job_id = job_id
        self.work_dir = output_path.parent  # NB: the output file sits in the job's directory
        self.process = process
        self.output_path = output_path
        self._output = output
        self.started = time.monotonic()

    @classmethod
    def start(
        cls,
        settings: Settings,
        job_id: str,
        python: str = sys.executable,
        *,
        tenant_id: str = "default",
    ) -> JobProcess:
        """Start the worker of ``job_id`` (scratch space under its tenant); raises
        :class:`OSError` when it cannot be started."""
        work_dir = job_work_dir(settings.work_dir, tenant_id, job_id)
        work_dir.mkdir(parents=True, exist_ok=True)
        output_path = work_dir / WORKER_OUTPUT
        output = open(output_path, "ab")  # noqa: SIM115 - closed in close()
        try:
            process = subprocess.Popen(
                [*worker_command(settings, job_id, python), "--work-dir", str(work_dir)],
                env=worker_environment(settings),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent(),
            )
        except OSError:
            output.close()
            raise
        return cls(job_id, process, output_path, output)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def elapsed(self) -> float:
        """Seconds since the worker started."""
        return time.monotonic() - self.started

    def poll(self) -> int | None:
        """The exit code, or None while the worker runs."""
        return self.process.poll()

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the worker's whole process group."""
        kill_process_group(self.process.pid, sig)

    def kill(self, *, wait_seconds: float = 10.0) -> None:
        """SIGKILL the worker's process group and reap the worker."""
        kill_process_group(self.process.pid)
        try:
            self.process.wait(timeout=wait_seconds)
        except subprocess.TimeoutExpired:
            logger.error("worker %d of job %s did not die", self.process.pid, self.job_id)

    def output_tail(self) -> str:
        """The last line the worker printed (at most 300 characters)."""
        self._output.flush()
        try:
            lines = self.output_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1][:300] if lines else ""

    def close(self) -> None:
        """Close the output file and remove the job's work directory."""
        self._output.close()
        shutil.rmtree(self.work_dir, ignore_errors=True)
