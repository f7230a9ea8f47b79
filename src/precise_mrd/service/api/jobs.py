"""Job endpoints: submit, status, results, downloads, cancel, list.

The deployment guide's examples are the contract::

    curl -X POST http://HOST:PORT/submit -F "run_id=test_job" -F "seed=42" \\
         -F "use_ml_calling=true" -F "ml_model_type=ensemble"
    curl http://HOST:PORT/status/<job_id>
    curl http://HOST:PORT/results/<job_id>

``POST /submit`` accepts multipart (with files) and URL-encoded forms (what ``requests.post(url,
data={...})`` sends). A submission without reads simulates a sample from the seed. Feature flags
are checked against the server's switches first (a disabled feature is a 422 naming the variable
that enables it), then the config, then each upload (name, size, content), and only then is the
job stored as QUEUED, so a job in the database always has inputs that open.

With ``ENABLE_ML_CALLING`` on (the default) the first curl above runs the pipeline with the
shipped ML artefact filter (``ml_model_type``); with it ``false`` it answers 422 with
``"fix": "set ENABLE_ML_CALLING=true ..."``. ``use_deep_learning`` (``ENABLE_DEEP_LEARNING``,
on by default) runs it with the shipped network (``dl_model_type`` ``cnn`` or ``cnn_lstm``)
instead; when the server has no PyTorch (the ``[dl]`` extra) the submission is a 422 saying how to
install it, and asking for both filters at once is a 422 too; ``use_parallel``
(``ENABLE_PARALLEL_PROCESSING``, on by default) splits the sample by genomic region over
worker processes and uses more threads (``processes``/``threads`` where the config sets none).

The ``config_hash`` of the 202 answer is the hash of the job's effective config, computed by the
worker's own :func:`~precise_mrd.service.jobs.worker.parse_config` on the stored job spec: the
SHA-256 of the canonical JSON of the resolved config (every key with its default, the request's
flags and seed applied), equal to the ``config_hash`` of the run's ``sample_call.json`` and of
its ``config`` download.

``GET /results/{job_id}`` answers 409 (with the state) while the job is queued or running, and 200
once it is finished: with the sample call, key metrics and download links when COMPLETE, with the
reason (and no call) when it failed or was canceled.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import re
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile
from fastapi.responses import FileResponse, RedirectResponse, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from precise_mrd.core.errors import ConfigError
from precise_mrd.pipeline.artifacts import DOWNLOAD_TYPES, MEDIA_TYPES
from precise_mrd.pipeline.params import PipelineParams
from precise_mrd.service.api.configs import read_config_text, resolve_config
from precise_mrd.service.api.deps import (
    CacheDep,
    CurrentPrincipal,
    JobServiceDep,
    MetricsDep,
    RequestIdDep,
    SettingsDep,
    StoreDep,
    Submitter,
    get_principal,
    require_role,
)
from precise_mrd.service.api.routing import RequestRoute
from precise_mrd.service.api.schemas import (
    DlModelType,
    JobAccepted,
    JobCreate,
    JobLinks,
    JobList,
    JobRead,
    JobResult,
    MlModelType,
    SampleCallSummary,
)
from precise_mrd.service.api.uploads import (
    canonical_keys,
    store_uploads,
    upload_checksums,
)
from precise_mrd.service.errors import (
    ConflictError,
    FeatureDisabledError,
    NotFoundError,
    ServiceError,
    TooManyRequestsError,
    UnavailableError,
    UnprocessableError,
    responses,
)
from precise_mrd.service.jobs.model import (
    JobService,
    JobSpec,
    JobState,
    JobView,
    SubmitLimits,
    SubmitRefusedError,
    job_key_prefix,
)
from precise_mrd.service.jobs.worker import DEFAULT_READ_STRUCTURES, parse_config
from precise_mrd.service.observability import ServiceMetrics
from precise_mrd.service.security.principal import Principal
from precise_mrd.service.settings import Settings
from precise_mrd.service.storage import ArtifactStore, ArtifactStoreError
from precise_mrd.service.storage.base import CHUNK_BYTES
from precise_mrd.service.storage.integrity import (
    ArtifactCorruptedError,
    Checksum,
    verify_stored,
)

router = APIRouter(tags=["jobs"])

#: the figures of metrics.json "summary" shown in /results
KEY_METRICS = (
    "reads_in",
    "molecules",
    "mean_family_size",
    "duplex_rate",
    "on_target_rate",
    "informative_molecules",
)
_SAFE_RUN_ID = re.compile(r"[^A-Za-z0-9._\-]+")


def links_for(job_id: str) -> JobLinks:
    return JobLinks(
        status=f"/status/{job_id}", results=f"/results/{job_id}", cancel=f"/jobs/{job_id}/cancel"
    )


def job_read(job: JobView) -> JobRead:
    """The public view of a job."""
    spec = job.spec
    return JobRead(
        job_id=job.job_id,
        run_id=spec.run_id,
        state=job.state,
        status=job.state,
        progress=min(max(job.progress, 0.0), 1.0),
        stage=job.stage,
        reason=job.reason,
        is_finished=job.state.is_terminal,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        attempts=job.attempts,
        tenant_id=spec.tenant_id,
        owner_id=spec.owner_id,
        seed=spec.seed,
        config_template=spec.config_template,
        use_ml_calling=spec.use_ml_calling,
        use_deep_learning=spec.use_deep_learning,
        use_parallel=spec.use_parallel,
        inputs=sorted(spec.inputs),
        links=links_for(job.job_id),
    )


def check_features(request: JobCreate, settings: Settings) -> None:
    """A request flag for a feature the server switched off is a 422 naming the variable."""
    if request.use_ml_calling and not settings.enable_ml_calling:
        raise FeatureDisabledError("use_ml_calling", "ENABLE_ML_CALLING")
    if request.use_deep_learning and not settings.enable_deep_learning:
        raise FeatureDisabledError("use_deep_learning", "ENABLE_DEEP_LEARNING")
    if request.use_parallel and not settings.enable_parallel_processing:
        raise FeatureDisabledError("use_parallel", "ENABLE_PARALLEL_PROCESSING")
    if request.use_ml_calling and request.use_deep_learning:
        raise ConfigError(
            "use_deep_learning",
            "use_ml_calling and use_deep_learning are both true",
            "choose one artefact filter",
        )
    if request.use_deep_learning:
        from precise_mrd.ml.deep import check_torch_installed

        check_torch_installed("use_deep_learning")


def check_config_features(params: PipelineParams, request: JobCreate, settings: Settings) -> None:
    """The config's own ``ml`` section passes the same switches as the request flags (a config
    must not turn on what the server switched off). A request flag replaces the config's filter."""
    if request.use_ml_calling or request.use_deep_learning:
        return
    if params.ml.use_ml_calling and not settings.enable_ml_calling:
        raise FeatureDisabledError("ml.use_ml_calling", "ENABLE_ML_CALLING")
    if params.ml.use_deep_learning:
        if not settings.enable_deep_learning:
            raise FeatureDisabledError("ml.use_deep_learning", "ENABLE_DEEP_LEARNING")
        from precise_mrd.ml.deep import check_torch_installed

        check_torch_installed("ml.use_deep_learning")


