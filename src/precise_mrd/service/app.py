"""create_app(settings): the FastAPI application, wired from settings and nothing else.

Nothing is built at import time. ``create_app`` takes a :class:`Settings` and, by default, builds
the embedded backends: SQLite through SQLAlchemy (migrated to the newest Alembic revision at
start-up), a local artifact directory and the local executor (one subprocess per job). Tests pass
their own ``job_service`` and ``store`` (e.g. :class:`~precise_mrd.service.jobs.memory.
InMemoryJobService`) and ``start_executor=False``, or override single dependencies with
``app.dependency_overrides``.

Start-up (the lifespan): configure JSON logging, run migrations (when the app built the SQL
service), start the executor; shut-down stops the executor (its running workers are left to the
next start-up's crash recovery when the process is killed instead).

>>> import tempfile
>>> from pathlib import Path
>>> from precise_mrd.service.jobs.memory import InMemoryJobService
>>> from precise_mrd.service.storage import LocalArtifactStore
>>> root = Path(tempfile.mkdtemp())
>>> app = create_app(Settings(data_dir=root), job_service=InMemoryJobService(),
...                  store=LocalArtifactStore(root / "a"), start_executor=False)
>>> sorted(path for path in app.openapi()["paths"] if path.startswith("/health"))
['/health', '/health/live', '/health/ready']
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from precise_mrd import __version__
from precise_mrd.service.api import audit, configs, health, jobs
from precise_mrd.service.api.docs import install_docs
from precise_mrd.service.api.uploads import UPLOAD_FIELDS, BodySizeLimitMiddleware
from precise_mrd.service.db.engine import display_url
from precise_mrd.service.errors import install_error_handlers, responses
from precise_mrd.service.heap import limit_malloc_arenas
from precise_mrd.service.jobs.model import JobService
from precise_mrd.service.observability import (
    RequestContextMiddleware,
    ServiceMetrics,
    configure_logging,
    get_logger,
)
from precise_mrd.service.overload import OverloadMiddleware, drain_on_sigterm
from precise_mrd.service.security.audit import AuditLog, AuditMiddleware
from precise_mrd.service.security.auth import Authenticator
from precise_mrd.service.security.limits import RateLimiter
from precise_mrd.service.security.middleware import (
    AuthenticationMiddleware,
    RateLimitMiddleware,
    SecurityHeadersMiddleware,
)
from precise_mrd.service.settings import Settings
from precise_mrd.service.storage import ArtifactStore, store_from_settings

DESCRIPTION = """\
Tumour-informed MRD detection as a job service. Submit a run (`POST /submit`), follow it
(`GET /status/{job_id}`), read its call (`GET /results/{job_id}`) and download its files
(`GET /download/{job_id}/{type}`). Errors share one body:
`{"error": {"code", "message", "field", "fix", "request_id"}}`.
"""


def build_sql_service(settings: Settings, store: ArtifactStore) -> tuple[JobService, list[Any]]:
    """The SQL job service over the settings' database (and read replica); and its engines,
    for the caller to dispose of."""
    from precise_mrd.service.db import create_engine_from_settings, make_session_factory
    from precise_mrd.service.db.engine import create_read_engine_from_settings
    from precise_mrd.service.jobs.service import SqlJobService

    engine = create_engine_from_settings(settings)
    read_engine = create_read_engine_from_settings(settings)
    read_sessions = make_session_factory(read_engine) if read_engine is not None else None
    service = SqlJobService(
        make_session_factory(engine), store, settings, read_sessions=read_sessions
    )
    return service, [engine] if read_engine is None else [engine, read_engine]


def _build_executor(settings: Settings, job_service: JobService) -> Any:
    if settings.executor == "celery":
        from precise_mrd.service.jobs.celery_executor import CeleryExecutor

        return CeleryExecutor(job_service, settings)  # type: ignore[arg-type]
    from precise_mrd.service.jobs.executor import LocalExecutor

    return LocalExecutor(job_service, settings)  # type: ignore[arg-type]


def create_app(
    settings: Settings,
    *,
    job_service: JobService | None = None,
    store: ArtifactStore | None = None,
    start_executor: bool = True,
    authenticator: Authenticator | None = None,
    freeze_heap_on_start: bool = False,
) -> FastAPI:
    """The API over ``settings``; pass ``job_service``/``store`` to replace the embedded ones
    (and ``authenticator`` for API-key auth beside a job service that is not the SQL one).
    ``freeze_heap_on_start`` (server processes) exempts what start-up built from the garbage
    collector (:func:`~precise_mrd.service.serving.freeze_startup_heap`)."""
    store = store if store is not None else store_from_settings(settings)
    engines: list[Any] = []
    owns_database = job_service is None
    if job_service is None:
        job_service, engines = build_sql_service(settings, store)
    # NB: API keys and the audit trail live in the SQL job database (none beside other services)
    sessions = getattr(job_service, "sessions", None)
    if authenticator is None:
        authenticator = Authenticator.from_settings(settings, sessions)
    metrics = ServiceMetrics(job_service)
    metrics.data_dir = settings.data_dir
    from precise_mrd.service.cache import cache_from_settings

    cache = cache_from_settings(settings.redis_url, settings.cache_prefix)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.log_level)
        log = get_logger("precise_mrd.service")
        # NB: before the executor's and the request threads make arenas of their own
        limit_malloc_arenas(settings.malloc_arena_max)
        if owns_database and settings.database_migrate_on_start:
            from sqlalchemy.exc import SQLAlchemyError

            from precise_mrd.service.db import upgrade_database
            from precise_mrd.service.db.engine import describe_database_error

            try:
                upgrade_database(settings.database_url)
            except SQLAlchemyError as error:
                message = describe_database_error(settings.database_url, error)
                log.error("cannot migrate the job database", error=message)
                raise RuntimeError(message) from None
        executor = None
        warmer = None
        if start_executor:
            if settings.warm_kernels_on_start:
                from precise_mrd.service.kernels import KernelCacheWarmer

                warmer = KernelCacheWarmer(settings.kernel_cache_dir, log)
                warmer.start()
            executor = _build_executor(settings, job_service)
            executor.start()
        app.state.executor = executor
        metrics.executor = executor
        metrics.executor_name = settings.executor if executor is not None else "none"
        log.debug(
            "settings",
            api_host=settings.api_host,
            api_port=settings.api_port,
            log_level=settings.log_level,
            enable_parallel_processing=settings.enable_parallel_processing,
            enable_deep_learning=settings.enable_deep_learning,
            job_timeout_seconds=settings.job_timeout_seconds,
            cleanup_old_jobs_hours=settings.cleanup_old_jobs_hours,
            kernel_cache_dir=str(settings.kernel_cache_dir),
            work_dir=str(settings.work_dir),
        )
        log.info(
            "service started",
            version=__version__,
            database=display_url(settings.database_url)
            if owns_database
            else type(job_service).__name__,
            read_database=display_url(settings.database_read_url)
            if settings.database_read_url
            else None,
            artifact_store=repr(store),
            executor=settings.executor if executor is not None else "none",
            max_concurrent_jobs=settings.max_concurrent_jobs,
            enable_ml_calling=settings.enable_ml_calling,
        )
        restore_sigterm = drain_on_sigterm(
            settings.shutdown_drain_seconds,
            on_begin=lambda: log.info(
                "draining before shutdown", seconds=settings.shutdown_drain_seconds
            ),
        )
        if freeze_heap_on_start:
            from precise_mrd.service.api.uploads import import_readers
            from precise_mrd.service.serving import freeze_startup_heap

            import_readers()  # NB: what the first submission would import, frozen with the rest
            log.debug("start-up heap frozen", objects=freeze_startup_heap())
        try:
            yield
        finally:
            restore_sigterm()
            if warmer is not None:
                warmer.stop()
            if executor is not None:
                executor.stop()
            for engine in engines:
                engine.dispose()
            log.info("service stopped")

    app = FastAPI(
        title="Precise MRD",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # NB: FastAPI's pages load from CDNs; install_docs serves local copies
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.job_service = job_service
    app.state.store = store
    app.state.metrics = metrics
    app.state.status_bodies = jobs.StatusBodies()
    app.state.cache = cache
    app.state.executor = None
    app.state.authenticator = authenticator
    app.state.audit_log = AuditLog(sessions) if sessions is not None else None
    install_error_handlers(app)
    # NB: with auth on, every route of these two needs credentials (and counts to the limits)
    app.include_router(jobs.router, responses=responses(400, 401, 429))
    app.include_router(configs.router, responses=responses(400, 401, 429))
    app.include_router(audit.router, responses=responses(400, 401, 429))
    # NB: /metrics (and /health with PRECISE_MRD_PUBLIC_HEALTH=false) need credentials too
    app.include_router(health.router, responses=responses(401))
    if settings.docs_enabled:
        install_docs(app)
    if settings.cors_origins:
        # NB: credentials (cookies, Authorization) only to named origins, never to "*"
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials="*" not in settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID"],
            expose_headers=[
                "X-Request-ID",
                "Content-Disposition",
                "Retry-After",
                "RateLimit-Limit",
                "RateLimit-Remaining",
                "RateLimit-Reset",
            ],
        )
    # NB: every file field may be up to the limit; a form's text fields add little.
    max_body = len(UPLOAD_FIELDS) * settings.max_upload_bytes + 1024 * 1024
    app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=max_body)
    app.add_middleware(RateLimitMiddleware, limiter=RateLimiter.from_settings(settings, cache))
    app.add_middleware(
        AuthenticationMiddleware,
        authenticator=authenticator,
        public_health=settings.public_health,
        public_metrics=settings.public_metrics,
    )
    # NB: outside authentication, so refusals are recorded; it reads the principal auth leaves
    app.add_middleware(AuditMiddleware, audit_log=app.state.audit_log)
    # NB: outside auth and limits, so a refusal for overload costs next to nothing
    app.add_middleware(
        OverloadMiddleware,
        max_inflight=settings.max_inflight_requests,
        body_timeout_seconds=settings.client_body_timeout_seconds,
    )
    app.add_middleware(SecurityHeadersMiddleware, tls=bool(settings.tls_certfile))
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    logging.getLogger("precise_mrd.service").debug("app created")
    return app
