"""LocalExecutor: runs jobs as subprocesses of the API process, on one machine.

A background thread wakes every ``PRECISE_MRD_EXECUTOR_POLL_SECONDS`` (or at :meth:`notify`) and

* applies :func:`~precise_mrd.service.jobs.supervision.check_running` to every worker it runs
  (reap, cancel, soft and hard time limits) and writes their heartbeat;
* claims QUEUED jobs (oldest first; a conditional UPDATE, so two executors never share a job) while
  fewer than ``MAX_CONCURRENT_JOBS`` run, and starts a
  :class:`~precise_mrd.service.jobs.process.JobProcess` for each;
* recovers orphans (:func:`~precise_mrd.service.jobs.supervision.recover_orphans`) at
  :meth:`start` and then periodically;
* every ``PRECISE_MRD_CLEANUP_INTERVAL_SECONDS`` deletes finished jobs older than
  ``CLEANUP_OLD_JOBS_HOURS`` with their artifacts and uploads.

:meth:`stop` kills the running workers and puts their jobs back in the queue (without using up an
attempt), so a graceful restart loses nothing.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError

from precise_mrd.service.db.engine import describe_database_error
from precise_mrd.service.jobs.model import JobState
from precise_mrd.service.jobs.process import JobProcess
from precise_mrd.service.jobs.service import SqlJobService, this_host
from precise_mrd.service.jobs.supervision import (
    check_running,
    cleanup_finished,
    give_back,
    recover_orphans,
)
from precise_mrd.service.settings import Settings

logger = logging.getLogger("precise_mrd.service.executor")
S = JobState


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
        self._running: dict[str, JobProcess] = {}
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
            running.kill()
            give_back(self.service, running.job_id, "the executor stopped")
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
        outage: str | None = None
        while not self._stop.is_set():
            try:
                self.run_once()
                if outage is not None:
                    logger.warning("executor: the database is back")
                    outage = None
            except SQLAlchemyError as error:
                # NB: an outage is one line when it starts, not a traceback every poll
                message = describe_database_error(self.settings.database_url, error)
                if message != outage:
                    logger.warning("executor: %s; retrying", message)
                    outage = message
            except Exception:
                logger.exception("executor iteration failed; retrying")
            self._wake.wait(self.settings.executor_poll_seconds)
            self._wake.clear()

    # ------------------------------------------------------------------ one iteration
    def run_once(self) -> None:
        """Supervise, heartbeat, claim; and now and then recover and clean up."""
        self._supervise()
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

    def _supervise(self) -> None:
        if not self._running:
            return
        states = self.service.states_of(self._running)
        for job_id, running in list(self._running.items()):
            if check_running(self.service, self.settings, running, states.get(job_id)):
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
        try:
            tenant_id = self.service.load(job_id).spec.tenant_id
            running = JobProcess.start(
                self.settings, job_id, self.python_executable, tenant_id=tenant_id
            )
        except OSError as error:
            self.service.transition(
                job_id,
                from_states=[S.INITIALIZING],
                to_state=S.SYSTEM_ERROR,
                reason=f"could not start the worker: {error}",
            )
            return
        self._running[job_id] = running
        self.service.set_worker(job_id, pid=running.pid, host=self.host)
        logger.info("job %s started in worker pid %d", job_id, running.pid)

    def _forget(self, running: JobProcess) -> None:
        running.close()
        self._running.pop(running.job_id, None)
        self._last_progress.pop(running.job_id, None)

    # ------------------------------------------------------------------ recovery and cleanup
    def recover_orphans(self) -> list[str]:
        """Re-queue or fail active jobs no live executor looks after; return their ids."""
        return recover_orphans(self.service, self.settings, self.host, skip=self._running)

    def cleanup_once(self, *, now: datetime | None = None) -> int:
        """Delete finished jobs older than ``CLEANUP_OLD_JOBS_HOURS``; return how many."""
        return cleanup_finished(self.service, self.settings, now=now)
