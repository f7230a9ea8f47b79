"""InMemoryJobService: the JobService protocol in a dict, for fast unit tests of the API.

It keeps jobs in insertion order behind a lock and never runs anything: a test moves a job along
with :meth:`InMemoryJobService.update`, as an executor would. Tenants are isolated exactly as in
the SQL service (another tenant's job is "not found"), and ``list_jobs`` pages newest first with an
opaque cursor.

>>> service = InMemoryJobService()
>>> job = service.submit(JobSpec(run_id="r1", seed=1, config_yaml=""))
>>> job.state
<JobState.QUEUED: 'QUEUED'>
>>> service.update(job.job_id, state=JobState.RUNNING, progress=0.5, stage="consensus").stage
'consensus'
>>> service.counts_by_state()[JobState.RUNNING]
1
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from precise_mrd.service.jobs.model import (
    JobNotFoundError,
    JobSpec,
    JobState,
    JobStateError,
    JobView,
    SubmitLimits,
)

# NB: the same opaque cursor format as the SQL service, so clients cannot tell them apart.
from precise_mrd.service.jobs.service import decode_cursor, encode_cursor

_UNSET: Any = object()


class InMemoryJobService:
    """A JobService in memory; ``artifact_root`` is where artifact keys resolve to files."""

    def __init__(self, artifact_root: Path | None = None) -> None:
        self._jobs: dict[str, JobView] = {}
        self._lock = threading.Lock()
        self._artifact_root = artifact_root
        self._sequence = 0

    def submit(
        self, spec: JobSpec, *, job_id: str | None = None, limits: SubmitLimits | None = None
    ) -> JobView:
        """Store a QUEUED job (under ``job_id`` when given, as the SQL service allows), when it
        fits ``limits`` (checked under the same lock as the insert)."""
        with self._lock:
            if limits is not None:
                limits.check(active=self._active(spec.tenant_id), queued=self._queued())
            self._sequence += 1
            # NB: equal clock readings are broken by job id, so give ids a sortable sequence.
            job_id = job_id or f"{self._sequence:08d}-{uuid.uuid4().hex[:12]}"
            if job_id in self._jobs:
                raise ValueError(f"job id {job_id!r} is taken")
            job = JobView(
                job_id=job_id,
                spec=spec,
                state=JobState.QUEUED,
                progress=0.0,
                stage=None,
                reason=None,
                created_at=datetime.now(UTC),
                started_at=None,
                finished_at=None,
                attempts=0,
                result=None,
                artifacts={},
            )
            self._jobs[job_id] = job
            return job

    def get(self, job_id: str, *, tenant_id: str | None) -> JobView:
        with self._lock:
            return self._get(job_id, tenant_id)

    def cached(self, job_id: str, *, tenant_id: str | None) -> JobView | None:
        """The job when it is finished (it no longer changes), as the SQL service answers
        finished jobs from memory; None otherwise."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or not job.state.is_terminal:
                return None
            return self._get(job_id, tenant_id)

    def _get(self, job_id: str, tenant_id: str | None) -> JobView:
        job = self._jobs.get(job_id)
        if job is None or (tenant_id is not None and job.spec.tenant_id != tenant_id):
            raise JobNotFoundError(f"no job {job_id!r}")
        return job

    def list_jobs(
        self,
        *,
        tenant_id: str,
        state: JobState | None = None,
        run_id: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> tuple[list[JobView], str | None]:
        with self._lock:
            jobs = [
                job
                for job in self._jobs.values()
                if job.spec.tenant_id == tenant_id
                and (state is None or job.state == state)
                and (run_id is None or job.spec.run_id == run_id)
            ]
        jobs.sort(key=lambda job: (job.created_at, job.job_id), reverse=True)
        if cursor is not None:
            after = decode_cursor(cursor)
            jobs = [job for job in jobs if (job.created_at, job.job_id) < after]
        page = jobs[:limit]
        next_cursor = (
            encode_cursor(page[-1].created_at, page[-1].job_id) if len(jobs) > limit else None
        )
        return page, next_cursor

    def cancel(self, job_id: str, *, tenant_id: str | None) -> JobView:
        with self._lock:
            job = self._get(job_id, tenant_id)
            if job.state.is_terminal:
                raise JobStateError(
                    job_id, job.state, f"job {job_id} is already {job.state} and cannot be canceled"
                )
            if job.state == JobState.QUEUED:
                job = dataclasses.replace(
                    job,
                    state=JobState.CANCELED,
                    reason="canceled on request",
                    finished_at=datetime.now(UTC),
                )
            else:
                job = dataclasses.replace(job, state=JobState.CANCELING)
            self._jobs[job_id] = job
            return job

    def artifact_path(self, job_id: str, kind: str, *, tenant_id: str | None) -> Path:
        job = self.get(job_id, tenant_id=tenant_id)
        if job.state != JobState.COMPLETE:
            raise JobStateError(job_id, job.state, f"job {job_id} is {job.state}, not COMPLETE")
        key = job.artifacts.get(kind)
        if key is None or self._artifact_root is None:
            raise JobNotFoundError(f"job {job_id} has no artifact {kind!r}")
        return self._artifact_root / key

    def active_jobs(self, tenant_id: str) -> int:
        with self._lock:
            return self._active(tenant_id)

    def queued_jobs(self) -> int:
        with self._lock:
            return self._queued()

    def _active(self, tenant_id: str) -> int:
        return sum(
            1
            for job in self._jobs.values()
            if job.spec.tenant_id == tenant_id and not job.state.is_terminal
        )

    def _queued(self) -> int:
        return sum(1 for job in self._jobs.values() if job.state == JobState.QUEUED)

    def counts_by_state(self) -> dict[JobState, int]:
        counts = dict.fromkeys(JobState, 0)
        with self._lock:
            for job in self._jobs.values():
                counts[job.state] += 1
        return counts

    def update(
        self,
        job_id: str,
        *,
        state: JobState | None = None,
        progress: float | None = None,
        stage: str | None = _UNSET,
        reason: str | None = _UNSET,
        result: Mapping[str, Any] | None = _UNSET,
        artifacts: Mapping[str, str] | None = None,
    ) -> JobView:
        """Move a job along as an executor would (test helper; no transition checks)."""
        with self._lock:
            job = self._jobs[job_id]
            now = datetime.now(UTC)
            changes: dict[str, Any] = {}
            if state is not None:
                changes["state"] = state
                if state == JobState.RUNNING and job.started_at is None:
                    changes["started_at"] = now
                if state.is_terminal:
                    changes["finished_at"] = now
            if progress is not None:
                changes["progress"] = progress
            if stage is not _UNSET:
                changes["stage"] = stage
            if reason is not _UNSET:
                changes["reason"] = reason
            if result is not _UNSET:
                changes["result"] = result
            if artifacts is not None:
                changes["artifacts"] = dict(artifacts)
            job = dataclasses.replace(job, **changes)
            self._jobs[job_id] = job
            return job
