"""The rules every executor applies to running jobs, whichever process runs them.

* :func:`check_running` looks once at a running worker: a worker that exited without writing a
  final state ends its job SYSTEM_ERROR with the exit code and its last line; a CANCELING job's
  worker group is killed -> CANCELED; a worker past ``JOB_TIMEOUT_SECONDS`` gets SIGTERM (the soft
  limit, job -> SYSTEM_ERROR ``timeout``) and SIGKILL ``PRECISE_MRD_JOB_KILL_GRACE_SECONDS`` later
  (the hard limit).
* :func:`give_back` puts a job whose worker was stopped on purpose (the executor shutting down, a
  preempted node) back in the queue without using up an attempt.
* :func:`recover_orphans` re-queues or fails active jobs no live supervisor looks after (their
  worker pid is gone on this host, or their heartbeat is older than
  ``PRECISE_MRD_HEARTBEAT_STALE_SECONDS``): re-queued while ``attempts <
  PRECISE_MRD_MAX_JOB_ATTEMPTS``, SYSTEM_ERROR with the reason otherwise; a CANCELING orphan ends
  CANCELED. A still-living orphan worker on this host is killed first, so a job never runs twice.
* :func:`cleanup_finished` deletes finished jobs older than ``CLEANUP_OLD_JOBS_HOURS``.

Every change is a conditional transition, so several executors (API processes, Celery workers)
applying these rules at once never disagree: the first wins and the others change nothing.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Container
from datetime import datetime, timedelta

from precise_mrd.service.db.models import JobRecord
from precise_mrd.service.jobs.model import (
    JobState,
    job_key_prefix,
    legacy_job_key_prefix,
    remove_work_dirs,
)
from precise_mrd.service.jobs.process import (
    WORKER_OUTPUT,
    JobProcess,
    describe_exit,
    is_worker_process,
    kill_orphan_group,
)
from precise_mrd.service.jobs.service import JobLease, SqlJobService, now_utc
from precise_mrd.service.settings import Settings

logger = logging.getLogger("precise_mrd.service.executor")

TIMEOUT_REASON = "timeout"
S = JobState
LIVE = (S.INITIALIZING, S.RUNNING)

#: outcomes of :func:`check_running`
EXITED, CANCELED, TIMED_OUT = "exited", "canceled", "timed_out"


def check_running(
    service: SqlJobService, settings: Settings, job: JobProcess, state: JobState | None
) -> str | None:
    """One look at a running worker; None while it should go on, else why it stopped."""
    returncode = job.poll()
    if returncode is not None:
        if state == S.CANCELING:
            service.transition(job.job_id, from_states=[S.CANCELING], to_state=S.CANCELED)
        elif state in LIVE:
            reason = describe_exit(returncode)
            tail = job.output_tail()
            if tail:
                reason = f"{reason}: {tail}"
            logger.error("job %s: %s", job.job_id, reason)
            store_output(service, job)
            service.transition(job.job_id, from_states=LIVE, to_state=S.SYSTEM_ERROR, reason=reason)
        return EXITED
    if state == S.CANCELING:
        job.kill()
        service.transition(job.job_id, from_states=[S.CANCELING], to_state=S.CANCELED)
        logger.info("job %s canceled; worker group %d killed", job.job_id, job.pid)
        return CANCELED
    if job.elapsed > settings.job_timeout_seconds:
        if state in LIVE:
            service.transition(
                job.job_id,
                from_states=[*LIVE, S.CANCELING],
                to_state=S.SYSTEM_ERROR,
                reason=TIMEOUT_REASON,
            )
            logger.warning(
                "job %s timed out after %s s; worker group %d sent SIGTERM",
                job.job_id,
                settings.job_timeout_seconds,
                job.pid,
            )
            job.signal(signal.SIGTERM)
        if job.elapsed > settings.job_timeout_seconds + settings.job_kill_grace_seconds:
            job.kill()
            return TIMED_OUT
    return None


def store_output(service: SqlJobService, job: JobProcess) -> None:
    """Keep a dead worker's output beside the job's artifacts (for the post-mortem)."""
    try:
        prefix = job_key_prefix(service.load(job.job_id).spec.tenant_id, job.job_id)
    except Exception:  # NB: the database is away: keep the output where old jobs keep theirs
        prefix = legacy_job_key_prefix(job.job_id)
    try:
        service.store.put_file(f"{prefix}{WORKER_OUTPUT}", job.output_path)
    except OSError:
        logger.warning("could not store the output of job %s's worker", job.job_id)


def give_back(service: SqlJobService, job_id: str, why: str) -> bool:
    """Re-queue a job whose worker this process stopped on purpose; no attempt is used up.
    A CANCELING job ends CANCELED instead. True when the job went back to the queue."""
    state = service.states_of([job_id]).get(job_id)
    if state == S.CANCELING:
        service.transition(job_id, from_states=[S.CANCELING], to_state=S.CANCELED)
        return False
    if state not in LIVE:
        return False
    done = service.transition(
        job_id,
        from_states=LIVE,
        to_state=S.QUEUED,
        reason=f"re-queued: {why}",
        attempts=JobRecord.attempts - 1,
        worker_pid=None,
        progress=0.0,
        stage=None,
        dispatched_at=None,
    )
    if done:
        logger.warning("job %s re-queued: %s", job_id, why)
    return done


def is_orphan(lease: JobLease, host: str, stale_before: datetime) -> bool:
    """True when no live supervisor looks after the job of ``lease``."""
    if lease.worker_host == host and (
        lease.worker_pid is None or not is_worker_process(lease.worker_pid, lease.job_id)
    ):
        # NB: a claim without a pid yet is only an orphan once its heartbeat is stale too.
        return lease.worker_pid is not None or (
            lease.heartbeat_at is None or lease.heartbeat_at < stale_before
        )
    return lease.heartbeat_at is None or lease.heartbeat_at < stale_before


def recover_orphans(
    service: SqlJobService, settings: Settings, host: str, *, skip: Container[str] = ()
) -> list[str]:
    """Re-queue or fail the active jobs no live supervisor looks after; return their ids."""
    recovered = []
    stale_before = now_utc() - timedelta(seconds=settings.heartbeat_stale_seconds)
    for lease in service.active_leases():
        if lease.job_id in skip or not is_orphan(lease, host, stale_before):
            continue
        if recover(service, settings, lease, host):
            recovered.append(lease.job_id)
            remove_work_dirs(settings.work_dir, lease.job_id)
    return recovered


def recover(service: SqlJobService, settings: Settings, lease: JobLease, host: str) -> bool:
    """Apply the orphan rule to one job (killing its worker first when it lives on this host)."""
    if lease.worker_pid is not None and lease.worker_host == host:
        kill_orphan_group(lease.worker_pid, lease.job_id)
    gone = f"worker pid {lease.worker_pid} on {lease.worker_host} was lost"
    if lease.state == S.CANCELING:
        return service.transition(
            lease.job_id,
            from_states=[S.CANCELING],
            to_state=S.CANCELED,
            reason=f"canceled on request ({gone})",
        )
    if lease.attempts < settings.max_job_attempts:
        reason = (
            f"re-queued after a crash ({gone}); attempt {lease.attempts} of "
            f"{settings.max_job_attempts}"
        )
        logger.warning("job %s %s", lease.job_id, reason)
        return service.transition(
            lease.job_id,
            from_states=LIVE,
            to_state=S.QUEUED,
            reason=reason,
            worker_pid=None,
            progress=0.0,
            stage=None,
            dispatched_at=None,
        )
    reason = f"{gone} and the job had used all {lease.attempts} attempts"
    logger.error("job %s failed: %s", lease.job_id, reason)
    return service.transition(
        lease.job_id, from_states=LIVE, to_state=S.SYSTEM_ERROR, reason=reason
    )


def cleanup_finished(
    service: SqlJobService, settings: Settings, *, now: datetime | None = None
) -> int:
    """Delete finished jobs older than ``CLEANUP_OLD_JOBS_HOURS``; return how many."""
    cutoff = (now or now_utc()) - timedelta(hours=settings.cleanup_old_jobs_hours)
    deleted = 0
    for job_id in service.finished_before(cutoff):
        try:
            if service.delete_job(job_id):
                deleted += 1
            remove_work_dirs(settings.work_dir, job_id)
        except Exception:
            logger.exception("could not delete job %s", job_id)
    if deleted:
        logger.info("cleanup: deleted %d jobs finished before %s", deleted, cutoff)
    return deleted
