"""Dependencies of the routers, as ``Annotated`` aliases.

Everything a router needs hangs off ``app.state`` (set once by ``create_app``) and is handed out
through these aliases, so tests swap any of them with ``app.dependency_overrides``::

    SettingsDep, JobServiceDep, StoreDep, MetricsDep, RequestIdDep, CurrentPrincipal

One route takes none: ``GET /status/{job_id}``, the most frequent request, is a
:class:`~precise_mrd.service.api.routing.RequestRoute` that reads ``app.state`` and calls
:func:`get_principal` itself (an override does not reach it; put the principal in the request
state, as the authentication middleware does).

:class:`Principal` is who is asking (:mod:`precise_mrd.service.security`); ``Viewer``,
``Submitter`` and ``Admin`` also check the role. Every job is scoped by the caller's tenant.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from precise_mrd.service.errors import ForbiddenError
from precise_mrd.service.jobs.model import JobService
from precise_mrd.service.observability import ServiceMetrics
from precise_mrd.service.security.principal import Principal
from precise_mrd.service.settings import Settings
from precise_mrd.service.storage import ArtifactStore


def _state(request: Request, name: str) -> Any:
    return getattr(request.app.state, name)


async def get_settings(request: Request) -> Settings:
    settings: Settings = _state(request, "settings")
    return settings


async def get_job_service(request: Request) -> JobService:
    service: JobService = _state(request, "job_service")
    return service


async def get_store(request: Request) -> ArtifactStore:
    store: ArtifactStore = _state(request, "store")
    return store


async def get_metrics(request: Request) -> ServiceMetrics:
    metrics: ServiceMetrics = _state(request, "metrics")
    return metrics


async def get_cache(request: Request) -> Any:
    """The app's cache (in-process, or Redis with PRECISE_MRD_REDIS_URL)."""
    return _state(request, "cache")


async def get_request_id(request: Request) -> str | None:
    request_id: str | None = getattr(request.state, "request_id", None)
    return request_id


async def get_principal(request: Request) -> Principal:
    """Who is calling (``PRECISE_MRD_AUTH_MODE``; with ``none``, the anonymous admin of tenant
    ``default``). Kept on ``request.state`` for the logs."""
    found: Principal | None = getattr(request.state, "principal", None)
    if found is None:  # NB: the middleware authenticates every non-public path first
        authenticator = _state(request, "authenticator")
        if authenticator.mode == "none":  # the anonymous admin: nothing to look up
            principal: Principal = authenticator.authenticate(request.headers)
        else:  # NB: an API key is looked up in the database: not on the event loop
            principal = await run_in_threadpool(authenticator.authenticate, request.headers)
        request.state.principal = found = principal
    return found


def require_role(principal: Principal, role: str) -> None:
    """403 unless the caller's role includes ``role`` (check a job's tenant first: another
    tenant's job is a 404 whatever the role)."""
    if not principal.allows(role):
        raise ForbiddenError(
            f"role {principal.role!r} may not do this; it needs {role!r}",
            fix=f"use a key or token with the {role} role",
        )


def _needs(role: str) -> Any:
    async def check(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        require_role(principal, role)
        return principal

    return check


SettingsDep = Annotated[Settings, Depends(get_settings)]
JobServiceDep = Annotated[JobService, Depends(get_job_service)]
StoreDep = Annotated[ArtifactStore, Depends(get_store)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
RequestIdDep = Annotated[str | None, Depends(get_request_id)]
CacheDep = Annotated[Any, Depends(get_cache)]
CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
#: any authenticated caller (every role can read its own tenant's jobs)
Viewer = Annotated[Principal, Depends(_needs("viewer"))]
#: may also submit and cancel
Submitter = Annotated[Principal, Depends(_needs("submitter"))]
Admin = Annotated[Principal, Depends(_needs("admin"))]
