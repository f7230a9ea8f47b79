"""The audit trail: every state-changing request, result read and download, append-only.

:class:`AuditMiddleware` records, for ``POST /submit``, ``POST /jobs/{id}/cancel``,
``GET /results/{id}``, ``GET /download/{id}/{type}`` and ``GET /audit``: the actor (an API key
``key:<id>``, a JWT ``jwt:<subject>``, or ``anonymous``), the tenant, the action, the job, the
time, the request ID, the client address and the HTTP status (refusals too: a 401 or a 404 is
recorded). The row is written before the response starts, so a client never sees an answer
whose audit row is missing. Rows live in ``audit_events``, where the database refuses updates
and deletes (migration ``0006``) except a retention purge of rows older than
``PRECISE_MRD_AUDIT_RETENTION_DAYS`` (``precise-mrd admin audit-purge``). ``GET /audit``
(admins) filters and pages them; ``precise-mrd admin audit-export`` writes JSON lines.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from precise_mrd.service.db.models import AuditEventRecord, AuditPurgeRecord

logger = logging.getLogger("precise_mrd.service.audit")

_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(r"^/submit$"), "submit"),
    ("POST", re.compile(r"^/jobs/(?P<job>[^/]+)/cancel$"), "cancel"),
    ("GET", re.compile(r"^/results/(?P<job>[^/]+)$"), "read_results"),
    ("GET", re.compile(r"^/download/(?P<job>[^/]+)/[^/]+$"), "download"),
    ("GET", re.compile(r"^/audit$"), "read_audit"),
]


def audited_action(method: str, path: str) -> tuple[str, str | None] | None:
    """``(action, job id)`` of an audited request, else None.

    >>> audited_action("GET", "/download/j1/report"), audited_action("GET", "/jobs")
    (('download', 'j1'), None)
    """
    for route_method, pattern, action in _ROUTES:
        match = pattern.match(path)
        if route_method == method and match:
            return action, match.groupdict().get("job")
    return None


@dataclass(frozen=True)
class AuditEvent:
    at: datetime
    actor: str
    tenant_id: str | None
    action: str
    job_id: str | None
    request_id: str | None
    client: str | None
    outcome: int
    id: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "tenant": self.tenant_id,
            "action": self.action,
            "job_id": self.job_id,
            "request_id": self.request_id,
            "client": self.client,
            "outcome": self.outcome,
        }


def _event(record: AuditEventRecord) -> AuditEvent:
    return AuditEvent(
        id=record.id,
        at=record.at,
        actor=record.actor,
        tenant_id=record.tenant_id,
        action=record.action,
        job_id=record.job_id,
        request_id=record.request_id,
        client=record.client,
        outcome=record.outcome,
    )


class AuditLog:
    """The ``audit_events`` table (``sessions``: a SQLAlchemy session factory)."""

    def __init__(self, sessions: Any) -> None:
        self._sessions = sessions

    def record(self, event: AuditEvent) -> None:
        with self._sessions.begin() as session:
            session.add(
                AuditEventRecord(
                    at=event.at,
                    actor=event.actor[:200],
                    tenant_id=event.tenant_id,
                    action=event.action,
                    job_id=(event.job_id or None) and event.job_id[:64],
                    request_id=event.request_id,
                    client=event.client,
                    outcome=event.outcome,
                )
            )

    def query(
        self,
        *,
        tenant: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        job_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after_id: int = 0,
        limit: int = 100,
    ) -> tuple[list[AuditEvent], int | None]:
        """Events oldest first after ``after_id``; the cursor of the next page (or None)."""
        query = select(AuditEventRecord).where(AuditEventRecord.id > after_id)
        for column, value in (
            (AuditEventRecord.tenant_id, tenant),
            (AuditEventRecord.actor, actor),
            (AuditEventRecord.action, action),
            (AuditEventRecord.job_id, job_id),
        ):
            if value is not None:
                query = query.where(column == value)
        if since is not None:
            query = query.where(AuditEventRecord.at >= since)
        if until is not None:
            query = query.where(AuditEventRecord.at < until)
        query = query.order_by(AuditEventRecord.id).limit(limit + 1)
        with self._sessions() as session:
            events = [_event(record) for record in session.scalars(query)]
        if len(events) > limit:
            events = events[:limit]
            return events, events[-1].id
        return events, None

    def all(self, **filters: Any) -> Iterator[AuditEvent]:
        cursor: int | None = 0
        while cursor is not None:
            events, cursor = self.query(after_id=cursor, limit=1000, **filters)
            yield from events

    def purge(self, older_than: datetime) -> int:
        """Delete events before ``older_than`` (the one delete the database allows)."""
        with self._sessions.begin() as session:
            session.execute(
                update(AuditPurgeRecord).where(AuditPurgeRecord.id == 1).values(active=1)
            )
            removed = (
                session.query(AuditEventRecord).filter(AuditEventRecord.at < older_than).delete()
            )
            session.execute(
                update(AuditPurgeRecord).where(AuditPurgeRecord.id == 1).values(active=0)
            )
        return int(removed)


class AuditMiddleware:
    """Writes the audit row of each audited request before its response starts."""

    def __init__(self, app: ASGIApp, audit_log: AuditLog | None) -> None:
        self.app = app
        self.audit_log = audit_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = (
            audited_action(scope.get("method", ""), scope.get("path", ""))
            if scope["type"] == "http" and self.audit_log is not None
            else None
        )
        if found is None:
            await self.app(scope, receive, send)
            return
        action, job_id = found
        state = scope.setdefault("state", {})
        client = scope.get("client")

        async def send_after_audit(message: Message) -> None:
            if message["type"] == "http.response.start":
                principal = state.get("principal")
                event = AuditEvent(
                    at=datetime.now(UTC),
                    actor=principal.owner_id if principal is not None else "anonymous",
                    tenant_id=principal.tenant_id if principal is not None else None,
                    action=action,
                    job_id=job_id,
                    request_id=state.get("request_id"),
                    client=client[0] if client else None,
                    outcome=int(message["status"]),
                )
                assert self.audit_log is not None
                try:
                    await run_in_threadpool(self.audit_log.record, event)
                except Exception as exc:  # NB: the database is down: the log line keeps the event
                    reason = (str(exc).splitlines() or [type(exc).__name__])[0][:300]
                    logger.error("audit write failed (%s): %s", reason, json.dumps(event.as_json()))
            await send(message)

        await self.app(scope, receive, send_after_audit)