class StatusBodies:
    """``GET /status`` bodies of finished jobs, rendered once.

    A finished job never changes, and the job service hands back the same view object for as
    long as it keeps the job in memory (:mod:`~precise_mrd.service.jobs.finished_cache`), so
    its rendered :class:`JobRead` is kept beside that view and reused while the view is the
    same object; a view read again from the database is rendered again. A body goes when its
    view does (a weak reference: this keeps no view alive), or when ``max_entries`` newer ones
    came after it. Read and written on the event loop; a view may die in another thread, whose
    callback then drops its body (at worst a newer body, rendered again on the next read)."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._bodies: OrderedDict[str, tuple[weakref.ref[JobView], bytes]] = OrderedDict()
        self._max_entries = max_entries

    def __len__(self) -> int:
        return len(self._bodies)

    def body(self, job: JobView) -> bytes:
        """The JSON of ``job_read(job)``, as the route's response model renders it."""
        kept = self._bodies.get(job.job_id)
        if kept is not None and kept[0]() is job:
            return kept[1]
        body = job_read(job).model_dump_json(by_alias=True).encode()
        if job.state.is_terminal:
            self._bodies[job.job_id] = (weakref.ref(job, self._forget(job.job_id)), body)
            self._bodies.move_to_end(job.job_id)
            if len(self._bodies) > self._max_entries:
                self._bodies.popitem(last=False)
        return body

    def _forget(self, job_id: str) -> Callable[[weakref.ref[JobView]], None]:
        def forget(gone: weakref.ref[JobView]) -> None:
            kept = self._bodies.get(job_id)
            if kept is not None and kept[0] is gone:  # NB: not a newer view's body
                del self._bodies[job_id]

        return forget


