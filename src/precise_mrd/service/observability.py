"""Logs, request ids and Prometheus metrics for the API.

* **Logs** are JSON lines from structlog (one object per event, with ``timestamp``, ``level``,
  ``event`` and the bound ``request_id``). The level comes from the settings
  (``PRECISE_MRD_LOG_LEVEL``). Standard-library loggers (uvicorn, the pipeline) go through the same
  JSON renderer.
* **Request ids** are taken from the ``X-Request-ID`` header when it is a sane token (letters,
  digits, ``-_.:``, at most 128 characters) or made up otherwise, stored in
  ``request.state.request_id``, bound into every log line of the request, returned in the
  response's ``X-Request-ID`` and handed to the job (``JobSpec.request_id``) so the job's own log
  carries it.
* **Metrics** live in a :class:`~prometheus_client.CollectorRegistry` of the app's own (two apps in
  one process never share counters). Requests are labelled by route *template*
  (``/status/{job_id}``, never the raw path, so the label set stays small). Jobs by state are read
  from the job service at scrape time; job durations and detection outcomes are observed once per
  job that finished while this process was up (seen when the API reads it, and by
  :meth:`ServiceMetrics.scan_finished_jobs` just before each scrape).

>>> is_valid_request_id("abc-123"), is_valid_request_id("bad id\\n")
(True, False)
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from precise_mrd.service.heap import malloc_stats, python_allocated_blocks
from precise_mrd.service.jobs.model import TERMINAL_STATES, JobService, JobState, JobView

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
JOB_DURATION_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600, 7200)


def is_valid_request_id(value: str) -> bool:
    """True when ``value`` may be echoed back and logged as a request id."""
    return bool(_REQUEST_ID.match(value))


class _RequestIds:
    """Request ids without a system call each: 16 random hex digits drawn once per process (again
    in a forked child), then a 16-digit counter. ``uuid4`` read ``os.urandom`` per request, which
    lets go of the GIL; taking it back behind the executor's thread cost ~20 us a request."""

    def __init__(self) -> None:
        self.draw()
        os.register_at_fork(after_in_child=self.draw)

    def draw(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.counter = itertools.count()

    def next(self) -> str:
        return f"{self.prefix}{next(self.counter):016x}"


_request_ids = _RequestIds()


def new_request_id() -> str:
    """A fresh request id (32 hex digits, unique across processes and restarts).

    >>> first, second = new_request_id(), new_request_id()
    >>> len(first), first[:16] == second[:16], int(second[16:], 16) - int(first[16:], 16)
    (32, True, 1)
    """
    return _request_ids.next()


class _CurrentStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is now (test captures swap it; never a stale stream)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def configure_logging(level: str = "INFO") -> None:
    """Route structlog and the standard ``logging`` module into JSON lines on stderr."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"log level must be one of debug, info, warning, error; got {level!r}")
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    )
    handler = _CurrentStderrHandler()
    handler.setFormatter(formatter)
    handler.set_name("precise_mrd_json")
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == "precise_mrd_json":
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    # NB: the access line is ours (with the request id and route); uvicorn's would duplicate it.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # NB: Alembic announces each of its plugins at info level on every import
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


def get_logger(name: str = "precise_mrd.service") -> Any:
    """A structlog logger bound to ``name``."""
    return structlog.get_logger(name)


class _JobStateCollector(Collector):
    """Gauges read at scrape time: ``precise_mrd_jobs{state}`` and
    ``precise_mrd_queue_length{executor}`` from the job database, and
    ``precise_mrd_broker_messages{queue}`` from the Celery broker (the autoscaler's signals)."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self._metrics = metrics

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "precise_mrd_jobs", "Jobs in the database by state", labels=["state"]
            ),
            GaugeMetricFamily(
                "precise_mrd_queue_length",
                "Jobs waiting for a worker (QUEUED in the database), by executor",
                labels=["executor"],
            ),
            GaugeMetricFamily(
                "precise_mrd_broker_messages",
                "Messages waiting on the Celery broker, by queue",
                labels=["queue"],
            ),
        )

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        service = self._metrics.job_service
        jobs, queue, broker = self._families()
        if service is None:
            return [jobs, queue]
        try:
            counts = service.counts_by_state()
        except Exception:
            # NB: a scrape must not fail because the database does; /health reports that.
            get_logger().warning("jobs by state unavailable for /metrics", exc_info=True)
            return [jobs, queue]
        for state in JobState:
            jobs.add_metric([state.value], float(counts.get(state, 0)))
        queue.add_metric([self._metrics.executor_name], float(counts.get(JobState.QUEUED, 0)))
        executor = self._metrics.executor
        length = getattr(executor, "queue_length", None)
        if not callable(length):
            return [jobs, queue]
        try:
            broker.add_metric([executor.settings.celery_queue], float(length()))
        except Exception as error:
            get_logger().warning("broker queue length unavailable for /metrics", error=str(error))
            return [jobs, queue]
        return [jobs, queue, broker]


