"""Service settings: the one place that reads the environment.

The deployment guide's variable names are honoured exactly (``PRECISE_MRD_LOG_LEVEL``,
``PRECISE_MRD_API_HOST``, ``PRECISE_MRD_API_PORT``, ``ENABLE_PARALLEL_PROCESSING``,
``ENABLE_ML_CALLING``, ``ENABLE_DEEP_LEARNING``, ``MAX_CONCURRENT_JOBS``, ``JOB_TIMEOUT_SECONDS``,
``CLEANUP_OLD_JOBS_HOURS``); everything else is ``PRECISE_MRD_``-prefixed. Build settings with
:func:`get_settings` (or ``Settings(...)`` with keyword overrides in tests); nothing is read at
import time. Keyword arguments use the field names and win over the environment.

Unset locations derive from ``PRECISE_MRD_DATA_DIR`` (default ``./.precise_mrd_data``): the
SQLite database ``jobs.db``, the artifact directory ``artifacts/``, the job work directory
``work/`` and the workers' compiled-kernel cache ``numba-cache/`` (``NUMBA_CACHE_DIR``).

>>> settings = Settings(data_dir="/srv/mrd", max_concurrent_jobs=4)
>>> settings.database_url, str(settings.artifact_root), settings.max_concurrent_jobs
('sqlite:////srv/mrd/jobs.db', '/srv/mrd/artifacts', 4)
>>> Settings(cors_origins="https://a.example, https://b.example").cors_origins
['https://a.example', 'https://b.example']
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

LogLevel = Literal["debug", "info", "warning", "error", "critical"]

#: settings that hold secrets (passwords in URLs, keys): each can come from ``<VARIABLE>_FILE``
#: and is never logged, shown by ``/health`` or echoed in an error
SECRET_VARIABLES: dict[str, str] = {
    "database_url": "PRECISE_MRD_DATABASE_URL",
    "database_read_url": "PRECISE_MRD_DATABASE_READ_URL",
    "database_password": "PRECISE_MRD_DATABASE_PASSWORD",
    "broker_url": "PRECISE_MRD_BROKER_URL",
    "redis_url": "PRECISE_MRD_REDIS_URL",
    "storage_url": "PRECISE_MRD_STORAGE_URL",
    "jwt_secret": "PRECISE_MRD_JWT_SECRET",
}
#: the object stores' own credential variables, which the SDKs read; each may be ``<NAME>_FILE``
CLOUD_SECRET_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_ACCOUNT_KEY",
)


def _env(name: str, field: str) -> AliasChoices:
    """Accept the environment variable ``name`` and the keyword ``field``."""
    return AliasChoices(name, field)


class Settings(BaseSettings):
    """Every knob of the service. Environment variable names are in each field's alias."""

    model_config = SettingsConfigDict(
        env_prefix="", extra="ignore", populate_by_name=True, case_sensitive=False
    )

    # --- the deployment guide's variables -------------------------------------------------
    log_level: LogLevel = Field("info", validation_alias=_env("PRECISE_MRD_LOG_LEVEL", "log_level"))
    api_host: str = Field("127.0.0.1", validation_alias=_env("PRECISE_MRD_API_HOST", "api_host"))
    api_port: int = Field(
        8000, ge=0, le=65535, validation_alias=_env("PRECISE_MRD_API_PORT", "api_port")
    )
    #: server processes sharing the port (each with its own app, pools and executor)
    api_workers: int = Field(
        1, ge=1, le=64, validation_alias=_env("PRECISE_MRD_API_WORKERS", "api_workers")
    )
    #: the server's event loop: the standard library's serves a saturated process fairly
    #: (p99 near its median); uvloop's shows second-long tails under load (performance.md)
    event_loop: Literal["asyncio", "uvloop"] = Field(
        "asyncio", validation_alias=_env("PRECISE_MRD_EVENT_LOOP", "event_loop")
    )
    #: on SIGTERM, answer readiness 503 and keep serving this long before shutting down, so
    #: the load balancer stops sending first (0: shut down at once; SIGINT never waits)
    shutdown_drain_seconds: float = Field(
        0,
        ge=0,
        le=300,
        validation_alias=_env("PRECISE_MRD_SHUTDOWN_DRAIN_SECONDS", "shutdown_drain_seconds"),
    )
    #: the most malloc arenas glibc makes in an API process (0: glibc's default, eight per
    #: core); ``MALLOC_ARENA_MAX`` in the environment wins. More arenas hold more freed memory
    malloc_arena_max: int = Field(
        2,
        ge=0,
        le=64,
        validation_alias=_env("PRECISE_MRD_MALLOC_ARENA_MAX", "malloc_arena_max"),
    )
    #: requests one API process serves at once; past it a 503 with Retry-After (not a queue)
    max_inflight_requests: int = Field(
        512,
        ge=1,
        validation_alias=_env("PRECISE_MRD_MAX_INFLIGHT_REQUESTS", "max_inflight_requests"),
    )
    #: a connection must finish sending its request headers within this (slow clients)
    client_header_timeout_seconds: float = Field(
        30,
        gt=0,
        validation_alias=_env(
            "PRECISE_MRD_CLIENT_HEADER_TIMEOUT_SECONDS", "client_header_timeout_seconds"
        ),
    )
    #: longest wait for the next piece of a request body; past it a 408 (slow clients)
    client_body_timeout_seconds: float = Field(
        60,
        gt=0,
        validation_alias=_env(
            "PRECISE_MRD_CLIENT_BODY_TIMEOUT_SECONDS", "client_body_timeout_seconds"
        ),
    )
    enable_parallel_processing: bool = Field(
        True, validation_alias=_env("ENABLE_PARALLEL_PROCESSING", "enable_parallel_processing")
    )
    # NB: on by default, as the deployment guide configures them: a switch lets a job *ask* for
    # an artefact filter; a job without the flag (or an ml section) still runs unfiltered.
    enable_ml_calling: bool = Field(
        True, validation_alias=_env("ENABLE_ML_CALLING", "enable_ml_calling")
    )
    enable_deep_learning: bool = Field(
        True, validation_alias=_env("ENABLE_DEEP_LEARNING", "enable_deep_learning")
    )
    max_concurrent_jobs: int = Field(
        2, ge=1, le=256, validation_alias=_env("MAX_CONCURRENT_JOBS", "max_concurrent_jobs")
    )
    job_timeout_seconds: float = Field(
        3600, gt=0, validation_alias=_env("JOB_TIMEOUT_SECONDS", "job_timeout_seconds")
    )
    cleanup_old_jobs_hours: float = Field(
        168, gt=0, validation_alias=_env("CLEANUP_OLD_JOBS_HOURS", "cleanup_old_jobs_hours")
    )

    # --- locations and limits -------------------------------------------------------------
    data_dir: Path = Field(
        Path(".precise_mrd_data"), validation_alias=_env("PRECISE_MRD_DATA_DIR", "data_dir")
    )
    database_url: str = Field("", validation_alias=_env("PRECISE_MRD_DATABASE_URL", "database_url"))
    #: the password of the database URLs' user, kept apart from them so a cloud's secret store
    #: (RDS-managed secrets, Secret Manager, Key Vault) can hold it alone; a URL's own wins
    database_password: str = Field(
        "", repr=False, validation_alias=_env("PRECISE_MRD_DATABASE_PASSWORD", "database_password")
    )
    #: a replica (or a read-only role) for status, results and listings; writes never go there
    database_read_url: str = Field(
        "", validation_alias=_env("PRECISE_MRD_DATABASE_READ_URL", "database_read_url")
    )
    #: PostgreSQL pool, per process: steady connections, extra ones under load, checkout wait
    database_pool_size: int = Field(
        5,
        ge=1,
        le=100,
        validation_alias=_env("PRECISE_MRD_DATABASE_POOL_SIZE", "database_pool_size"),
    )
    database_max_overflow: int = Field(
        10,
        ge=0,
        le=100,
        validation_alias=_env("PRECISE_MRD_DATABASE_MAX_OVERFLOW", "database_max_overflow"),
    )
    database_pool_timeout_seconds: float = Field(
        10,
        gt=0,
        le=300,
        validation_alias=_env(
            "PRECISE_MRD_DATABASE_POOL_TIMEOUT_SECONDS", "database_pool_timeout_seconds"
        ),
    )
    database_pool_recycle_seconds: int = Field(
        1800,
        ge=30,
        validation_alias=_env(
            "PRECISE_MRD_DATABASE_POOL_RECYCLE_SECONDS", "database_pool_recycle_seconds"
        ),
    )
    database_connect_timeout_seconds: int = Field(
        5,
        ge=1,
        le=120,
        validation_alias=_env(
            "PRECISE_MRD_DATABASE_CONNECT_TIMEOUT_SECONDS", "database_connect_timeout_seconds"
        ),
    )
    #: apply the migrations when the API starts (off: run `precise-mrd db upgrade` yourself)
    database_migrate_on_start: bool = Field(
        True,
        validation_alias=_env("PRECISE_MRD_DATABASE_MIGRATE_ON_START", "database_migrate_on_start"),
    )
    #: where artifacts live: a path, s3://bucket/prefix, gs://bucket/prefix or az://container/prefix
    storage_url: str = Field("", validation_alias=_env("PRECISE_MRD_STORAGE_URL", "storage_url"))
    download_url_seconds: int = Field(
        300,
        ge=10,
        le=7 * 24 * 3600,
        validation_alias=_env("PRECISE_MRD_DOWNLOAD_URL_SECONDS", "download_url_seconds"),
    )
    artifact_root: Path | None = Field(
        None, validation_alias=_env("PRECISE_MRD_ARTIFACT_ROOT", "artifact_root")
    )
    work_root: Path | None = Field(
        None, validation_alias=_env("PRECISE_MRD_WORK_ROOT", "work_root")
    )
    #: numba's compiled-kernel cache for the workers (default ``<data_dir>/numba-cache``)
    numba_cache_dir: Path | None = Field(
        None, validation_alias=_env("NUMBA_CACHE_DIR", "numba_cache_dir")
    )
    #: compile the kernels in the background at start-up when the cache is cold
    warm_kernels_on_start: bool = Field(
        True, validation_alias=_env("PRECISE_MRD_WARM_KERNELS_ON_START", "warm_kernels_on_start")
    )
    max_upload_bytes: int = Field(
        2 * 1024**3,
        gt=0,
        validation_alias=_env("PRECISE_MRD_MAX_UPLOAD_BYTES", "max_upload_bytes"),
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_env("PRECISE_MRD_CORS_ORIGINS", "cors_origins")
    )
    # --- security -------------------------------------------------------------------------
    auth_mode: Literal["none", "api_key", "jwt", "both"] = Field(
        "none", validation_alias=_env("PRECISE_MRD_AUTH_MODE", "auth_mode")
    )
    #: serve without auth on a non-loopback address (behind an authenticating proxy, on purpose)
    allow_unauthenticated: bool = Field(
        False, validation_alias=_env("PRECISE_MRD_ALLOW_UNAUTHENTICATED", "allow_unauthenticated")
    )
    #: /health and /health/ready without credentials (liveness is always open)
    public_health: bool = Field(
        True, validation_alias=_env("PRECISE_MRD_PUBLIC_HEALTH", "public_health")
    )
    rate_limit: str = Field(
        "300/minute", validation_alias=_env("PRECISE_MRD_RATE_LIMIT", "rate_limit")
    )
    tenant_rate_limit: str = Field(
        "1200/minute", validation_alias=_env("PRECISE_MRD_TENANT_RATE_LIMIT", "tenant_rate_limit")
    )
    rate_limit_routes: str = Field(
        "", validation_alias=_env("PRECISE_MRD_RATE_LIMIT_ROUTES", "rate_limit_routes")
    )
    #: queued + running jobs one tenant may have; a submission past it is a 429
    tenant_max_active_jobs: int = Field(
        1000,
        ge=1,
        validation_alias=_env("PRECISE_MRD_TENANT_MAX_ACTIVE_JOBS", "tenant_max_active_jobs"),
    )
    #: queued jobs in all; a submission past it is a 503 with Retry-After (the workers are
    #: behind: shed load at the door rather than queue work that will wait for hours)
    max_queued_jobs: int = Field(
        10_000, ge=1, validation_alias=_env("PRECISE_MRD_MAX_QUEUED_JOBS", "max_queued_jobs")
    )
    #: audit events older than this are removed by `precise-mrd admin audit-purge`
    audit_retention_days: int = Field(
        2190,
        ge=1,
        validation_alias=_env("PRECISE_MRD_AUDIT_RETENTION_DAYS", "audit_retention_days"),
    )
    #: /docs and /redoc (switch off in production if the API need not document itself)
    docs_enabled: bool = Field(
        True, validation_alias=_env("PRECISE_MRD_DOCS_ENABLED", "docs_enabled")
    )
    tls_certfile: str = Field("", validation_alias=_env("PRECISE_MRD_TLS_CERTFILE", "tls_certfile"))
    tls_keyfile: str = Field("", validation_alias=_env("PRECISE_MRD_TLS_KEYFILE", "tls_keyfile"))
    tls_client_ca: str = Field(
        "", validation_alias=_env("PRECISE_MRD_TLS_CLIENT_CA", "tls_client_ca")
    )
    #: /metrics without credentials (a Prometheus that scrapes over a private network)
    public_metrics: bool = Field(
        False, validation_alias=_env("PRECISE_MRD_PUBLIC_METRICS", "public_metrics")
    )
    jwt_secret: str = Field(
        "", repr=False, validation_alias=_env("PRECISE_MRD_JWT_SECRET", "jwt_secret")
    )
    jwt_jwks: str = Field("", validation_alias=_env("PRECISE_MRD_JWT_JWKS", "jwt_jwks"))
    jwt_issuer: str = Field("", validation_alias=_env("PRECISE_MRD_JWT_ISSUER", "jwt_issuer"))
    jwt_audience: str = Field("", validation_alias=_env("PRECISE_MRD_JWT_AUDIENCE", "jwt_audience"))
    jwt_tenant_claim: str = Field(
        "tenant", validation_alias=_env("PRECISE_MRD_JWT_TENANT_CLAIM", "jwt_tenant_claim")
    )
    jwt_role_claim: str = Field(
        "role", validation_alias=_env("PRECISE_MRD_JWT_ROLE_CLAIM", "jwt_role_claim")
    )
    jwt_leeway_seconds: float = Field(
        30,
        ge=0,
        le=600,
        validation_alias=_env("PRECISE_MRD_JWT_LEEWAY_SECONDS", "jwt_leeway_seconds"),
    )

    # --- cache and shared counters -----------------------------------------------------------
    redis_url: str = Field("", validation_alias=_env("PRECISE_MRD_REDIS_URL", "redis_url"))
    cache_prefix: str = Field(
        "precise-mrd:", validation_alias=_env("PRECISE_MRD_CACHE_PREFIX", "cache_prefix")
    )
    cache_ttl_seconds: float = Field(
        300, gt=0, validation_alias=_env("PRECISE_MRD_CACHE_TTL_SECONDS", "cache_ttl_seconds")
    )

    # --- execution: the local executor or Celery workers ------------------------------------
    executor: Literal["local", "celery"] = Field(
        "local", validation_alias=_env("PRECISE_MRD_EXECUTOR", "executor")
    )
    broker_url: str = Field("", validation_alias=_env("PRECISE_MRD_BROKER_URL", "broker_url"))
    celery_queue: str = Field(
        "precise-mrd",
        pattern=r"^[A-Za-z0-9._:\-]{1,200}$",
        validation_alias=_env("PRECISE_MRD_CELERY_QUEUE", "celery_queue"),
    )
    #: a QUEUED job whose message was sent this long ago is sent again (a broker that lost it)
    redispatch_seconds: float = Field(
        300, gt=0, validation_alias=_env("PRECISE_MRD_REDISPATCH_SECONDS", "redispatch_seconds")
    )
    #: the hard time limit: SIGKILL this long after the soft limit's SIGTERM
    job_kill_grace_seconds: float = Field(
        30,
        ge=0,
        validation_alias=_env("PRECISE_MRD_JOB_KILL_GRACE_SECONDS", "job_kill_grace_seconds"),
    )
    broker_connect_timeout_seconds: float = Field(
        5,
        gt=0,
        validation_alias=_env(
            "PRECISE_MRD_BROKER_CONNECT_TIMEOUT_SECONDS", "broker_connect_timeout_seconds"
        ),
    )

    # --- job service and local executor ---------------------------------------------------
    max_job_attempts: int = Field(
        2, ge=1, le=10, validation_alias=_env("PRECISE_MRD_MAX_JOB_ATTEMPTS", "max_job_attempts")
    )
    executor_poll_seconds: float = Field(
        0.5,
        gt=0,
        le=60,
        validation_alias=_env("PRECISE_MRD_EXECUTOR_POLL_SECONDS", "executor_poll_seconds"),
    )
    heartbeat_stale_seconds: float = Field(
        30,
        gt=0,
        validation_alias=_env("PRECISE_MRD_HEARTBEAT_STALE_SECONDS", "heartbeat_stale_seconds"),
    )
    cleanup_interval_seconds: float = Field(
        3600,
        gt=0,
        validation_alias=_env("PRECISE_MRD_CLEANUP_INTERVAL_SECONDS", "cleanup_interval_seconds"),
    )
    max_page_size: int = Field(
        200, ge=1, le=10_000, validation_alias=_env("PRECISE_MRD_MAX_PAGE_SIZE", "max_page_size")
    )
    #: test-only: honour the ``service_debug`` config section (sleep, tiny simulation, crash)
    enable_debug_jobs: bool = Field(
        False, validation_alias=_env("PRECISE_MRD_ENABLE_DEBUG_JOBS", "enable_debug_jobs")
    )

    @model_validator(mode="before")
    @classmethod
    def _secrets_from_files(cls, values: Any) -> Any:
        for variable in CLOUD_SECRET_VARIABLES:  # NB: the SDKs read these from the environment
            path = os.environ.get(f"{variable}_FILE")
            if path and not os.environ.get(variable):
                try:
                    os.environ[variable] = Path(path).read_text(encoding="utf-8").strip()
                except OSError as exc:
                    raise ValueError(
                        f"{variable}_FILE={path} cannot be read ({exc.strerror}); mount the "
                        "secret there or unset the variable"
                    ) from None
        # NB: as Kubernetes and Docker secrets mount them: PRECISE_MRD_JWT_SECRET_FILE=/run/...
        if not isinstance(values, dict):
            return values
        for field, variable in SECRET_VARIABLES.items():
            path = os.environ.get(f"{variable}_FILE")
            if not path or values.get(field) or values.get(variable):
                continue
            try:
                values[field] = Path(path).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(
                    f"{variable}_FILE={path} cannot be read ({exc.strerror}); mount the secret "
                    "there or unset the variable"
                ) from None
        return values

    @field_validator("rate_limit", "tenant_rate_limit")
    @classmethod
    def _check_rate(cls, value: str) -> str:
        from precise_mrd.service.security.limits import parse_rate

        parse_rate(value)
        return value

    @field_validator("rate_limit_routes")
    @classmethod
    def _check_routes(cls, value: str) -> str:
        from precise_mrd.service.security.limits import parse_routes

        parse_routes(value)
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_log_level(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @model_validator(mode="after")
    def _derive_locations(self) -> Settings:
        # NB: absolute, so worker subprocesses and the API agree whatever their cwd
        self.data_dir = self.data_dir.expanduser().absolute()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'jobs.db'}"
        self.database_url = with_password(
            normalize_database_url(self.database_url), self.database_password
        )
        self.database_read_url = with_password(
            normalize_database_url(self.database_read_url), self.database_password
        )
        if self.executor == "celery" and not self.broker_url:
            raise ValueError(
                "PRECISE_MRD_EXECUTOR=celery needs PRECISE_MRD_BROKER_URL (e.g. "
                "redis://127.0.0.1:6379/0 or amqp://guest:guest@127.0.0.1:5672//)"
            )
        if self.artifact_root is None:
            self.artifact_root = self.data_dir / "artifacts"
        if self.work_root is None:
            self.work_root = self.data_dir / "work"
        if self.numba_cache_dir is None:
            self.numba_cache_dir = self.data_dir / "numba-cache"
        self.numba_cache_dir = self.numba_cache_dir.expanduser().absolute()
        self.artifact_root = self.artifact_root.expanduser().absolute()
        self.work_root = self.work_root.expanduser().absolute()
        return self

    @property
    def artifact_dir(self) -> Path:
        """:attr:`artifact_root`, resolved (never None after validation)."""
        assert self.artifact_root is not None
        return self.artifact_root

    @property
    def kernel_cache_dir(self) -> Path:
        """:attr:`numba_cache_dir`, resolved (never None after validation)."""
        assert self.numba_cache_dir is not None
        return self.numba_cache_dir

    @property
    def work_dir(self) -> Path:
        """:attr:`work_root`, resolved (never None after validation)."""
        assert self.work_root is not None
        return self.work_root