def job_scope(principal: Principal) -> str | None:
    """The tenant whose jobs the caller reaches: its own, or every tenant's for an admin."""
    return None if principal.allows("admin") else principal.tenant_id


def resolved_job_spec(
    create: JobCreate,
    settings: Settings,
    *,
    tenant_id: str,
    owner_id: str,
    request_id: str | None,
) -> tuple[JobSpec, PipelineParams]:
    """The job a checked submission asks for (without its files) and its effective parameters:
    the server's feature switches applied to the flags, the config resolved and stored with the
    seed, then parsed by the worker's own function (so the 202's hash is the run's) and its own
    filter sections checked against the same switches. ``POST /submit`` and a landed sample's
    manifest (:mod:`precise_mrd.service.serverless.ingest`) both go through here."""
    check_features(create, settings)
    stored = resolve_config(
        settings,
        config_yaml=create.config_yaml,
        config_template=create.config_template,
        seed=create.seed,
    )
    spec = JobSpec(
        run_id=create.run_id,
        seed=stored.seed,
        config_yaml=stored.yaml,
        tenant_id=tenant_id,
        owner_id=owner_id,
        use_ml_calling=create.use_ml_calling,
        ml_model_type=create.ml_model_type if create.use_ml_calling else None,
        use_deep_learning=create.use_deep_learning,
        dl_model_type=create.dl_model_type if create.use_deep_learning else None,
        use_parallel=create.use_parallel,
        config_template=create.config_template,
        read_structures=create.read_structures,
        request_id=request_id,
    )
    params, _ = parse_config(spec, enable_debug_jobs=settings.enable_debug_jobs)
    check_config_features(params, create, settings)
    return spec, params


#: what a 503 for a full queue asks the client to wait (about what a worker slot takes per job)
QUEUE_FULL_RETRY_AFTER_SECONDS = 60


def _refused(error: SubmitRefusedError) -> ServiceError:
    """429 when the tenant has its cap of unfinished jobs; 503 when ``cap`` jobs of all tenants
    already wait for a worker (the workers are behind: a job accepted now would only wait)."""
    if error.limit == "tenant_active":
        return TooManyRequestsError(
            str(error),
            fix="wait for some to finish (or ask the operator to raise "
            "PRECISE_MRD_TENANT_MAX_ACTIVE_JOBS)",
            headers={"Retry-After": "30"},
        )
    return UnavailableError(
        str(error),
        code="queue_full",
        fix="retry after the Retry-After seconds (or ask the operator to add workers or "
        "raise PRECISE_MRD_MAX_QUEUED_JOBS)",
        headers={"Retry-After": str(QUEUE_FULL_RETRY_AFTER_SECONDS)},
    )


def _check_limits(service: JobService, tenant_id: str, limits: SubmitLimits) -> None:
    """Refuse early, before any upload is stored, a job that would not fit ``limits`` now. Only
    the check in ``submit`` is exact: submissions in flight can fill the room in between."""
    try:
        limits.check(active=service.active_jobs(tenant_id), queued=service.queued_jobs())
    except SubmitRefusedError as error:
        raise _refused(error) from None


def _new_job_id() -> str:
    from precise_mrd.service.jobs.service import new_job_id

    return new_job_id()


def _wake_executor(request: Request) -> None:
    """Tell an in-process executor there is work (it polls anyway; this only saves latency)."""
    executor = getattr(request.app.state, "executor", None)
    notify = getattr(executor, "notify", None)
    if callable(notify):
        notify()