class _DataDiskCollector(Collector):
    """``precise_mrd_data_disk_free_bytes`` and ``precise_mrd_data_disk_size_bytes``: the
    filesystem of the data directory (uploads, work directories), read at scrape time."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self._metrics = metrics

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "precise_mrd_data_disk_free_bytes", "Free bytes on the data directory's disk"
            ),
            GaugeMetricFamily(
                "precise_mrd_data_disk_size_bytes", "Size of the data directory's disk in bytes"
            ),
        )

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        free, size = self._families()
        if self._metrics.data_dir is None:
            return [free, size]
        try:
            usage = shutil.disk_usage(self._metrics.data_dir)
        except OSError:
            return [free, size]
        free.add_metric([], float(usage.free))
        size.add_metric([], float(usage.total))
        return [free, size]


class _HeapCollector(Collector):
    """``precise_mrd_python_allocated_blocks`` and ``precise_mrd_malloc_bytes{kind}`` of this
    process, read at scrape time (:mod:`precise_mrd.service.heap`): with RSS they tell growing
    objects from an allocator keeping freed memory."""

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "precise_mrd_python_allocated_blocks",
                "Memory blocks Python's allocator has handed out and not freed",
            ),
            GaugeMetricFamily(
                "precise_mrd_malloc_bytes",
                "The C allocator's bytes by kind: in_use (mmap included), free (kept in its "
                "arenas), mmap (large blocks); absent where glibc's mallinfo2 is not",
                labels=["kind"],
            ),
        )

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        blocks, malloc = self._families()
        blocks.add_metric([], float(python_allocated_blocks()))
        stats = malloc_stats()
        if stats is None:
            return [blocks]
        malloc.add_metric(["in_use"], float(stats.in_use_bytes))
        malloc.add_metric(["free"], float(stats.free_bytes))
        malloc.add_metric(["mmap"], float(stats.mmap_bytes))
        return [blocks, malloc]


class ServiceMetrics:
    """The Prometheus metrics of one app, in a registry of its own."""

    def __init__(self, job_service: JobService | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.job_service = job_service
        #: the executor of this process (set at start-up) and its name for labels
        self.executor: Any = None
        self.executor_name = "none"
        #: the data directory whose disk /metrics reports (set by the app)
        self.data_dir: Path | None = None
        self.started_at = datetime.now().astimezone()
        self.tenants: set[str] = {"default"}
        self._seen: dict[str, None] = {}
        self._seen_lock = threading.Lock()
        self._request_series: dict[tuple[str, str, int], tuple[Any, Any, Any]] = {}
        self.requests = Counter(
            "precise_mrd_http_requests",
            "HTTP requests handled, by method, route template and status code",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "precise_mrd_http_errors",
            "HTTP responses with status >= 400, by method, route template and status code",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "precise_mrd_http_request_duration_seconds",
            "Time from request to the end of the response, by method and route template",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.jobs_submitted = Counter(
            "precise_mrd_jobs_submitted",
            "Jobs accepted by POST /submit",
            registry=self.registry,
        )
        self.job_duration = Histogram(
            "precise_mrd_job_duration_seconds",
            "Wall time from start to end of jobs that finished, by final state",
            ["state"],
            buckets=JOB_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.detections = Counter(
            "precise_mrd_detection_outcomes",
            "Sample calls of completed jobs, by decision (positive, negative, undetermined)",
            ["decision"],
            registry=self.registry,
        )
        self.stage_duration = Histogram(
            "precise_mrd_stage_duration_seconds",
            "Time per pipeline stage of completed jobs",
            ["stage"],
            buckets=JOB_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.sample_molecules = Histogram(
            "precise_mrd_sample_molecules",
            "Molecules (UMI families) per completed sample, by kind (all, informative)",
            ["kind"],
            buckets=(100, 300, 1e3, 3e3, 1e4, 3e4, 1e5, 3e5, 1e6, 3e6, 1e7),
            registry=self.registry,
        )
        self.detection_rate = Histogram(
            "precise_mrd_variant_detection_rate",
            "Fraction of a sample's tumour variants with alt-supporting molecules",
            buckets=(0.0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0),
            registry=self.registry,
        )
        self.cache_requests = Counter(
            "precise_mrd_cache_requests",
            "Cache lookups by cache (local, redis), what was looked up and outcome (hit, miss)",
            ["cache", "kind", "outcome"],
            registry=self.registry,
        )
        self.registry.register(_JobStateCollector(self))
        self.registry.register(_DataDiskCollector(self))
        self.registry.register(_HeapCollector())
        # NB: CPU, memory, open files and the interpreter of this process
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    def observe_cache(self, cache: str, kind: str, *, hit: bool) -> None:
        self.cache_requests.labels(cache, kind, "hit" if hit else "miss").inc()

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        # NB: once per request: the labelled series are looked up once, then kept (method, route
        # template and status are few, so this stays small)
        series = self._request_series.get((method, route, status))
        if series is None:
            series = self._request_series[(method, route, status)] = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(method, route),
                self.errors.labels(method, route, str(status)) if status >= 400 else None,
            )
        requests, latency, errors = series
        requests.inc()
        latency.observe(seconds)
        if errors is not None:
            errors.inc()

    def observe_job(self, job: JobView) -> None:
        """Count a finished job's duration and call once (jobs finished before start-up: never)."""
        if not job.state.is_terminal or job.finished_at is None:
            return
        finished = job.finished_at
        if finished.tzinfo is None:
            finished = finished.astimezone()
        if finished < self.started_at:
            return
        with self._seen_lock:
            if job.job_id in self._seen:
                return
            self._seen[job.job_id] = None
            while len(self._seen) > 100_000:
                self._seen.pop(next(iter(self._seen)))
        started = job.started_at or job.created_at
        if started.tzinfo is None:
            started = started.astimezone()
        self.job_duration.labels(job.state.value).observe(
            max(0.0, (finished - started).total_seconds())
        )
        if job.state == JobState.COMPLETE and job.result:
            self._observe_result(job.result)

    def _observe_result(self, result: Any) -> None:
        if "decision" in result:
            self.detections.labels(str(result["decision"])).inc()
        for stage, seconds in (result.get("timings_seconds") or {}).items():
            self.stage_duration.labels(str(stage)).observe(float(seconds))
        for kind, key in (("all", "molecules"), ("informative", "informative_molecules")):
            if result.get(key) is not None:
                self.sample_molecules.labels(kind).observe(float(result[key]))
        variants = result.get("n_variants")
        if variants:
            self.detection_rate.observe(float(result.get("n_variants_with_alt", 0)) / variants)

    def scan_finished_jobs(self, *, page_size: int = 100) -> None:
        """Observe recently finished jobs (newest first, one page per terminal state and tenant)."""
        service = self.job_service
        if service is None:
            return
        for tenant in sorted(self.tenants):
            for state in TERMINAL_STATES:
                jobs, _ = service.list_jobs(tenant_id=tenant, state=state, limit=page_size)
                for job in jobs:
                    self.observe_job(job)


