"""``precise-mrd worker``: a Celery worker that runs jobs, one worker subprocess per job.

Each message's task (:meth:`JobRunner.run`) supervises one job the way the local executor does:

1. **claim**: QUEUED -> INITIALIZING by a conditional update. A message for a job that is not
   QUEUED (a duplicate, a late redelivery, a canceled job) does nothing, so a job never runs twice
   at once and never leaves two sets of artifacts. A job whose worker is demonstrably gone (its pid
   is dead on this host, or its heartbeat is stale) is recovered first, with the attempts rule.
2. **run**: the job's :class:`~precise_mrd.service.jobs.process.JobProcess`, in its own process
   group, killed by the kernel if this worker dies; its progress and stage go to the database.
3. **watch** every ``PRECISE_MRD_EXECUTOR_POLL_SECONDS``: heartbeat, cancel (the API marks the job
   CANCELING; the worker's own progress writes stop the pipeline cooperatively and this loop kills
   the group), the soft and hard time limits, and the worker's exit.
4. **preemption**: on SIGTERM (a spot node going away, a rolling update) Celery begins a warm
   shutdown; every running job's group is killed, the job goes back to QUEUED without using up an
   attempt and its message is sent again, so another worker runs it, and the worker exits at once
   instead of waiting for hour-long jobs.

The pool is Celery's ``threads`` pool: a task only watches a subprocess, so a thread per job is
enough, and preemption is handled in one process. Celery's own time limits do not apply to that
pool; the job time limits are enforced here (``JOB_TIMEOUT_SECONDS`` and
``PRECISE_MRD_JOB_KILL_GRACE_SECONDS``).
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import Any

from celery import Celery, signals
from celery.exceptions import Reject
from sqlalchemy.exc import SQLAlchemyError

from precise_mrd.service.db.engine import (
    PoolLimits,
    create_engine_for_url,
    describe_database_error,
    make_session_factory,
)
from precise_mrd.service.jobs.celery_app import TASK_NAME, make_celery, send_jobs
from precise_mrd.service.jobs.model import JobState
from precise_mrd.service.jobs.process import JobProcess
from precise_mrd.service.jobs.service import SqlJobService, now_utc, this_host
from precise_mrd.service.jobs.supervision import check_running, give_back, is_orphan, recover
from precise_mrd.service.settings import Settings
from precise_mrd.service.storage import store_from_settings
from precise_mrd.service.urls import display_broker

logger = logging.getLogger("precise_mrd.service.worker")

SKIPPED, PREEMPTED = "skipped", "preempted"


class JobRunner:
    """The work of one Celery worker process: claims and supervises jobs."""

    def __init__(self, service: SqlJobService, settings: Settings, app: Celery) -> None:
        self.service = service
        self.settings = settings
        self.app = app
        self.host = this_host()
        self.preempting = threading.Event()
        self._lock = threading.Lock()
        self.running: dict[str, JobProcess] = {}
        #: a Prometheus counter of outcomes, when the worker exports metrics
        self.outcomes: Any = None

    def run(self, job_id: str, request_id: str | None = None) -> str:
        """Claim and run one job to its end; return what happened."""
        context = f"job {job_id} (request {request_id})"
        if self.preempting.is_set():
            # NB: a message taken while shutting down goes back to the broker untouched
            raise Reject(f"{context}: worker shutting down", requeue=True)
        job = self._claim(job_id)
        if job is None:
            state = self.service.states_of([job_id]).get(job_id)
            logger.info("%s is %s; message ignored", context, state.value if state else "gone")
            return SKIPPED
        if self.preempting.is_set():
            self._give_back(job_id, context)
            return PREEMPTED
        try:
            process = JobProcess.start(self.settings, job_id, tenant_id=job.spec.tenant_id)
        except OSError as error:
            self.service.transition(
                job_id,
                from_states=[JobState.INITIALIZING],
                to_state=JobState.SYSTEM_ERROR,
                reason=f"could not start the worker: {error}",
            )
            return JobState.SYSTEM_ERROR.value
        with self._lock:
            self.running[job_id] = process
        try:
            self.service.set_worker(job_id, pid=process.pid, host=self.host)
            logger.info(
                "%s started in worker pid %d (attempt %d)", context, process.pid, job.attempts
            )
            return self._watch(process, context)
        finally:
            with self._lock:
                self.running.pop(job_id, None)
            process.close()

    def _claim(self, job_id: str) -> Any:
        job = self.service.claim(job_id, worker_host=self.host)
        if job is not None:
            return job
        stale_before = now_utc() - timedelta(seconds=self.settings.heartbeat_stale_seconds)
        for lease in self.service.active_leases(job_id):
            if is_orphan(lease, self.host, stale_before) and recover(
                self.service, self.settings, lease, self.host
            ):
                return self.service.claim(job_id, worker_host=self.host)
        return None

    def _watch(self, process: JobProcess, context: str) -> str:
        job_id = process.job_id
        while True:
            try:
                state = self.service.states_of([job_id]).get(job_id)
                outcome = check_running(self.service, self.settings, process, state)
                if outcome is not None:
                    final = self.service.states_of([job_id]).get(job_id)
                    logger.info("%s ended %s", context, final.value if final else outcome)
                    return final.value if final else outcome
                if self.preempting.is_set():
                    process.kill()
                    self._give_back(job_id, context)
                    return PREEMPTED
                self.service.heartbeat([job_id])
            except SQLAlchemyError as error:
                # NB: the database is away; the job goes on and so does the watch
                logger.warning("%s: database unavailable (%s); retrying", context, error)
            self.preempting.wait(self.settings.executor_poll_seconds)

    def _give_back(self, job_id: str, context: str) -> None:
        if give_back(self.service, job_id, f"worker on {self.host} is shutting down"):
            job = self.service.load(job_id)
            sent = send_jobs(self.app, self.settings, [(job_id, job.spec.request_id)])
            self.service.mark_dispatched(sent)
            logger.warning("%s given back to the queue (the worker is shutting down)", context)

    def preempt(self) -> None:
        """Stop every running job and give it back (called on the worker's warm shutdown)."""
        if not self.preempting.is_set():
            logger.warning("worker shutting down: giving back %d running job(s)", len(self.running))
        self.preempting.set()


def build_runner(settings: Settings, *, concurrency: int) -> tuple[JobRunner, Any]:
    """The runner and its database engine (one connection per job thread, plus a spare)."""
    engine = create_engine_for_url(
        settings.database_url, PoolLimits(size=concurrency + 1, max_overflow=2)
    )
    service = SqlJobService(make_session_factory(engine), store_from_settings(settings), settings)
    return JobRunner(service, settings, make_celery(settings)), engine


def register_task(runner: JobRunner) -> None:
    """Register :data:`TASK_NAME` on the runner's app."""

    @runner.app.task(name=TASK_NAME, acks_late=True, reject_on_worker_lost=True)  # type: ignore[untyped-decorator]
    def run_job(job_id: str, request_id: str | None = None) -> str:
        outcome = runner.run(job_id, request_id)
        if runner.outcomes is not None:
            runner.outcomes.labels(outcome).inc()
        return outcome


def serve_worker_metrics(runner: JobRunner, host: str, port: int) -> None:
    """Prometheus on ``host:port``: the worker process's CPU, memory and open files, its running
    jobs and the outcomes of the jobs it ran (for autoscaling and alerts per worker)."""
    from prometheus_client import (
        CollectorRegistry,
        Counter,
        Gauge,
        PlatformCollector,
        ProcessCollector,
        start_http_server,
    )

    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    running = Gauge(
        "precise_mrd_worker_running_jobs", "Jobs this worker runs now", registry=registry
    )
    running.set_function(lambda: len(runner.running))
    runner.outcomes = Counter(
        "precise_mrd_worker_jobs",
        "Jobs this worker ran to an end, by outcome (a final state, preempted, skipped)",
        ["outcome"],
        registry=registry,
    )
    start_http_server(port, addr=host, registry=registry)
    logger.info("worker metrics on http://%s:%d/metrics", host, port)


def run_worker(
    settings: Settings,
    *,
    concurrency: int,
    queues: list[str],
    hostname: str | None = None,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
) -> int:
    """Run a Celery worker in this process until it is stopped; return its exit code."""
    runner, engine = build_runner(settings, concurrency=concurrency)
    if metrics_port is not None:
        serve_worker_metrics(runner, metrics_host, metrics_port)
    try:
        runner.service.counts_by_state()
    except SQLAlchemyError as error:
        engine.dispose()
        raise RuntimeError(describe_database_error(settings.database_url, error)) from None
    register_task(runner)
    settings.work_dir.mkdir(parents=True, exist_ok=True)

    def on_shutdown(**_: Any) -> None:
        runner.preempt()

    def keep_our_logging(**_: Any) -> None:
        """Connected, so Celery leaves the JSON logging of ``precise-mrd worker`` alone."""

    signals.worker_shutting_down.connect(on_shutdown, weak=False)
    signals.setup_logging.connect(keep_our_logging, weak=False)
    logger.info(
        "worker starting: broker %s, queues %s, concurrency %d, job timeout %s s",
        display_broker(settings.broker_url),
        ",".join(queues),
        concurrency,
        settings.job_timeout_seconds,
    )
    worker = runner.app.Worker(
        pool="threads",
        concurrency=concurrency,
        queues=queues,
        loglevel=settings.log_level.upper(),
        hostname=hostname or f"precise-mrd@{runner.host}",
        without_gossip=True,
        without_mingle=True,
        optimization="fair",
        redirect_stdouts=False,
    )
    try:
        worker.start()
    finally:
        signals.worker_shutting_down.disconnect(on_shutdown)
        signals.setup_logging.disconnect(keep_our_logging)
        engine.dispose()
    return int(worker.exitcode or 0)