@router.post(
    "/submit",
    status_code=202,
    response_model=JobAccepted,
    summary="Submit a job",
    responses=responses(403, 408, 413, 422, 503),
)
def submit_job(
    request: Request,
    response: Response,
    settings: SettingsDep,
    service: JobServiceDep,
    store: StoreDep,
    principal: Submitter,
    metrics: MetricsDep,
    request_id: RequestIdDep,
    run_id: Annotated[str, Form(description="Your name for the run (letters, digits, . _ -)")],
    seed: Annotated[
        int | None, Form(description="Random seed; wins over the config's seed")
    ] = None,
    use_ml_calling: Annotated[bool, Form(description="Needs ENABLE_ML_CALLING=true")] = False,
    ml_model_type: Annotated[MlModelType, Form()] = "ensemble",
    use_deep_learning: Annotated[bool, Form(description="Needs ENABLE_DEEP_LEARNING=true")] = False,
    dl_model_type: Annotated[DlModelType, Form()] = "cnn",
    use_parallel: Annotated[
        bool,
        Form(
            description="Split the sample by region over processes and use more threads; needs "
            "ENABLE_PARALLEL_PROCESSING=true"
        ),
    ] = False,
    config_yaml: Annotated[
        UploadFile | str | None,
        Form(description="A PipelineParams YAML, as text or as an uploaded file (at most 256 KiB)"),
    ] = None,
    config_template: Annotated[
        str | None, Form(description="A template name (GET /config-templates)")
    ] = None,
    read_structures: Annotated[
        str | None,
        Form(
            description="FASTQ reads only: the R1 and R2 read structures, e.g. '8M142T 8M142T' "
            f"(default {DEFAULT_READ_STRUCTURES!r})"
        ),
    ] = None,
    reads: Annotated[
        UploadFile | None, File(description="Reads: coordinate-sorted BAM, or FASTQ R1")
    ] = None,
    reads_r2: Annotated[UploadFile | None, File(description="FASTQ R2 (with FASTQ reads)")] = None,
    reference: Annotated[UploadFile | None, File(description="Reference FASTA")] = None,
    variants: Annotated[UploadFile | None, File(description="Tumour variants: VCF or TSV")] = None,
    targets: Annotated[UploadFile | None, File(description="Target regions: BED")] = None,
) -> JobAccepted:
    """Queue a pipeline run. Without ``reads`` the job simulates a sample from ``seed``.

    Uploads are streamed to the artifact store (413 past the size limit) and opened with the
    pipeline's readers before the job is queued (422 naming the file and the problem).
    """
    config_text = read_config_text(config_yaml) if config_yaml is not None else None
    try:
        create = JobCreate(
            run_id=run_id,
            seed=seed,
            use_ml_calling=use_ml_calling,
            ml_model_type=ml_model_type,
            use_deep_learning=use_deep_learning,
            dl_model_type=dl_model_type,
            use_parallel=use_parallel,
            config_yaml=config_text or None,
            config_template=config_template or None,
            read_structures=read_structures or None,
        )
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise UnprocessableError(
            f"{field}: {first['msg']}", field=field, fix="see /docs for the allowed values"
        ) from None
    check_features(create, settings)  # NB: a disabled feature is a 422 before any quota
    limits = SubmitLimits(
        tenant_max_active=settings.tenant_max_active_jobs, max_queued=settings.max_queued_jobs
    )
    _check_limits(service, principal.tenant_id, limits)
    spec, params = resolved_job_spec(
        create,
        settings,
        tenant_id=principal.tenant_id,
        owner_id=principal.owner_id,
        request_id=request_id,
    )
    job_id = _new_job_id()
    files = {
        "reads": reads,
        "reads_r2": reads_r2,
        "reference": reference,
        "variants": variants,
        "targets": targets,
    }
    uploads = store_uploads(
        store,
        settings,
        {
            field: (upload.filename, upload.file)
            for field, upload in files.items()
            if upload is not None and (upload.filename or upload.size != 0)
        },
        prefix=f"{job_key_prefix(principal.tenant_id, job_id)}inputs/",
        read_structures=create.read_structures,
    )
    spec = dataclasses.replace(
        spec, inputs=canonical_keys(uploads), checksums=upload_checksums(uploads)
    )
    try:
        job = service.submit(spec, job_id=job_id, limits=limits)
    except BaseException as error:
        store.delete_prefix(job_key_prefix(principal.tenant_id, job_id))
        if isinstance(error, SubmitRefusedError):
            raise _refused(error) from None
        raise
    _wake_executor(request)
    metrics.jobs_submitted.inc()
    metrics.tenants.add(principal.tenant_id)
    response.headers["Location"] = f"/status/{job.job_id}"
    return JobAccepted(
        job_id=job.job_id,
        run_id=spec.run_id,
        status=job.state,
        config_hash=params.config_hash,
        created_at=job.created_at,
        links=links_for(job.job_id),
    )