def route_template(scope: Scope) -> str:
    """The matched route's path template, or ``"<unmatched>"`` for a 404 on no route."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "<unmatched>"


class RequestContextMiddleware:
    """Pure ASGI middleware: request id in and out, bound logs, an access log line, metrics."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self.log = get_logger("precise_mrd.access")
        # NB: asked each request (the level may be configured again); a disabled call to the
        # structlog proxy would still build a bound logger, twice per request
        self.levels = logging.getLogger("precise_mrd.access")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() != b"x-request-id"
                ]
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        # NB: bind and reset, not the ``bound_contextvars`` context manager: a third of the cost
        bound = structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            if self.levels.isEnabledFor(logging.DEBUG):
                self.log.debug(
                    "request received",
                    method=scope.get("method"),
                    path=scope.get("path"),
                    client=_client_address(scope),
                    content_length=_header(scope, b"content-length"),
                )
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = route_template(scope)
            method = str(scope.get("method", "GET"))
            self.metrics.observe_request(method, route, status, elapsed)
            if self.levels.isEnabledFor(logging.INFO):
                self.log.info(
                    "request",
                    method=method,
                    path=scope.get("path"),
                    route=route,
                    status=status,
                    duration_ms=round(elapsed * 1000, 2),
                )
            structlog.contextvars.reset_contextvars(**bound)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def _client_address(scope: Scope) -> str | None:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else None


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name.lower() == b"x-request-id":
            text = value.decode("latin-1").strip()
            return text if is_valid_request_id(text) else None
    return None


def timed(check: Callable[[], Any]) -> tuple[bool, float, str | None]:
    """Run a health ``check``: (ok, milliseconds, error message)."""
    started = time.perf_counter()
    try:
        check()
    except Exception as error:
        return (
            False,
            round((time.perf_counter() - started) * 1000, 2),
            f"{type(error).__name__}: {error}",
        )
    return True, round((time.perf_counter() - started) * 1000, 2), None


def iter_metric_names(metrics: ServiceMetrics) -> Iterator[str]:
    """Names of every metric family in the app's registry (for tests and docs)."""
    for family in metrics.registry.collect():
        yield family.name
