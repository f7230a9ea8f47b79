"""The job tables as SQLAlchemy 2 typed ORM models (the migrations in ``migrations/`` create them).

``jobs`` holds one row per submission; ``job_events`` one row per state transition (an audit trail
that is deleted with its job). States are stored as their GA4GH WES names in a plain string column,
so adding a state never needs an ALTER TYPE. Timestamps are timezone-aware UTC
(``TIMESTAMP WITH TIME ZONE`` on PostgreSQL; SQLite stores naive UTC text that
:class:`UtcDateTime` turns back into aware datetimes).

Indexes follow the queries: the newest-first page of a tenant ``(tenant_id, created_at, id)``,
the executor's scans by ``state`` and the ``run_id`` filter ``(tenant_id, run_id)``.

>>> sorted(Base.metadata.tables)
['api_keys', 'audit_events', 'audit_purge', 'job_events', 'jobs', 'tenant_generations']
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, Integer, MetaData, String, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (naive values are rejected on write)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}; use datetime.now(UTC)")
        value = value.astimezone(UTC)
        # NB: SQLite compares timestamps as text, so store one fixed format without an offset.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of the service's tables (constraint names fixed for PostgreSQL)."""

    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_name)s",
            "pk": "pk_%(table_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
        }
    )


class JobRecord(Base):
    """One job: its spec, where it is in its life, and what it produced."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(128))
    owner_id: Mapped[str] = mapped_column(String(128))
    run_id: Mapped[str] = mapped_column(String(256))
    state: Mapped[str] = mapped_column(String(32))
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    stage: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    artifacts: Mapped[dict[str, str] | None] = mapped_column(JSON)
    #: artifact key -> {"sha256", "size"} of every output, written with the artifacts
    checksums: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker_pid: Mapped[int | None] = mapped_column(Integer)
    worker_host: Mapped[str | None] = mapped_column(String(255))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    #: when the job's message was last sent to a broker (Celery executor); None: not yet sent
    dispatched_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (
        Index("ix_jobs_tenant_created", "tenant_id", "created_at", "id"),
        Index("ix_jobs_tenant_run_id", "tenant_id", "run_id"),
        Index("ix_jobs_state", "state"),
        Index("ix_jobs_run_id", "run_id"),
    )


class TenantGenerationRecord(Base):
    """A counter per tenant, raised in the same transaction as every change to its jobs (submit,
    state, progress, delete): a cached listing keyed by it can never be stale."""

    __tablename__ = "tenant_generations"

    tenant_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    generation: Mapped[int] = mapped_column(Integer, default=0)


class JobEventRecord(Base):
    """One state transition of a job (``from_state`` is None for the submission)."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(64), ForeignKey("jobs.id", ondelete="CASCADE"))
    from_state: Mapped[str | None] = mapped_column(String(32))
    to_state: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (Index("ix_job_events_job_id", "job_id", "id"),)


class ApiKeyRecord(Base):
    """One API key: its tenant and role, and a SHA-256 hash of its secret (never the key)."""

    __tablename__ = "api_keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(128), nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False)
    secret_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    label: Mapped[str | None] = mapped_column(String(200), nullable=True)

    __table_args__ = (Index("ix_api_keys_tenant_id", "tenant_id"),)


class AuditEventRecord(Base):
    """One audited request: who (actor, tenant), what (action, job), when, from where, and the
    HTTP status it got. Append-only: the database refuses updates and deletes (migration 0006)
    except a retention purge (``precise-mrd admin audit-purge``)."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False)
    actor: Mapped[str] = mapped_column(String(200), nullable=False)
    tenant_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    action: Mapped[str] = mapped_column(String(64), nullable=False)
    job_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    client: Mapped[str | None] = mapped_column(String(64), nullable=True)
    outcome: Mapped[int] = mapped_column(Integer, nullable=False)

    __table_args__ = (
        Index("ix_audit_events_tenant_at", "tenant_id", "at"),
        Index("ix_audit_events_at", "at"),
    )


class AuditPurgeRecord(Base):
    """One row: 1 while a retention purge runs (the only time the database allows deletes)."""

    __tablename__ = "audit_purge"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    active: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
