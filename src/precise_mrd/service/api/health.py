"""Health endpoints and Prometheus metrics.

* ``GET /health/live``: the process answers (never touches a backend; for liveness probes).
* ``GET /health/ready``: every backend answers; 503 otherwise, or while the process drains before
  a shutdown (for readiness probes and load balancers).
* ``GET /health``: the same checks with each one's timing and error, 200 or 503.
* ``GET /metrics``: Prometheus text format from the app's own registry.

Checks: ``database`` counts jobs by state; ``artifact_store`` writes, reads back and deletes a
probe; ``cache`` pings Redis (optional: while it is down the status is ``degraded`` but the answer
is 200, the service serving uncached); ``executor`` asks the executor whether its loop is alive
(when this process runs one) and, for the Celery executor, whether the broker answers.
"""

from __future__ import annotations

import io
import logging
import uuid
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from precise_mrd import __version__
from precise_mrd.service.api.schemas import CheckRead, HealthRead, LiveRead
from precise_mrd.service.observability import ServiceMetrics, timed
from precise_mrd.service.overload import DRAIN

router = APIRouter(tags=["health"])
#: checks whose failure leaves the service serving (``degraded``, HTTP 200)
OPTIONAL = frozenset({"cache"})


def _check_store(store: Any) -> None:
    key = f"health/probe-{uuid.uuid4().hex}"
    payload = b"precise-mrd health probe"
    store.put_stream(key, io.BytesIO(payload), max_bytes=1024)
    try:
        with store.open(key) as stream:
            if stream.read() != payload:
                raise RuntimeError("the probe read back differently")
    finally:
        store.delete(key)


def _check_executor(executor: Any) -> None:
    if executor is None:
        return
    probe = getattr(executor, "is_alive", None) or getattr(executor, "is_running", None)
    if probe is None:
        return
    alive = probe() if callable(probe) else bool(probe)
    if not alive:
        raise RuntimeError("the executor loop is not running")
    check = getattr(executor, "check", None)
    if callable(check):
        check()  # NB: the Celery executor's broker


def run_checks(request: Request) -> HealthRead:
    """Run every backend check; ``status`` is ``degraded`` when one fails."""
    state = request.app.state
    checks: dict[str, CheckRead] = {}
    cache = getattr(state, "cache", None)
    for name, check in (
        ("database", lambda: state.job_service.counts_by_state()),
        ("artifact_store", lambda: _check_store(state.store)),
        ("executor", lambda: _check_executor(getattr(state, "executor", None))),
        ("cache", lambda: cache.check() if cache is not None else None),
    ):
        ok, milliseconds, error = timed(check)
        detail = error
        if ok and name == "executor" and getattr(state, "executor", None) is None:
            detail = "no executor in this process (jobs run elsewhere)"
        checks[name] = CheckRead(ok=ok, duration_ms=milliseconds, detail=detail)
    status = "ok" if all(check.ok for check in checks.values()) else "degraded"
    return HealthRead(status=status, version=__version__, checks=checks)


def serving(report: HealthRead) -> bool:
    """True while every backend a request needs answers (the cache is not one: without it the
    service serves everything uncached, so its failure is ``degraded`` with HTTP 200)."""
    return all(check.ok for name, check in report.checks.items() if name not in OPTIONAL)


_HEALTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    503: {"model": HealthRead, "description": "At least one backend failed its check"}
}


@router.get(
    "/health", response_model=HealthRead, summary="Check every backend", responses=_HEALTH_RESPONSES
)
def health(request: Request) -> Any:
    """Database, artifact store and executor, each with its time in milliseconds."""
    report = run_checks(request)
    if not serving(report):
        return JSONResponse(report.model_dump(mode="json"), status_code=503)
    return report


@router.get("/health/live", response_model=LiveRead, summary="Liveness probe")
def live() -> LiveRead:
    """200 while the process serves requests."""
    return LiveRead(status="alive")


@router.get(
    "/health/ready",
    response_model=HealthRead,
    summary="Readiness probe",
    responses=_HEALTH_RESPONSES,
)
def ready(request: Request) -> Any:
    """200 when every backend answers, 503 otherwise, and 503 ``draining`` once the process has
    been asked to stop (``PRECISE_MRD_SHUTDOWN_DRAIN_SECONDS``): it still serves, but the load
    balancer should send it nothing new."""
    if DRAIN.is_draining:
        report = HealthRead(status="draining", version=__version__, checks={})
        return JSONResponse(report.model_dump(mode="json"), status_code=503)
    return health(request)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
)
def prometheus_metrics(request: Request) -> Response:
    """Request latency, errors and throughput by route; jobs by state; job duration; detection
    outcomes."""
    metrics: ServiceMetrics = request.app.state.metrics
    try:
        metrics.scan_finished_jobs()
    except Exception:  # NB: the database may be down; the scrape still answers
        logging.getLogger("precise_mrd.service").warning("job scan failed", exc_info=True)
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