async def job_status(request: Request, job_id: str) -> Response:
    """State (GA4GH WES names), progress 0..1, current stage, timestamps, and the reason when the
    job failed or was canceled."""
    # NB: the most frequent request, kept lean (docs/performance.md): a RequestRoute (no
    # dependencies solved; the app's state read here) answering with the JobRead rendered by
    # StatusBodies (not validated and rendered again by FastAPI)
    state = request.app.state
    service: JobService = state.job_service
    scope = job_scope(await get_principal(request))
    # NB: a finished job read lately is answered from memory, on the event loop; anything else
    # is a database read, in a worker thread
    job = service.cached(job_id, tenant_id=scope)
    if job is None:
        job = await run_in_threadpool(service.get, job_id, tenant_id=scope)
    state.metrics.observe_job(job)
    return Response(state.status_bodies.body(job), media_type="application/json")


router.add_api_route(
    "/status/{job_id}",
    job_status,
    methods=["GET"],
    response_model=JobRead,
    summary="A job's state and progress",
    responses=responses(404),
    route_class_override=RequestRoute,
)


def _summary(result: Any) -> SampleCallSummary | None:
    if not result:
        return None
    allowed = SampleCallSummary.model_fields
    return SampleCallSummary(**{key: value for key, value in result.items() if key in allowed})


def _key_metrics(store: ArtifactStore, job: JobView) -> dict[str, Any]:
    key = job.artifacts.get("metrics")
    if key is None:
        return {}
    try:
        with store.open(key) as stream:
            summary = json.loads(stream.read().decode("utf-8")).get("summary", {})
    except (LookupError, OSError, ValueError, ArtifactStoreError):
        return {}
    return {key: summary[key] for key in KEY_METRICS if key in summary}


def _cached_key_metrics(
    store: ArtifactStore, cache: Any, settings: Settings, metrics: ServiceMetrics, job: JobView
) -> dict[str, Any]:
    """The key metrics of a finished job: it never changes, so its id and end time key it."""
    key = f"results:{job.job_id}:{job.finished_at.isoformat() if job.finished_at else ''}"
    cached = cache.get_json(key)
    metrics.observe_cache(cache.name, "results", hit=cached is not None)
    if cached is not None:
        return dict(cached)
    value = _key_metrics(store, job)
    cache.set_json(key, value, ttl_seconds=settings.cache_ttl_seconds)
    return value


@router.get(
    "/results/{job_id}",
    response_model=JobResult,
    summary="A finished job's call, metrics and downloads",
    responses=responses(404, 409),
)
def job_results(
    job_id: str,
    request: Request,
    service: JobServiceDep,
    store: StoreDep,
    cache: CacheDep,
    settings: SettingsDep,
    principal: CurrentPrincipal,
    metrics: MetricsDep,
) -> JobResult:
    """409 (with the state) while the job is not finished. A COMPLETE job gives its sample call,
    key QC metrics and a download link per artifact; a failed or canceled one its reason."""
    job = service.get(job_id, tenant_id=job_scope(principal))
    metrics.observe_job(job)
    if not job.state.is_terminal:
        raise ConflictError(
            f"job {job_id} is {job.state.value} ({job.progress:.0%} done); results are not ready",
            code="job_not_finished",
            fix=f"poll GET /status/{job_id} until it is COMPLETE",
            extra={"state": job.state.value},
        )
    downloads: dict[str, str] = {}
    if job.state == JobState.COMPLETE:
        base = str(request.base_url).rstrip("/")
        downloads = {
            kind: f"{base}/download/{job_id}/{kind}"
            for kind in DOWNLOAD_TYPES
            if kind in job.artifacts
        }
    complete = job.state == JobState.COMPLETE
    is_validation_result = complete and bool(job.result) and "decision" not in (job.result or {})
    is_sample_result = complete and not is_validation_result
    return JobResult(
        job_id=job.job_id,
        run_id=job.spec.run_id,
        state=job.state,
        status=job.state,
        reason=job.reason,
        sample_call=_summary(job.result) if is_sample_result else None,
        validation=dict(job.result) if is_validation_result and job.result else None,
        metrics=_cached_key_metrics(store, cache, settings, metrics, job)
        if job.state == JobState.COMPLETE
        else {},
        downloads=downloads,
        finished_at=job.finished_at,
    )


