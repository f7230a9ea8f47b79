"""Dependencies of the routers, as ``Annotated`` aliases.

Everything a router needs hangs off ``app.state`` (set once by ``create_app``) and is handed out
through these aliases, so tests swap any of them with ``app.dependency_overrides``::

    SettingsDep, JobServiceDep, StoreDep, MetricsDep, RequestIdDep, CurrentPrincipal

:class:`Principal` is who is asking. Authentication is not switched on yet, so every request is
tenant ``default``, owner ``anonymous`` with every role; when auth lands, only
:func:`get_principal` changes and every job is already scoped by tenant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from precise_mrd.service.jobs.model import JobService
from precise_mrd.service.observability import ServiceMetrics
from precise_mrd.service.settings import Settings
from precise_mrd.service.storage import ArtifactStore

ROLES = ("viewer", "submitter", "admin")


@dataclass(frozen=True)
class Principal:
    """The caller: which tenant's jobs they see, who owns what they submit, what they may do."""

    tenant_id: str
    owner_id: str
    roles: frozenset[str] = frozenset(ROLES)

    def __post_init__(self) -> None:
        if not self.tenant_id or not self.owner_id:
            raise ValueError("tenant_id and owner_id must be non-empty")
        unknown = self.roles - set(ROLES)
        if unknown:
            raise ValueError(f"unknown roles {sorted(unknown)}; use {', '.join(ROLES)}")


ANONYMOUS = Principal(tenant_id="default", owner_id="anonymous")


def _state(request: Request, name: str) -> Any:
    return getattr(request.app.state, name)


def get_settings(request: Request) -> Settings:
    settings: Settings = _state(request, "settings")
    return settings


def get_job_service(request: Request) -> JobService:
    service: JobService = _state(request, "job_service")
    return service


def get_store(request: Request) -> ArtifactStore:
    store: ArtifactStore = _state(request, "store")
    return store


def get_metrics(request: Request) -> ServiceMetrics:
    metrics: ServiceMetrics = _state(request, "metrics")
    return metrics


def get_cache(request: Request) -> Any:
    """The app's cache (in-process, or Redis with PRECISE_MRD_REDIS_URL)."""
    return _state(request, "cache")


def get_request_id(request: Request) -> str | None:
    request_id: str | None = getattr(request.state, "request_id", None)
    return request_id


def get_principal(request: Request) -> Principal:
    """Who is calling. Auth is off: everyone is the anonymous owner in tenant ``default``."""
    return ANONYMOUS


SettingsDep = Annotated[Settings, Depends(get_settings)]
JobServiceDep = Annotated[JobService, Depends(get_job_service)]
StoreDep = Annotated[ArtifactStore, Depends(get_store)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
RequestIdDep = Annotated[str | None, Depends(get_request_id)]
CacheDep = Annotated[Any, Depends(get_cache)]
CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
