"""The job contract shared by the API, the job service and the executors.

States follow GA4GH WES 1.1 (a closed set; the database stores the names). The database, not any
queue, is the source of truth for a job's state.

>>> JobState.QUEUED.is_terminal, JobState.CANCELED.is_terminal
(False, True)
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol


class JobState(StrEnum):
    """Where a job is in its life (GA4GH WES names)."""

    QUEUED = "QUEUED"  # accepted and stored; waiting for an executor slot
    INITIALIZING = "INITIALIZING"  # an executor took it and is preparing inputs
    RUNNING = "RUNNING"  # the pipeline is running; progress and stage are updated
    COMPLETE = "COMPLETE"  # finished; results and artifacts are available
    EXECUTOR_ERROR = "EXECUTOR_ERROR"  # the pipeline rejected it (bad input or config)
    SYSTEM_ERROR = "SYSTEM_ERROR"  # timeout, worker died, or a bug
    CANCELING = "CANCELING"  # cancel requested; the executor is stopping it
    CANCELED = "CANCELED"  # stopped on request

    @property
    def is_terminal(self) -> bool:
        """True when the job will never change state again."""
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {JobState.COMPLETE, JobState.EXECUTOR_ERROR, JobState.SYSTEM_ERROR, JobState.CANCELED}
)


@dataclass(frozen=True)
class JobSpec:
    """What a submission asks for. ``inputs`` maps an input kind (reads, reads_r2, reference,
    variants, targets) to its key in the artifact store; no reads means "simulate from seed"."""

    run_id: str
    seed: int
    config_yaml: str
    tenant_id: str = "default"
    owner_id: str = "anonymous"
    use_ml_calling: bool = False
    ml_model_type: str | None = None
    use_deep_learning: bool = False
    dl_model_type: str | None = None
    use_parallel: bool = False
    config_template: str | None = None
    inputs: Mapping[str, str] = field(default_factory=dict)
    request_id: str | None = None
    read_structures: str | None = None  # for FASTQ input, e.g. "8M142T 8M142T"
    #: input key -> {"sha256", "size"}, recorded as the upload streamed into the store
    checksums: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class JobView:
    """A job as read back from the database."""

    job_id: str
    spec: JobSpec
    state: JobState
    progress: float
    stage: str | None
    reason: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int
    result: Mapping[str, Any] | None  # the sample call summary once COMPLETE
    artifacts: Mapping[str, str]  # download type -> key in the artifact store
    #: artifact key -> {"sha256", "size"}, recorded by the worker that wrote it
    checksums: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


class JobNotFoundError(LookupError):
    """No job with that id for that tenant (another tenant's job is "not found" too)."""


class JobStateError(RuntimeError):
    """The operation does not fit the job's state (e.g. results of a RUNNING job)."""

    def __init__(self, job_id: str, state: JobState, message: str) -> None:
        self.job_id = job_id
        self.state = state
        super().__init__(message)


class SubmitRefusedError(RuntimeError):
    """A cap of :class:`SubmitLimits` is reached. ``limit`` is ``"tenant_active"`` (the tenant's
    unfinished jobs) or ``"queued"`` (jobs of all tenants waiting for a worker); ``cap`` is its
    value."""

    def __init__(self, limit: str, cap: int, message: str) -> None:
        self.limit = limit
        self.cap = cap
        super().__init__(message)


@dataclass(frozen=True)
class SubmitLimits:
    """The caps a new job must fit. A job service checks them in the transaction that stores the
    job, with other submissions held off, so concurrent submissions cannot overshoot them.

    >>> SubmitLimits(tenant_max_active=2, max_queued=10).check(active=1, queued=9)
    >>> try:
    ...     SubmitLimits(tenant_max_active=2, max_queued=10).check(active=2, queued=0)
    ... except SubmitRefusedError as error:
    ...     print(error.limit, error.cap, error)
    tenant_active 2 this tenant already has 2 queued or running jobs
    """

    tenant_max_active: int
    max_queued: int

    def check(self, *, active: int, queued: int) -> None:
        """Raise :class:`SubmitRefusedError` when ``active`` or ``queued`` is at its cap."""
        if active >= self.tenant_max_active:
            raise SubmitRefusedError(
                "tenant_active",
                self.tenant_max_active,
                f"this tenant already has {self.tenant_max_active} queued or running jobs",
            )
        if queued >= self.max_queued:
            raise SubmitRefusedError(
                "queued",
                self.max_queued,
                f"the service is at capacity: {self.max_queued} jobs are waiting for a worker",
            )


def job_key_prefix(tenant_id: str, job_id: str) -> str:
    """Where a job's uploads and outputs live in the artifact store: under its tenant, so a
    store policy (an S3 prefix condition, a bucket per tenant behind a proxy) can fence each
    tenant's objects.

    >>> job_key_prefix("lab-a", "j1")
    'tenants/lab-a/jobs/j1/'
    """
    return f"tenants/{tenant_id}/jobs/{job_id}/"


def job_work_dir(work_root: Path, tenant_id: str, job_id: str) -> Path:
    """A running job's scratch directory, under its tenant (``<work root>/<tenant>/<job id>``)."""
    return work_root / tenant_id / job_id


def remove_work_dirs(work_root: Path, job_id: str) -> None:
    """Remove a job's scratch directory whatever its tenant (and one of the old flat layout)."""
    for path in [work_root / job_id, *work_root.glob(f"*/{job_id}")]:
        shutil.rmtree(path, ignore_errors=True)


def legacy_job_key_prefix(job_id: str) -> str:
    """Where jobs stored before the per-tenant layout keep theirs (deletes and backups look
    there too; their stored keys still read as they were)."""
    return f"jobs/{job_id}/"


class JobService(Protocol):
    """What the API needs from the job layer. Implementations: SQL-backed (service.jobs.service)
    and in-memory (for fast unit tests of the API)."""

    #: ``job_id`` lets the API store uploads under the id first; ``limits`` are checked
    #: atomically with the insert (:class:`SubmitRefusedError` when one is reached)
    def submit(
        self, spec: JobSpec, *, job_id: str | None = None, limits: SubmitLimits | None = None
    ) -> JobView: ...

    #: ``tenant_id=None`` reaches every tenant's jobs (admins); otherwise another tenant's job
    #: is not found
    def get(self, job_id: str, *, tenant_id: str | None) -> JobView: ...

    #: a finished job the service holds in memory, answered without I/O (so on the event
    #: loop); None when it must be read with :meth:`get`
    def cached(self, job_id: str, *, tenant_id: str | None) -> JobView | None: ...

    def list_jobs(
        self,
        *,
        tenant_id: str,
        state: JobState | None = None,
        run_id: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> tuple[list[JobView], str | None]: ...

    def cancel(self, job_id: str, *, tenant_id: str | None) -> JobView: ...

    def artifact_path(self, job_id: str, kind: str, *, tenant_id: str | None) -> Path: ...

    def counts_by_state(self) -> dict[JobState, int]: ...

    def active_jobs(self, tenant_id: str) -> int: ...

    def queued_jobs(self) -> int: ...
