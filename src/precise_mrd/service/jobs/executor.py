"""LocalExecutor: runs jobs as subprocesses of the API process, on one machine.

A background thread wakes every ``PRECISE_MRD_EXECUTOR_POLL_SECONDS`` (or at :meth:`notify`) and

* reaps finished workers: a worker that exited without writing a final state (killed, crashed)
  ends its job as SYSTEM_ERROR with the exit code as reason;
* stops the workers of CANCELING jobs (SIGKILL to the whole process group) -> CANCELED;
* kills workers running longer than ``JOB_TIMEOUT_SECONDS`` -> SYSTEM_ERROR, reason ``"timeout"``;
* writes a heartbeat for the jobs it runs;
* claims QUEUED jobs (oldest first; a conditional UPDATE, so two executors never share a job) while
  fewer than ``MAX_CONCURRENT_JOBS`` run, and starts
  ``python -m precise_mrd.service.jobs.worker --job-id ...`` for each in a new session/process
  group;
* recovers orphans: an INITIALIZING/RUNNING/CANCELING job that no live executor looks after (its
  worker pid is gone on this host, or its heartbeat is older than
  ``PRECISE_MRD_HEARTBEAT_STALE_SECONDS``) is re-queued while
  ``attempts < PRECISE_MRD_MAX_JOB_ATTEMPTS`` and otherwise ends as SYSTEM_ERROR with a reason;
  a CANCELING orphan ends CANCELED. A still-living orphan worker is killed first so a job never
  runs twice. This runs at :meth:`start` and then periodically;
* every ``PRECISE_MRD_CLEANUP_INTERVAL_SECONDS`` deletes finished jobs older than
  ``CLEANUP_OLD_JOBS_HOURS`` with their artifacts and uploads.

:meth:`stop` kills the running workers and puts their jobs back in the queue (without using up an
attempt), so a graceful restart loses nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO

import psutil

from precise_mrd.service.db.models import JobRecord
from precise_mrd.service.jobs.model import JobState
from precise_mrd.service.jobs.service import JobLease, SqlJobService, now_utc, this_host
from precise_mrd.service.settings import Settings

logger = logging.getLogger("precise_mrd.service.executor")

WORKER_MODULE = "precise_mrd.service.jobs.worker"
WORKER_OUTPUT = "worker-output.log"
TIMEOUT_REASON = "timeout"
S = JobState


@dataclass
class _RunningJob:
    job_id: str
    process: subprocess.Popen[bytes]
    started: float  # time.monotonic() at start
    output_path: Path
    output: IO[bytes]


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


def kill_process_group(pid: int) -> None:
    """SIGKILL the process group led by ``pid`` (workers start their own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


class LocalExecutor:
    """Runs queued jobs in worker subprocesses; see the module docstring for the rules."""

    def __init__(
        self,
        service: SqlJobService,
        settings: Settings,
        *,
        python_executable: str = sys.executable,
    ) -> None:
        self.service = service
        self.settings = settings
        self.python_executable = python_executable
        self.host = this_host()
        self._running: dict[str, _RunningJob] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_cleanup = time.monotonic()
        self._last_recovery = time.monotonic()
        # NB: debug lines about idle decisions are written when they change, not every poll.
        self._last_decision: str | None = None
        self._last_progress: dict[str, tuple[str, str | None]] = {}

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Recover orphans, then run the loop in a daemon thread."""
        if self._thread is not None:
            return
        self.settings.work_dir.mkdir(parents=True, exist_ok=True)
        self.recover_orphans()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="local-executor", daemon=True)
        self._thread.start()
        logger.info(
            "local executor started: max %d concurrent jobs, timeout %s s",
            self.settings.max_concurrent_jobs,
            self.settings.job_timeout_seconds,
        )

    def stop(self, *, timeout: float = 30.0) -> None:
        """Stop the loop, kill running workers and re-queue their jobs."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        for running in list(self._running.values()):
            self._kill(running)
            state = self.service.states_of([running.job_id]).get(running.job_id)
            if state == S.CANCELING:
                self.service.transition(
                    running.job_id, from_states=[S.CANCELING], to_state=S.CANCELED
                )
            elif state in (S.INITIALIZING, S.RUNNING):
                self.service.transition(
                    running.job_id,
                    from_states=[S.INITIALIZING, S.RUNNING],
                    to_state=S.QUEUED,
                    reason="re-queued: the executor stopped",
                    attempts=JobRecord.attempts - 1,
                    worker_pid=None,
                    progress=0.0,
                    stage=None,
                )
            self._forget(running)

    def notify(self) -> None:
        """Wake the loop now (e.g. after a submit or a cancel)."""
        self._wake.set()

    @property
    def running_job_ids(self) -> list[str]:
        """Jobs whose worker this executor is running."""
        return list(self._running)

    @property
    def is_alive(self) -> bool:
        """True while the loop thread runs (for health checks)."""
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:
                logger.exception("executor iteration failed; retrying")
            self._wake.wait(self.settings.executor_poll_seconds)
            self._wake.clear()

    # ------------------------------------------------------------------ one iteration
    def run_once(self) -> None:
        """Reap, cancel, time out, heartbeat, claim; and now and then recover and clean up."""
        self._reap()
        self._enforce_cancel_and_timeout()
        self.service.heartbeat(self._running)
        self._log_progress()
        self._claim()
        now = time.monotonic()
        if now - self._last_recovery >= min(5.0, self.settings.heartbeat_stale_seconds):
            self._last_recovery = now
            self.recover_orphans()
        if now - self._last_cleanup >= self.settings.cleanup_interval_seconds:
            self._last_cleanup = now
            self.cleanup_once()

    def _reap(self) -> None:
        for running in list(self._running.values()):
            returncode = running.process.poll()
            if returncode is None:
                continue
            state = self.service.states_of([running.job_id]).get(running.job_id)
            if state == S.CANCELING:
                self.service.transition(
                    running.job_id, from_states=[S.CANCELING], to_state=S.CANCELED
                )
            elif state in (S.INITIALIZING, S.RUNNING):
                reason = describe_exit(returncode)
                tail = self._output_tail(running)
                if tail:
                    reason = f"{reason}: {tail}"
                logger.error("job %s: %s", running.job_id, reason)
                self._store_output(running)
                self.service.transition(
                    running.job_id,
                    from_states=[S.INITIALIZING, S.RUNNING],
                    to_state=S.SYSTEM_ERROR,
                    reason=reason,
                )
            self._forget(running)

    def _enforce_cancel_and_timeout(self) -> None:
        if not self._running:
            return
        states = self.service.states_of(self._running)
        for job_id, running in list(self._running.items()):
            state = states.get(job_id)
            if state == S.CANCELING:
                self._kill(running)
                self.service.transition(job_id, from_states=[S.CANCELING], to_state=S.CANCELED)
                logger.info("job %s canceled; worker group %d killed", job_id, running.process.pid)
                self._forget(running)
            elif time.monotonic() - running.started > self.settings.job_timeout_seconds:
                self._kill(running)
                self.service.transition(
                    job_id,
                    from_states=[S.INITIALIZING, S.RUNNING, S.CANCELING],
                    to_state=S.SYSTEM_ERROR,
                    reason=TIMEOUT_REASON,
                )
                logger.warning(
                    "job %s timed out after %s s", job_id, self.settings.job_timeout_seconds
                )
                self._forget(running)

    def _claim(self) -> None:
        limit = self.settings.max_concurrent_jobs
        while len(self._running) < limit and not self._stop.is_set():
            job = self.service.claim_next(worker_host=self.host)
            if job is None:
                self._decide(f"queue empty; {len(self._running)} of {limit} slots busy")
                return
            self._last_decision = None
            logger.debug(
                "claimed job %s (attempt %d); slot %d of %d",
                job.job_id,
                job.attempts,
                len(self._running) + 1,
                limit,
            )
            self._spawn(job.job_id)
        if len(self._running) >= limit:
            self._decide(f"all {limit} slots busy; queued jobs wait")

    def _decide(self, decision: str) -> None:
        """Log an idle decision at debug level once, until it changes."""
        if decision != self._last_decision:
            self._last_decision = decision
            logger.debug("executor: %s", decision)

    def _log_progress(self) -> None:
        """At debug level: each running job's state and stage whenever they change."""
        if not logger.isEnabledFor(logging.DEBUG):
            return
        for job_id in list(self._running):
            job = self.service.load(job_id)
            seen = (job.state.value, job.stage)
            if self._last_progress.get(job_id) != seen:
                self._last_progress[job_id] = seen
                logger.debug(
                    "job %s %s, stage %s, progress %.2f",
                    job_id,
                    job.state.value,
                    job.stage,
                    job.progress,
                )

    def _spawn(self, job_id: str) -> None:
        work_dir = self.settings.work_dir / job_id
        work_dir.mkdir(parents=True, exist_ok=True)
        output_path = work_dir / WORKER_OUTPUT
        command = [
            self.python_executable,
            "-m",
            WORKER_MODULE,
            "--job-id",
            job_id,
            "--artifact-root",
            str(self.settings.artifact_dir),
            "--work-root",
            str(self.settings.work_dir),
            "--log-level",
            self.settings.log_level,
        ]
        if self.settings.enable_debug_jobs:
            command.append("--enable-debug-jobs")
        output = open(output_path, "ab")  # noqa: SIM115 - closed in _forget
        try:
            process = subprocess.Popen(
                command,
                env=self._worker_environment(),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as error:
            output.close()
            self.service.transition(
                job_id,
                from_states=[S.INITIALIZING],
                to_state=S.SYSTEM_ERROR,
                reason=f"could not start the worker: {error}",
            )
            return
        self._running[job_id] = _RunningJob(
            job_id=job_id,
            process=process,
            started=time.monotonic(),
            output_path=output_path,
            output=output,
        )
        self.service.set_worker(job_id, pid=process.pid, host=self.host)
        logger.info("job %s started in worker pid %d", job_id, process.pid)

    def _worker_environment(self) -> dict[str, str]:
        """The API's environment plus the database (in the environment, not the command line,
        where `ps` would show its password) and the compiled-kernel cache the install warmed."""
        return {
            **os.environ,
            "PRECISE_MRD_DATABASE_URL": self.settings.database_url,
            "NUMBA_CACHE_DIR": str(self.settings.kernel_cache_dir),
        }

    def _kill(self, running: _RunningJob) -> None:
        kill_process_group(running.process.pid)
        try:
            running.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            logger.error("worker %d of job %s did not die", running.process.pid, running.job_id)

    def _forget(self, running: _RunningJob) -> None:
        running.output.close()
        self._running.pop(running.job_id, None)
        self._last_progress.pop(running.job_id, None)
        shutil.rmtree(self.settings.work_dir / running.job_id, ignore_errors=True)

    def _output_tail(self, running: _RunningJob) -> str:
        running.output.flush()
        try:
            lines = running.output_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1][:300] if lines else ""

    def _store_output(self, running: _RunningJob) -> None:
        with contextlib.suppress(OSError):
            self.service.store.put_file(
                f"jobs/{running.job_id}/{WORKER_OUTPUT}", running.output_path
            )

    # ------------------------------------------------------------------ recovery and cleanup
    def recover_orphans(self) -> list[str]:
        """Re-queue or fail active jobs no live executor looks after; return their ids."""
        recovered = []
        stale_before = now_utc() - timedelta(seconds=self.settings.heartbeat_stale_seconds)
        for lease in self.service.active_leases():
            if lease.job_id in self._running or not self._is_orphan(lease, stale_before):
                continue
            if (
                lease.worker_pid is not None
                and lease.worker_host == self.host
                and is_worker_process(lease.worker_pid, lease.job_id)
            ):
                kill_process_group(lease.worker_pid)
            if self._recover(lease):
                recovered.append(lease.job_id)
                shutil.rmtree(self.settings.work_dir / lease.job_id, ignore_errors=True)
        return recovered

    def _is_orphan(self, lease: JobLease, stale_before: datetime) -> bool:
        if lease.worker_host == self.host and (
            lease.worker_pid is None or not is_worker_process(lease.worker_pid, lease.job_id)
        ):
            # NB: a claim without a pid yet is only an orphan once its heartbeat is stale too.
            return lease.worker_pid is not None or (
                lease.heartbeat_at is None or lease.heartbeat_at < stale_before
            )
        return lease.heartbeat_at is None or lease.heartbeat_at < stale_before

    def _recover(self, lease: JobLease) -> bool:
        gone = f"worker pid {lease.worker_pid} on {lease.worker_host} was lost"
        if lease.state == S.CANCELING:
            return self.service.transition(
                lease.job_id,
                from_states=[S.CANCELING],
                to_state=S.CANCELED,
                reason=f"canceled on request ({gone})",
            )
        live = [S.INITIALIZING, S.RUNNING]
        if lease.attempts < self.settings.max_job_attempts:
            reason = (
                f"re-queued after a crash ({gone}); attempt {lease.attempts} of "
                f"{self.settings.max_job_attempts}"
            )
            logger.warning("job %s %s", lease.job_id, reason)
            return self.service.transition(
                lease.job_id,
                from_states=live,
                to_state=S.QUEUED,
                reason=reason,
                worker_pid=None,
                progress=0.0,
                stage=None,
            )
        reason = f"{gone} and the job had used all {lease.attempts} attempts"
        logger.error("job %s failed: %s", lease.job_id, reason)
        return self.service.transition(
            lease.job_id, from_states=live, to_state=S.SYSTEM_ERROR, reason=reason
        )

    def cleanup_once(self, *, now: datetime | None = None) -> int:
        """Delete finished jobs older than ``CLEANUP_OLD_JOBS_HOURS``; return how many."""
        cutoff = (now or now_utc()) - timedelta(hours=self.settings.cleanup_old_jobs_hours)
        deleted = 0
        for job_id in self.service.finished_before(cutoff):
            try:
                if self.service.delete_job(job_id):
                    deleted += 1
                shutil.rmtree(self.settings.work_dir / job_id, ignore_errors=True)
            except Exception:
                logger.exception("could not delete job %s", job_id)
        if deleted:
            logger.info("cleanup: deleted %d jobs finished before %s", deleted, cutoff)
        return deleted