def _download_name(run_id: str, kind: str) -> str:
    safe = _SAFE_RUN_ID.sub("_", run_id).strip("._") or "run"
    return f"{safe}.{DOWNLOAD_TYPES[kind]}"


@router.get(
    "/download/{job_id}/{artifact_type}",
    summary="Download one artifact of a COMPLETE job",
    response_class=FileResponse,
    responses={
        200: {
            "description": "The file, with its media type and a Content-Disposition file name",
            "content": {media: {} for media in sorted(set(MEDIA_TYPES.values()))},
        },
        **responses(404, 409),
    },
)
def download(
    job_id: str,
    artifact_type: str,
    service: JobServiceDep,
    store: StoreDep,
    settings: SettingsDep,
    principal: CurrentPrincipal,
) -> Response:
    """``artifact_type`` is one of report, calls, calls_parquet, sample_call, consensus_bam,
    metrics, config, log. 404 for an unknown job or type, 409 before the job is COMPLETE. From
    a local store the file streams in the response; from an object store the answer is a 307
    redirect to a presigned URL (valid ``PRECISE_MRD_DOWNLOAD_URL_SECONDS``), or the object
    streams through the API when the store's credentials cannot sign."""
    if artifact_type not in DOWNLOAD_TYPES:
        raise NotFoundError(
            f"unknown download type {artifact_type!r}",
            field="artifact_type",
            code="unknown_artifact_type",
            fix=f"use one of {', '.join(DOWNLOAD_TYPES)}",
        )
    job = service.get(job_id, tenant_id=job_scope(principal))
    if job.state != JobState.COMPLETE:
        raise ConflictError(
            f"job {job_id} is {job.state.value}; downloads exist once it is COMPLETE",
            code="job_not_complete",
            fix=f"poll GET /status/{job_id}",
            extra={"state": job.state.value},
        )
    missing = NotFoundError(
        f"job {job_id} has no {artifact_type} file (it may have been cleaned up)",
        code="artifact_not_found",
    )
    key = job.artifacts.get(artifact_type)
    if key is None:
        raise missing
    filename = _download_name(job.spec.run_id, artifact_type)
    expected = job.checksums.get(key)
    headers = {"Repr-Digest": _digest_header(expected)} if expected else {}
    local = store.local_path(key)
    if local is not None and not local.is_file():
        raise missing
    if local is None and not store.exists(key):
        raise missing
    url = None if local is not None else _presigned(store, key, settings)
    try:
        if url is not None:
            # NB: the bytes go straight from the store; its size is checked here and the
            # client can check the digest in Repr-Digest
            _check_size(store, key, expected)
        else:
            verify_stored(store, key, expected)
    except ArtifactCorruptedError as error:
        raise ServiceError(
            f"job {job_id}'s {artifact_type} file is corrupted in the artifact store; it is not "
            f"served: {error}",
            code="artifact_corrupted",
            fix="run the job again (POST /submit with its config); tell the operator, who can "
            "restore the store from a backup",
        ) from None
    if url is not None:
        return RedirectResponse(url, status_code=307, headers=headers)
    if local is not None:
        return FileResponse(
            local, media_type=MEDIA_TYPES[artifact_type], filename=filename, headers=headers
        )
    return StreamingResponse(
        _chunks(store, key),
        media_type=MEDIA_TYPES[artifact_type],
        headers={"Content-Disposition": f'attachment; filename="{filename}"', **headers},
    )