def normalize_database_url(url: str) -> str:
    """``postgres://`` and ``postgresql://`` use psycopg 3, the driver the package ships
    (SQLAlchemy's default for them is psycopg2)."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def with_password(url: str, password: str) -> str:
    """``url`` with ``password`` for its user, unless it has none to give or the URL has one.

    >>> with_password("postgresql+psycopg://mrd@db:5432/mrd", "p@ss/word")
    'postgresql+psycopg://mrd:p%40ss%2Fword@db:5432/mrd'
    >>> with_password("postgresql+psycopg://mrd:own@db/mrd", "other")
    'postgresql+psycopg://mrd:own@db/mrd'
    """
    if not url or not password or url.startswith("sqlite"):
        return url
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.username is None or parsed.password is not None:
        return url
    return parsed.set(password=password).render_as_string(hide_password=False)


def get_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with keyword overrides (field names) on top."""
    return Settings(**overrides)


def settings_problems(error: ValidationError) -> list[str]:
    """One line per invalid setting, named as the environment spells it.

    >>> try:
    ...     Settings(event_loop="fast")
    ... except ValidationError as error:
    ...     settings_problems(error)
    ["event_loop: Input should be 'asyncio' or 'uvloop' (got 'fast')"]
    """
    lines = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem["loc"]) or "settings"
        message = problem["msg"].removeprefix("Value error, ")
        given = problem.get("input")
        shown = f" (got {given!r})" if isinstance(given, str | int | float) else ""
        lines.append(f"{where}: {message}{shown}")
    return lines
