"""SqlJobService: the job service on SQL (SQLite or PostgreSQL), the source of truth.

Every state change is one conditional ``UPDATE ... WHERE id = :id AND state IN (:allowed)`` plus an
audit row in ``job_events``, in one transaction. Two processes racing for the same job therefore
cannot both win: the second update matches no row and reports ``False``. The allowed edges::

    QUEUED ──> INITIALIZING ──> RUNNING ──> COMPLETE
      │  │          │  │           │  └───> EXECUTOR_ERROR | SYSTEM_ERROR
      │  │          │  └─> EXECUTOR_ERROR | SYSTEM_ERROR
      │  │          └──────────────┴──> CANCELING ──> CANCELED | SYSTEM_ERROR
      │  └─> SYSTEM_ERROR
      └────> CANCELED                  (INITIALIZING | RUNNING) ──> QUEUED: crash recovery retry

Jobs are scoped to a tenant: another tenant's job is "not found". ``list_jobs`` pages newest first
by ``(created_at, id)`` with an opaque cursor, so rows inserted while a client pages never cause a
duplicate or a miss among the rows that existed when it started.

>>> import io, tempfile
>>> from pathlib import Path
>>> from precise_mrd.service.db import create_engine_for_url, make_session_factory
>>> from precise_mrd.service.db import upgrade_database
>>> from precise_mrd.service.settings import Settings
>>> from precise_mrd.service.storage import LocalArtifactStore
>>> root = Path(tempfile.mkdtemp())
>>> settings = Settings(data_dir=root)
>>> upgrade_database(settings.database_url)
>>> engine = create_engine_for_url(settings.database_url)
>>> service = SqlJobService(make_session_factory(engine), LocalArtifactStore(root / "a"), settings)
>>> job = service.submit(JobSpec(run_id="r1", seed=7, config_yaml="", tenant_id="t1"))
>>> job.state, service.cancel(job.job_id, tenant_id="t1").state
(<JobState.QUEUED: 'QUEUED'>, <JobState.CANCELED: 'CANCELED'>)
>>> service.get(job.job_id, tenant_id="t2")
Traceback (most recent call last):
...
precise_mrd.service.jobs.model.JobNotFoundError: no job ... for this tenant
>>> engine.dispose()
"""

from __future__ import annotations