def _presigned(store: ArtifactStore, key: str, settings: Settings) -> str | None:
    return store.presigned_url(key, expires_seconds=settings.download_url_seconds)


def _check_size(store: ArtifactStore, key: str, expected: Mapping[str, Any] | None) -> None:
    if not expected:
        return
    recorded = Checksum.from_mapping(expected)
    size = store.size(key)
    if size != recorded.size:
        raise ArtifactCorruptedError(key, recorded, Checksum("(not read)", size))


def _digest_header(checksum: Mapping[str, Any]) -> str:
    """RFC 9530 ``Repr-Digest``: ``sha-256=:<base64>:``."""
    raw = bytes.fromhex(str(checksum["sha256"]))
    return f"sha-256=:{base64.b64encode(raw).decode()}:"


def _chunks(store: ArtifactStore, key: str) -> Iterator[bytes]:
    with store.open(key) as stream:
        while chunk := stream.read(CHUNK_BYTES):
            yield chunk


@router.post(
    "/jobs/{job_id}/cancel",
    status_code=202,
    response_model=JobRead,
    summary="Cancel a job",
    responses=responses(403, 404, 409),
)
def cancel_job(
    job_id: str, request: Request, service: JobServiceDep, principal: CurrentPrincipal
) -> JobRead:
    """A queued job is CANCELED at once; a running one goes to CANCELING and its process group
    is stopped. A finished job is a 409. Needs the submitter role (another tenant's job is a
    404 first, whatever the role)."""
    service.get(job_id, tenant_id=job_scope(principal))
    require_role(principal, "submitter")
    job = service.cancel(job_id, tenant_id=job_scope(principal))
    _wake_executor(request)
    return job_read(job)


@router.get(
    "/jobs", response_model=JobList, summary="List jobs, newest first", responses=responses(422)
)
def list_jobs(
    service: JobServiceDep,
    settings: SettingsDep,
    cache: CacheDep,
    principal: CurrentPrincipal,
    metrics: MetricsDep,
    state: Annotated[JobState | None, Query(description="Only jobs in this state")] = None,
    run_id: Annotated[str | None, Query(description="Only jobs with this run_id")] = None,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, description="Page size (capped by the server)")] = 50,
    tenant: Annotated[
        str | None, Query(max_length=128, description="Admins: list this tenant's jobs")
    ] = None,
) -> JobList:
    """Cursor-paginated, newest first; filters combine. The caller's tenant; an admin may name
    another with ``tenant``."""
    limit = min(limit, settings.max_page_size)
    if tenant is not None and tenant != principal.tenant_id:
        require_role(principal, "admin")
    listed = tenant or principal.tenant_id
    generation = getattr(service, "generation", None)
    cache_key = None
    if generation is not None:
        # NB: the tenant's generation changes in the same transaction as any of its jobs
        query = json.dumps([state.value if state else None, run_id, cursor, limit])
        digest = hashlib.sha256(query.encode()).hexdigest()[:32]
        cache_key = f"jobs:{listed}:{generation(listed)}:{digest}"
        cached = cache.get_json(cache_key)
        metrics.observe_cache(cache.name, "jobs", hit=cached is not None)
        if cached is not None:
            return JobList.model_validate(cached)
    try:
        jobs, next_cursor = service.list_jobs(
            tenant_id=listed, state=state, run_id=run_id, cursor=cursor, limit=limit
        )
    except ValueError as error:
        raise UnprocessableError(
            str(error),
            field="cursor",
            code="invalid_cursor",
            fix="pass the next_cursor of a previous page, or no cursor for the first page",
        ) from None
    for job in jobs:
        metrics.observe_job(job)
    page = JobList(jobs=[job_read(job) for job in jobs], next_cursor=next_cursor, limit=limit)
    if cache_key is not None:
        cache.set_json(
            cache_key, page.model_dump(mode="json"), ttl_seconds=settings.cache_ttl_seconds
        )
    return page
