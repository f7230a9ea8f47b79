"""``GET /audit``: the audit trail, for admins (every tenant; filter with ``tenant``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from precise_mrd.service.api.deps import Admin, SettingsDep
from precise_mrd.service.errors import UnavailableError, UnprocessableError, responses

router = APIRouter(tags=["audit"])


class AuditEventRead(BaseModel):
    id: int
    at: datetime
    actor: str
    tenant: str | None
    action: str
    job_id: str | None
    request_id: str | None
    client: str | None
    outcome: int


class AuditPage(BaseModel):
    events: list[AuditEventRead]
    next_cursor: str | None


@router.get(
    "/audit",
    response_model=AuditPage,
    summary="Read the audit trail (admins)",
    responses=responses(403, 422, 503),
)
def read_audit(
    request: Request,
    principal: Admin,
    settings: SettingsDep,
    tenant: Annotated[str | None, Query(max_length=128)] = None,
    actor: Annotated[str | None, Query(max_length=200)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    job_id: Annotated[str | None, Query(max_length=64)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: Annotated[str | None, Query(max_length=20)] = None,
    page_size: Annotated[int, Query(ge=1)] = 100,
) -> Any:
    """Events oldest first, ``page_size`` at a time (at most ``PRECISE_MRD_MAX_PAGE_SIZE``);
    pass ``next_cursor`` back as ``cursor`` for the next page."""
    audit_log = getattr(request.app.state, "audit_log", None)
    if audit_log is None:
        raise UnavailableError("this server keeps no audit trail (no SQL job database)")
    if page_size > settings.max_page_size:
        raise UnprocessableError(
            f"page_size {page_size} is over {settings.max_page_size}",
            field="page_size",
            fix=f"ask for at most {settings.max_page_size} (PRECISE_MRD_MAX_PAGE_SIZE)",
        )
    if cursor is not None and not cursor.isdigit():
        raise UnprocessableError("cursor is not one this server gave", field="cursor")
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise UnprocessableError(
                f"{name} has no time zone", field=name, fix="give an offset, e.g. 2026-12-01T00:00Z"
            )
    events, next_id = audit_log.query(
        tenant=tenant,
        actor=actor,
        action=action,
        job_id=job_id,
        since=since,
        until=until,
        after_id=int(cursor or 0),
        limit=page_size,
    )
    return AuditPage(
        events=[AuditEventRead(**event.as_json()) for event in events],
        next_cursor=str(next_id) if next_id is not None else None,
    )