import base64
import dataclasses
import os
import secrets
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from sqlalchemy import (
    CursorResult,
    Engine,
    Row,
    Select,
    and_,
    bindparam,
    delete,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session, sessionmaker

from precise_mrd.pipeline.artifacts import DOWNLOAD_TYPES
from precise_mrd.service.db.models import JobEventRecord, JobRecord, TenantGenerationRecord
from precise_mrd.service.jobs.finished_cache import FinishedJobs
from precise_mrd.service.jobs.model import (
    TERMINAL_STATES,
    JobNotFoundError,
    JobSpec,
    JobState,
    JobStateError,
    JobView,
    SubmitLimits,
    job_key_prefix,
    legacy_job_key_prefix,
)
from precise_mrd.service.settings import Settings
from precise_mrd.service.storage.base import ArtifactNotFoundError, ArtifactStore

S = JobState
#: every state change the service allows (anything else is a bug in the caller)
ALLOWED_TRANSITIONS: Mapping[JobState, frozenset[JobState]] = {
    S.QUEUED: frozenset({S.INITIALIZING, S.CANCELED, S.SYSTEM_ERROR}),
    S.INITIALIZING: frozenset({S.RUNNING, S.CANCELING, S.EXECUTOR_ERROR, S.SYSTEM_ERROR, S.QUEUED}),
    S.RUNNING: frozenset({S.COMPLETE, S.CANCELING, S.EXECUTOR_ERROR, S.SYSTEM_ERROR, S.QUEUED}),
    S.CANCELING: frozenset({S.CANCELED, S.SYSTEM_ERROR}),
    S.COMPLETE: frozenset(),
    S.EXECUTOR_ERROR: frozenset(),
    S.SYSTEM_ERROR: frozenset(),
    S.CANCELED: frozenset(),
}
ACTIVE_STATES = frozenset({S.INITIALIZING, S.RUNNING, S.CANCELING})
CANCEL_REASON = "canceled on request"


class InvalidCursorError(ValueError):
    """A ``cursor`` that this service did not hand out."""


def new_job_id() -> str:
    """A UUIDv7-style id: its first 48 bits are the millisecond clock, so ids sort by time.

    >>> a, b = new_job_id(), new_job_id()
    >>> len(a), a != b
    (36, True)
    """
    value = (time.time_ns() // 1_000_000) << 80 | secrets.randbits(80)
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return str(uuid.UUID(int=value))


def encode_cursor(created_at: datetime, job_id: str) -> str:
    """An opaque cursor meaning "after the job (``created_at``, ``job_id``) in newest-first order".

    >>> decode_cursor(encode_cursor(datetime(2026, 1, 2, tzinfo=UTC), "abc"))[1]
    'abc'
    """
    raw = f"{created_at.astimezone(UTC).isoformat()}|{job_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Inverse of :func:`encode_cursor`; :class:`InvalidCursorError` for anything else."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, job_id = base64.urlsafe_b64decode(padded.encode()).decode().split("|", 1)
        created_at = datetime.fromisoformat(created)
    except (ValueError, UnicodeDecodeError):
        raise InvalidCursorError(
            f"invalid cursor {cursor!r}; pass the next_cursor of a previous page"
        ) from None
    if created_at.tzinfo is None or not job_id:
        raise InvalidCursorError(f"invalid cursor {cursor!r}; pass the next_cursor of a page")
    return created_at, job_id


def now_utc() -> datetime:
    """The current time, timezone-aware UTC (what every timestamp column holds)."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class JobLease:
    """Who is running an active job, for the executor's recovery and watchdog."""

    job_id: str
    state: JobState
    attempts: int
    worker_pid: int | None
    worker_host: str | None
    heartbeat_at: datetime | None
    started_at: datetime | None


@dataclass(frozen=True)
class JobEvent:
    """One audited state change."""

    from_state: JobState | None
    to_state: JobState
    reason: str | None
    created_at: datetime


def spec_to_json(spec: JobSpec) -> dict[str, Any]:
    """The spec as plain JSON values."""
    data = dataclasses.asdict(spec)
    data["inputs"] = dict(spec.inputs)
    return data


def spec_from_json(data: Mapping[str, Any]) -> JobSpec:
    """Inverse of :func:`spec_to_json`; unknown keys (from a newer version) are ignored."""
    names = {f.name for f in dataclasses.fields(JobSpec)}
    return JobSpec(**{key: value for key, value in data.items() if key in names})


#: one job's row by id (a Core statement: compiled once, cached by SQLAlchemy)
_SELECT_JOB = select(JobRecord.__table__).where(JobRecord.__table__.c.id == bindparam("job_id"))


def to_view(record: JobRecord | Row[Any]) -> JobView:
    """A read-only view of a row (an ORM record or a Core row of the jobs table)."""
    return JobView(
        job_id=record.id,
        spec=spec_from_json(record.spec),
        state=JobState(record.state),
        progress=record.progress,
        stage=record.stage,
        reason=record.reason,
        created_at=record.created_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
        attempts=record.attempts,
        result=record.result,
        artifacts=dict(record.artifacts or {}),
        checksums=dict(record.checksums or {}),
    )


class SqlJobService:
    """The :class:`~precise_mrd.service.jobs.model.JobService` on SQLAlchemy, plus the methods
    an executor and a worker need (claiming, progress, finishing, recovery, cleanup)."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        store: ArtifactStore,
        settings: Settings,
        *,
        read_sessions: sessionmaker[Session] | None = None,
    ) -> None:
        self._sessions = session_factory
        # NB: status, results, listings and counts may read a replica; nothing writes there, and
        # everything an executor or worker decides on reads the primary.
        self._reads = read_sessions or session_factory
        self.store = store
        self.settings = settings
        self._finished = FinishedJobs()

    @property
    def sessions(self) -> sessionmaker[Session]:
        """The primary's session factory (the API keys live in the same database)."""
        return self._sessions

    # ------------------------------------------------------------------ the JobService API
    def submit(
        self, spec: JobSpec, *, job_id: str | None = None, limits: SubmitLimits | None = None
    ) -> JobView:
        """Store a new QUEUED job. ``job_id`` lets the API store uploads under the id first.

        ``limits`` are checked in the same transaction, with every other submission held off
        (:func:`_hold_off_submissions`), so N concurrent submissions below a cap by one store one
        job, not N (:class:`~precise_mrd.service.jobs.model.SubmitRefusedError` for the rest).
        """
        now = now_utc()
        record = JobRecord(
            id=job_id or new_job_id(),
            tenant_id=spec.tenant_id,
            owner_id=spec.owner_id,
            run_id=spec.run_id,
            state=S.QUEUED.value,
            progress=0.0,
            stage=None,
            reason=None,
            spec=spec_to_json(spec),
            result=None,
            artifacts={},
            attempts=0,
            created_at=now,
            updated_at=now,
        )
        with self._sessions.begin() as session:
            if limits is not None:
                _hold_off_submissions(session)
            _bump_generation(session, spec.tenant_id, create=True)
            if limits is not None:
                limits.check(
                    active=_count(
                        session, _ACTIVE_JOBS.where(JobRecord.tenant_id == spec.tenant_id)
                    ),
                    queued=_count(session, _QUEUED_JOBS),
                )
            session.add(record)
            session.flush()  # NB: the event's foreign key needs the job row first
            session.add(
                JobEventRecord(
                    job_id=record.id, from_state=None, to_state=S.QUEUED.value, created_at=now
                )
            )
        return to_view(record)

    def generation(self, tenant_id: str) -> int:
        """The tenant's change counter (raised with every change to its jobs; 0 before any)."""
        with self._reads() as session:
            value = session.scalar(
                select(TenantGenerationRecord.generation).where(
                    TenantGenerationRecord.tenant_id == tenant_id
                )
            )
        return int(value or 0)

    def get(self, job_id: str, *, tenant_id: str | None) -> JobView:
        job = self.cached(job_id, tenant_id=tenant_id)
        if job is not None:
            return job
        record = self._record(self._reads, job_id)
        if record is None and self._reads is not self._sessions:
            # NB: a job submitted a moment ago may not have reached the replica yet
            record = self._record(self._sessions, job_id)
        if record is None or (tenant_id is not None and record.tenant_id != tenant_id):
            raise JobNotFoundError(f"no job {job_id!r} for this tenant")
        job = to_view(record)
        self._finished.remember(job)
        return job

    def cached(self, job_id: str, *, tenant_id: str | None) -> JobView | None:
        """A finished job this process has read lately, without I/O (see
        :mod:`~precise_mrd.service.jobs.finished_cache`); None when it must be read."""
        job = self._finished.find(job_id)
        if job is not None and tenant_id is not None and job.spec.tenant_id != tenant_id:
            raise JobNotFoundError(f"no job {job_id!r} for this tenant")
        return job

    @staticmethod
    def _record(sessions: sessionmaker[Session], job_id: str) -> Row[Any] | None:
        # NB: a Core read of the one row, on a pooled connection, without a Session, its
        # identity map or ORM instance loading: a third of the cost, and /status, the most
        # frequent request, is this read (docs/performance.md)
        engine: Engine = sessions.kw["bind"]
        with engine.connect() as connection:
            return connection.execute(_SELECT_JOB, {"job_id": job_id}).first()

    def _get_primary(self, job_id: str, *, tenant_id: str | None) -> JobView:
        record = self._record(self._sessions, job_id)
        if record is None or (tenant_id is not None and record.tenant_id != tenant_id):
            raise JobNotFoundError(f"no job {job_id!r} for this tenant")
        return to_view(record)

    def list_jobs(
        self,
        *,
        tenant_id: str,
        state: JobState | None = None,
        run_id: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> tuple[list[JobView], str | None]:
        """One page, newest first; ``limit`` is clamped to 1..``max_page_size``."""
        limit = max(1, min(int(limit), self.settings.max_page_size))
        query = select(JobRecord).where(JobRecord.tenant_id == tenant_id)
        if state is not None:
            query = query.where(JobRecord.state == JobState(state).value)
        if run_id is not None:
            query = query.where(JobRecord.run_id == run_id)
        if cursor is not None:
            created_at, after_id = decode_cursor(cursor)
            query = query.where(
                or_(
                    JobRecord.created_at < created_at,
                    and_(JobRecord.created_at == created_at, JobRecord.id < after_id),
                )
            )
        query = query.order_by(JobRecord.created_at.desc(), JobRecord.id.desc()).limit(limit + 1)
        with self._reads() as session:
            records = list(session.scalars(query))
        page = [to_view(record) for record in records[:limit]]
        has_more = len(records) > limit
        next_cursor = encode_cursor(page[-1].created_at, page[-1].job_id) if has_more else None
        return page, next_cursor

    def cancel(self, job_id: str, *, tenant_id: str | None) -> JobView:
        """QUEUED -> CANCELED at once; INITIALIZING/RUNNING -> CANCELING (the executor stops the
        worker and finishes the job as CANCELED); CANCELING stays; a finished job is an error."""
        for _ in range(10):
            job = self._get_primary(job_id, tenant_id=tenant_id)  # NB: decides on it
            if job.state == S.CANCELING:
                return job
            if job.state.is_terminal:
                raise JobStateError(
                    job_id,
                    job.state,
                    f"job {job_id} is already {job.state} and cannot be canceled",
                )
            if job.state == S.QUEUED:
                changed = self.transition(
                    job_id, from_states=[S.QUEUED], to_state=S.CANCELED, reason=CANCEL_REASON
                )
            else:
                changed = self.transition(
                    job_id, from_states=[job.state], to_state=S.CANCELING, reason=CANCEL_REASON
                )
            if changed:
                return self._get_primary(job_id, tenant_id=tenant_id)
        raise JobStateError(job_id, job.state, f"job {job_id} keeps changing state; try again")

    def artifact_path(self, job_id: str, kind: str, *, tenant_id: str | None) -> Path:
        """The local file of a COMPLETE job's artifact ``kind`` (a key of ``DOWNLOAD_TYPES``)."""
        job = self.get(job_id, tenant_id=tenant_id)
        if kind not in DOWNLOAD_TYPES:
            raise ArtifactNotFoundError(f"{job_id}/{kind}")
        if job.state != S.COMPLETE:
            raise JobStateError(job_id, job.state, f"job {job_id} is {job.state}, not COMPLETE")
        key = job.artifacts.get(kind)
        if key is None or not self.store.exists(key):
            raise ArtifactNotFoundError(f"{job_id}/{kind}")
        return self.store.path_for(key)

    def counts_by_state(self) -> dict[JobState, int]:
        """How many jobs are in each state (every state present, zeros included)."""
        counts = dict.fromkeys(JobState, 0)
        with self._reads() as session:
            rows = session.execute(
                select(JobRecord.state, func.count()).group_by(JobRecord.state)
            ).all()
        for state, count in rows:
            counts[JobState(state)] = int(count)
        return counts

    def active_jobs(self, tenant_id: str) -> int:
        """The tenant's jobs not yet finished (queued, starting, running or being canceled)."""
        with self._sessions() as session:
            return _count(session, _ACTIVE_JOBS.where(JobRecord.tenant_id == tenant_id))

    def queued_jobs(self) -> int:
        """Jobs waiting for a worker, all tenants (an index lookup on ``state``)."""
        with self._sessions() as session:
            return _count(session, _QUEUED_JOBS)

    # ------------------------------------------------------------------ for executors/workers
    def load(self, job_id: str) -> JobView:
        """A job by id, whatever its tenant (executors and workers only)."""
        with self._sessions() as session:
            record = session.get(JobRecord, job_id)
            if record is None:
                raise JobNotFoundError(f"no job {job_id!r}")
            return to_view(record)

    def transition(
        self,
        job_id: str,
        *,
        from_states: Iterable[JobState],
        to_state: JobState,
        reason: str | None = None,
        **values: Any,
    ) -> bool:
        """Move the job to ``to_state`` if it is in one of ``from_states``; set ``values`` (column
        name -> value) too. Returns False (and changes nothing) when the job was elsewhere."""
        sources = [JobState(state) for state in from_states]
        for source in sources:
            if to_state not in ALLOWED_TRANSITIONS[source]:
                raise ValueError(f"transition {source} -> {to_state} is not allowed")
        now = now_utc()
        values = {"state": to_state.value, "updated_at": now, **values}
        if reason is not None:
            values["reason"] = reason
        elif to_state == S.COMPLETE:
            values["reason"] = None  # NB: drop a retry note left by crash recovery
        if to_state in TERMINAL_STATES:
            values.setdefault("finished_at", now)
        with self._sessions.begin() as session:
            row = session.execute(
                select(JobRecord.state, JobRecord.tenant_id).where(JobRecord.id == job_id)
            ).one_or_none()
            if row is None or JobState(row[0]) not in sources:
                return False
            previous, tenant_id = row
            statement = (
                update(JobRecord)
                .where(JobRecord.id == job_id, JobRecord.state == previous)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            result = cast(CursorResult[Any], session.execute(statement))
            if result.rowcount != 1:
                return False
            session.add(
                JobEventRecord(
                    job_id=job_id,
                    from_state=previous,
                    to_state=to_state.value,
                    reason=reason,
                    created_at=now,
                )
            )
            _bump_generation(session, tenant_id)
        return True

    def claim_next(self, *, worker_host: str | None = None) -> JobView | None:
        """Take the oldest QUEUED job: QUEUED -> INITIALIZING, ``attempts`` + 1. None if there is
        none. Safe against other claimers (the loser of a race moves to the next job)."""
        for _ in range(20):
            with self._sessions() as session:
                candidates = list(
                    session.scalars(
                        select(JobRecord.id)
                        .where(JobRecord.state == S.QUEUED.value)
                        .order_by(JobRecord.created_at, JobRecord.id)
                        .limit(5)
                    )
                )
            if not candidates:
                return None
            for job_id in candidates:
                claimed = self.claim(job_id, worker_host=worker_host)
                if claimed is not None:
                    return claimed
        return None

    def claim(self, job_id: str, *, worker_host: str | None = None) -> JobView | None:
        """Take this job if it is QUEUED: QUEUED -> INITIALIZING, ``attempts`` + 1. None when it
        is anywhere else (already taken, canceled, finished): a redelivered message is a no-op."""
        now = now_utc()
        claimed = self.transition(
            job_id,
            from_states=[S.QUEUED],
            to_state=S.INITIALIZING,
            attempts=JobRecord.attempts + 1,
            started_at=now,
            heartbeat_at=now,
            worker_host=worker_host,
            worker_pid=None,
            progress=0.0,
            stage=None,
        )
        return self.load(job_id) if claimed else None

    def due_for_dispatch(
        self, sent_before: datetime, *, limit: int = 500
    ) -> list[tuple[str, str | None]]:
        """``(job_id, request_id)`` of QUEUED jobs never sent to the broker or sent before
        ``sent_before``, oldest first."""
        with self._sessions() as session:
            rows = session.execute(
                select(JobRecord.id, JobRecord.spec)
                .where(
                    JobRecord.state == S.QUEUED.value,
                    or_(JobRecord.dispatched_at.is_(None), JobRecord.dispatched_at < sent_before),
                )
                .order_by(JobRecord.created_at, JobRecord.id)
                .limit(limit)
            ).all()
        return [(job_id, (spec or {}).get("request_id")) for job_id, spec in rows]

    def mark_dispatched(self, job_ids: Iterable[str]) -> None:
        """Record that the jobs' messages were sent now."""
        ids = list(job_ids)
        if not ids:
            return
        with self._sessions.begin() as session:
            session.execute(
                update(JobRecord)
                .where(JobRecord.id.in_(ids))
                .values(dispatched_at=now_utc())
                .execution_options(synchronize_session=False)
            )

    def set_worker(self, job_id: str, *, pid: int | None, host: str | None) -> None:
        """Record which process runs the job."""
        self._update_columns(job_id, worker_pid=pid, worker_host=host, heartbeat_at=now_utc())

    def heartbeat(self, job_ids: Iterable[str]) -> None:
        """Mark the jobs' workers as alive now."""
        ids = list(job_ids)
        if not ids:
            return
        with self._sessions.begin() as session:
            session.execute(
                update(JobRecord)
                .where(JobRecord.id.in_(ids))
                .values(heartbeat_at=now_utc())
                .execution_options(synchronize_session=False)
            )

    def update_progress(self, job_id: str, *, progress: float, stage: str | None) -> bool:
        """Write progress (clamped to 0..1) and stage of a RUNNING job. NB: not a heartbeat; only
        the supervising executor beats, so a worker that lost its executor is found."""
        now = now_utc()
        with self._sessions.begin() as session:
            tenants = session.execute(
                update(JobRecord)
                .where(JobRecord.id == job_id, JobRecord.state == S.RUNNING.value)
                .values(
                    progress=min(max(float(progress), 0.0), 1.0),
                    stage=stage,
                    updated_at=now,
                )
                .returning(JobRecord.tenant_id)
                .execution_options(synchronize_session=False)
            ).all()
            if len(tenants) != 1:
                return False
            _bump_generation(session, tenants[0][0])
            return True

    def active_leases(self, job_id: str | None = None) -> list[JobLease]:
        """Every INITIALIZING, RUNNING or CANCELING job (or just ``job_id``) with its worker."""
        query = select(JobRecord).where(JobRecord.state.in_([s.value for s in ACTIVE_STATES]))
        if job_id is not None:
            query = query.where(JobRecord.id == job_id)
        with self._sessions() as session:
            return [
                JobLease(
                    job_id=record.id,
                    state=JobState(record.state),
                    attempts=record.attempts,
                    worker_pid=record.worker_pid,
                    worker_host=record.worker_host,
                    heartbeat_at=record.heartbeat_at,
                    started_at=record.started_at,
                )
                for record in session.scalars(query)
            ]

    def states_of(self, job_ids: Iterable[str]) -> dict[str, JobState]:
        """The current state of each job (missing ids are left out)."""
        ids = list(job_ids)
        if not ids:
            return {}
        with self._sessions() as session:
            rows = session.execute(
                select(JobRecord.id, JobRecord.state).where(JobRecord.id.in_(ids))
            ).all()
        return {job_id: JobState(state) for job_id, state in rows}

    def finished_before(self, cutoff: datetime, *, limit: int = 500) -> list[str]:
        """Ids of finished jobs whose ``finished_at`` is older than ``cutoff``."""
        with self._sessions() as session:
            return list(
                session.scalars(
                    select(JobRecord.id)
                    .where(
                        JobRecord.state.in_([s.value for s in TERMINAL_STATES]),
                        JobRecord.finished_at < cutoff,
                    )
                    .order_by(JobRecord.finished_at)
                    .limit(limit)
                )
            )

    def delete_job(self, job_id: str) -> bool:
        """Delete a finished job: its artifacts, its uploads and its row (events cascade)."""
        job = self.load(job_id)
        if not job.state.is_terminal:
            raise JobStateError(job_id, job.state, f"job {job_id} is {job.state}; not deleted")
        self.store.delete_prefix(job_key_prefix(job.spec.tenant_id, job_id))
        self.store.delete_prefix(legacy_job_key_prefix(job_id))
        for key in job.spec.inputs.values():
            self.store.delete(key)
        for key in job.artifacts.values():
            self.store.delete(key)
        self._finished.forget(job_id)
        with self._sessions.begin() as session:
            _bump_generation(session, job.spec.tenant_id)
            session.execute(delete(JobEventRecord).where(JobEventRecord.job_id == job_id))
            result = cast(
                CursorResult[Any],
                session.execute(delete(JobRecord).where(JobRecord.id == job_id)),
            )
            return result.rowcount == 1

    def events(self, job_id: str) -> list[JobEvent]:
        """The job's audited state changes, oldest first."""
        with self._sessions() as session:
            records = session.scalars(
                select(JobEventRecord)
                .where(JobEventRecord.job_id == job_id)
                .order_by(JobEventRecord.id)
            )
            return [
                JobEvent(
                    from_state=JobState(record.from_state) if record.from_state else None,
                    to_state=JobState(record.to_state),
                    reason=record.reason,
                    created_at=record.created_at,
                )
                for record in records
            ]

    def _update_columns(self, job_id: str, **values: Any) -> None:
        with self._sessions.begin() as session:
            session.execute(
                update(JobRecord)
                .where(JobRecord.id == job_id)
                .values(updated_at=now_utc(), **values)
                .execution_options(synchronize_session=False)
            )


_ACTIVE_JOBS = (
    select(func.count())
    .select_from(JobRecord)
    .where(JobRecord.state.in_([state.value for state in JobState if not state.is_terminal]))
)
_QUEUED_JOBS = (
    select(func.count()).select_from(JobRecord).where(JobRecord.state == JobState.QUEUED.value)
)

#: the PostgreSQL advisory lock a submission with limits holds until its transaction ends
SUBMIT_LOCK_KEY = 0x504D5244_53554231  # "PMRDSUB1"


def _count(session: Session, query: Select[Any]) -> int:
    return int(session.execute(query).scalar_one())


def _hold_off_submissions(session: Session) -> None:
    """Make this transaction the only submission between here and its end, so the caps it
    counts cannot change under it. PostgreSQL: a transaction-scoped advisory lock (released at
    commit or rollback; only submissions take it, so job updates never wait for it). SQLite: the
    first statement of the transaction is a write (the caller's generation bump), which takes
    the database's one write lock; a writer waits for it (busy timeout) and then reads the
    latest commit."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SUBMIT_LOCK_KEY})


def _bump_generation(session: Session, tenant_id: str, *, create: bool = False) -> None:
    """Raise the tenant's change counter inside the caller's transaction."""
    if create:
        from sqlalchemy.dialects import postgresql, sqlite

        dialect = session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        session.execute(
            insert(TenantGenerationRecord)
            .values(tenant_id=tenant_id, generation=0)
            .on_conflict_do_nothing(index_elements=["tenant_id"])
        )
    session.execute(
        update(TenantGenerationRecord)
        .where(TenantGenerationRecord.tenant_id == tenant_id)
        .values(generation=TenantGenerationRecord.generation + 1)
        .execution_options(synchronize_session=False)
    )


def this_host() -> str:
    """The host name recorded with a worker pid (a pid means nothing on another machine)."""
    return os.uname().nodename
