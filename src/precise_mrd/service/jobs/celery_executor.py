"""CeleryExecutor: the API side of ``PRECISE_MRD_EXECUTOR=celery``.

The API never runs a job itself. A background thread wakes every
``PRECISE_MRD_EXECUTOR_POLL_SECONDS`` (or at :meth:`notify`, right after a submit) and

* sends a message for every QUEUED job not sent yet, or sent more than
  ``PRECISE_MRD_REDISPATCH_SECONDS`` ago and still not claimed (a broker that restarted without
  its messages, a publish that failed while the broker was away); a duplicate message is harmless,
  the claim is conditional;
* recovers orphans with the same rule as the local executor: a job whose worker is gone (its
  heartbeat older than ``PRECISE_MRD_HEARTBEAT_STALE_SECONDS``) is re-queued, and so sent again,
  or ends SYSTEM_ERROR after ``PRECISE_MRD_MAX_JOB_ATTEMPTS``;
* deletes finished jobs older than ``CLEANUP_OLD_JOBS_HOURS``.

Several API processes may run this loop at once: every change is a conditional update.
Cancel needs nothing here: the API marks the job CANCELING and the worker that runs it stops it.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

from precise_mrd.service.jobs.celery_app import check_broker, make_celery, queue_length, send_jobs
from precise_mrd.service.jobs.service import SqlJobService, now_utc, this_host
from precise_mrd.service.jobs.supervision import cleanup_finished, recover_orphans
from precise_mrd.service.settings import Settings

logger = logging.getLogger("precise_mrd.service.executor")


class CeleryExecutor:
    """Sends queued jobs to Celery workers and recovers the jobs of lost workers."""

    name = "celery"

    def __init__(self, service: SqlJobService, settings: Settings) -> None:
        self.service = service
        self.settings = settings
        self.app = make_celery(settings)
        self.host = this_host()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_recovery = 0.0
        self._last_cleanup = time.monotonic()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="celery-dispatch", daemon=True)
        self._thread.start()
        logger.info(
            "celery executor started: queue %s, redispatch after %s s",
            self.settings.celery_queue,
            self.settings.redispatch_seconds,
        )

    def stop(self, *, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def notify(self) -> None:
        self._wake.set()

    @property
    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def check(self) -> None:
        """Raise when the broker does not answer (for ``/health``)."""
        check_broker(self.app, timeout=self.settings.broker_connect_timeout_seconds)

    def queue_length(self) -> int:
        """Messages waiting on the broker (the autoscaler's signal)."""
        return queue_length(
            self.app,
            self.settings.celery_queue,
            timeout=self.settings.broker_connect_timeout_seconds,
        )

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception as error:  # NB: a database or broker outage; the next turn retries
                logger.warning("celery executor iteration failed: %s; retrying", error)
            self._wake.wait(self.settings.executor_poll_seconds)
            self._wake.clear()

    def run_once(self) -> int:
        """Recover now and then, send what is due, clean up now and then; return how many sent."""
        now = time.monotonic()
        if now - self._last_recovery >= min(5.0, self.settings.heartbeat_stale_seconds):
            self._last_recovery = now
            recover_orphans(self.service, self.settings, self.host)
        sent = self.dispatch_due()
        if now - self._last_cleanup >= self.settings.cleanup_interval_seconds:
            self._last_cleanup = now
            cleanup_finished(self.service, self.settings)
        return sent

    def dispatch_due(self) -> int:
        """Send the messages of every due QUEUED job; return how many were sent."""
        cutoff = now_utc() - timedelta(seconds=self.settings.redispatch_seconds)
        total = 0
        while not self._stop.is_set():
            due = self.service.due_for_dispatch(cutoff, limit=200)
            if not due:
                break
            sent = send_jobs(self.app, self.settings, due)
            self.service.mark_dispatched(sent)
            total += len(sent)
            if len(sent) < len(due):
                break
        if total:
            logger.debug("sent %d job message(s) to queue %s", total, self.settings.celery_queue)
        return total
