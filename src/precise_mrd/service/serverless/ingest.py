"""A sample's files landed in a bucket: make one job of them, once.

A lab (or its sequencer's upload script) writes a sample's files under
``incoming/<tenant>/<sample>/`` and then, last, ``manifest.json`` beside them::

    {"run_id": "patient7-draw3",
     "files": {"reads": "reads.bam", "reference": "ref.fa", "variants": "tumour.vcf"},
     "config_template": "standard", "use_ml_calling": true}

Only the manifest starts anything (the other files' notifications are ignored), so a job never
starts on a half-written sample. Its fields are those of ``POST /submit`` (``run_id`` defaults to
the sample folder's name; ``files`` maps the submit form's file fields to names in the same
folder) and pass the same checks; the files are sniffed, opened with the pipeline's readers and
copied into the job's inputs, as an upload would be. The tenant is the folder under
``incoming/``, so a bucket policy on that prefix decides who may submit for whom.

The job id is a UUID derived from the bucket, the key and the object's version (S3's sequencer,
a GCS generation, an Azure eTag): a notification delivered twice finds the job it made and runs
nothing; a manifest written again (a new version) is a new job.

>>> match_manifest("incoming/lab-a/s1/manifest.json")
('lab-a', 's1')
>>> match_manifest("incoming/lab-a/s1/reads.bam") is None
True
>>> job_id_for(Arrival("s3://bkt", "incoming/lab-a/s1/manifest.json", "0055AED6DCD90281E5"))
'cc8880f4-7a25-5b91-ad7c-4d1dd04d664f'
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
import threading
import uuid
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from precise_mrd.core.errors import ConfigError, InputError
from precise_mrd.service.errors import ServiceError
from precise_mrd.service.jobs.model import (
    JobNotFoundError,
    JobSpec,
    JobState,
    job_key_prefix,
    job_work_dir,
    remove_work_dirs,
)
from precise_mrd.service.serverless.runtime import ServerlessRuntime
from precise_mrd.service.storage import ArtifactNotFoundError
from precise_mrd.service.storage.base import validate_key

logger = logging.getLogger("precise_mrd.service.serverless")

MANIFEST_NAME = "manifest.json"
#: the largest manifest read (it is a few hundred bytes; a config inside stays under 256 KiB)
MAX_MANIFEST_BYTES = 300 * 1024
_MANIFEST_KEY = re.compile(
    r"incoming/(?P<tenant>[A-Za-z0-9._\-]{1,100})/(?P<sample>[A-Za-z0-9._\-]{1,200})/manifest\.json"
)
_FILE_NAME = r"^[A-Za-z0-9_\-][A-Za-z0-9._\-]{0,199}$"
#: the namespace of job ids derived from object versions
_JOB_NAMESPACE = uuid.UUID("6f1b7c5e-3a0e-4d55-9a57-2b2f3d9c8e11")

Action = Literal["ignored", "rejected", "duplicate", "queued", "ran"]
FileField = Literal["reads", "reads_r2", "reference", "variants", "targets"]


@dataclass(frozen=True)
class Arrival:
    """One object a bucket reported as written.

    ``bucket_url`` names the bucket the way ``PRECISE_MRD_STORAGE_URL`` does (``s3://b``,
    ``gs://b``, ``az://container``); ``version`` tells one write of the key from another."""

    bucket_url: str
    key: str
    version: str


@dataclass(frozen=True)
class IngestOutcome:
    """What one arrival did: ``ignored`` (not a manifest), ``rejected`` (a user's mistake, with
    the reason and fix), ``duplicate`` (the job exists), ``queued`` (sent to the workers) or
    ``ran`` (run here, ``state`` is how it ended)."""

    key: str
    action: Action
    job_id: str | None = None
    state: str | None = None
    reason: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {name: value for name, value in dataclasses.asdict(self).items() if value}


class SampleManifest(BaseModel):
    """``manifest.json``: the fields of ``POST /submit``, with the files named beside it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str | None = None
    seed: int | None = None
    files: dict[FileField, str] = Field(default_factory=dict)
    config_yaml: str | None = None
    config_template: str | None = None
    use_ml_calling: bool = False
    ml_model_type: str = "ensemble"
    use_deep_learning: bool = False
    dl_model_type: str = "cnn"
    use_parallel: bool = False
    read_structures: str | None = None


def match_manifest(key: str) -> tuple[str, str] | None:
    """``(tenant, sample)`` when ``key`` is a sample's manifest, else None."""
    found = _MANIFEST_KEY.fullmatch(key)
    return (found["tenant"], found["sample"]) if found else None


def job_id_for(arrival: Arrival) -> str:
    """The job id of one write of a manifest (the same for every notification of it)."""
    name = f"{arrival.bucket_url.rstrip('/')}/{arrival.key}#{arrival.version}"
    return str(uuid.uuid5(_JOB_NAMESPACE, name))


class ManifestError(Exception):
    """The manifest or the files it names cannot make a job (the user's to fix)."""


def ingest(runtime: ServerlessRuntime, arrival: Arrival) -> IngestOutcome:
    """Make (once) and start the job of an arrived manifest; ignore any other object.

    A user's mistake ends as ``rejected`` with the reason, logged; anything else (the database
    or a store not answering) raises, so the platform retries the event, which is safe."""
    found = match_manifest(arrival.key)
    if found is None:
        logger.debug("ignored %s: not an incoming/<tenant>/<sample>/manifest.json", arrival.key)
        return IngestOutcome(arrival.key, "ignored")
    tenant, sample = found
    job_id = job_id_for(arrival)
    try:
        existing = runtime.service.get(job_id, tenant_id=None)
    except JobNotFoundError:
        existing = None
    if existing is not None and existing.state != JobState.QUEUED:
        logger.info("%s: job %s exists (%s); nothing to do", arrival.key, job_id, existing.state)
        return IngestOutcome(arrival.key, "duplicate", job_id, existing.state.value)
    if existing is None:
        try:
            spec = _job_spec(runtime, arrival, tenant, sample, job_id)
        except ManifestError as error:
            logger.error("rejected: %s", error)
            return IngestOutcome(arrival.key, "rejected", reason=str(error))
        if not _submit(runtime, spec, job_id):
            return IngestOutcome(arrival.key, "duplicate", job_id)
    # NB: a job still QUEUED was made by an invocation that stopped before starting it
    return _start(runtime, arrival.key, job_id)


def _job_spec(
    runtime: ServerlessRuntime, arrival: Arrival, tenant: str, sample: str, job_id: str
) -> JobSpec:
    """The job the manifest asks for, its files copied into the job's inputs."""
    from precise_mrd.service.api.jobs import resolved_job_spec
    from precise_mrd.service.api.schemas import JobCreate
    from precise_mrd.service.api.uploads import canonical_keys, store_uploads, upload_checksums
    from precise_mrd.service.storage.factory import open_store

    settings = runtime.settings
    landing = open_store(arrival.bucket_url, default_root=settings.artifact_dir)
    folder = arrival.key.rsplit("/", 1)[0] + "/"
    manifest = _read_manifest(landing, arrival.key)
    streams = []
    try:
        create = JobCreate(
            run_id=manifest.run_id or sample,
            seed=manifest.seed,
            use_ml_calling=manifest.use_ml_calling,
            ml_model_type=manifest.ml_model_type,
            use_deep_learning=manifest.use_deep_learning,
            dl_model_type=manifest.dl_model_type,
            use_parallel=manifest.use_parallel,
            config_yaml=manifest.config_yaml,
            config_template=manifest.config_template,
            read_structures=manifest.read_structures,
        )
        spec, _ = resolved_job_spec(
            create,
            settings,
            tenant_id=tenant,
            owner_id=f"manifest:{arrival.key}",
            request_id=f"{arrival.bucket_url}/{arrival.key}#{arrival.version}"[-200:],
        )
        files: dict[str, tuple[str | None, BinaryIO]] = {}
        for field, name in manifest.files.items():
            if not re.match(_FILE_NAME, name):
                raise ManifestError(
                    f"{arrival.key}: files.{field} = {name!r} is not a file name in the "
                    "manifest's folder; fix: name a file beside manifest.json (no '/')"
                )
            stream = landing.open(validate_key(folder + name))
            streams.append(stream)
            files[field] = (name, stream)
        uploads = store_uploads(
            runtime.store,
            settings,
            files,
            prefix=f"{job_key_prefix(tenant, job_id)}inputs/",
            read_structures=create.read_structures,
        )
    except ValidationError as error:
        raise _invalid(arrival.key, error) from None
    except ArtifactNotFoundError as error:
        raise ManifestError(
            f"{arrival.key}: {error.key} is not there; fix: write the sample's files before "
            "manifest.json, then write the manifest again"
        ) from None
    except ServiceError as error:
        fix = f"; fix: {error.fix}" if error.fix else ""
        raise ManifestError(f"{arrival.key}: {error.message}{fix}") from None
    except (InputError, ConfigError) as error:
        raise ManifestError(f"{arrival.key}: {error}") from None
    finally:
        for stream in streams:
            stream.close()
    return dataclasses.replace(
        spec, inputs=canonical_keys(uploads), checksums=upload_checksums(uploads)
    )


def _read_manifest(landing: Any, key: str) -> SampleManifest:
    try:
        with landing.open(key) as stream:
            raw = stream.read(MAX_MANIFEST_BYTES + 1)
    except ArtifactNotFoundError:
        raise ManifestError(f"{key}: gone before it could be read") from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{key}: larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ManifestError(f"{key}: not JSON ({error}); fix: write a JSON object") from None
    if not isinstance(data, dict):
        raise ManifestError(f'{key}: not a JSON object; fix: write {{"files": {{...}}}}')
    try:
        return SampleManifest.model_validate(data)
    except ValidationError as error:
        raise _invalid(key, error) from None


def _invalid(key: str, error: ValidationError) -> ManifestError:
    """The manifest's first invalid field, as one line naming it."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return ManifestError(f"{key}: {where}: {first['msg']}")


def _submit(runtime: ServerlessRuntime, spec: JobSpec, job_id: str) -> bool:
    """Store the job; False when a concurrent delivery stored it first."""
    from sqlalchemy.exc import IntegrityError

    try:
        runtime.service.submit(spec, job_id=job_id)
    except IntegrityError:
        # NB: the same write delivered twice at once: the other delivery's job owns these
        # inputs (the same keys, the same bytes), so nothing is deleted
        return False
    except BaseException:
        with contextlib.suppress(Exception):  # NB: unsure whether a job owns them: keep them
            try:
                runtime.service.get(job_id, tenant_id=None)
            except JobNotFoundError:  # no job owns the copied inputs: leave nothing behind
                runtime.store.delete_prefix(job_key_prefix(spec.tenant_id, job_id))
        raise
    logger.info("job %s queued for %s", job_id, spec.run_id)
    return True


def _start(runtime: ServerlessRuntime, key: str, job_id: str) -> IngestOutcome:
    """Send the job to the workers, or run it here when there are none (local executor)."""
    if runtime.dispatcher is not None:
        runtime.dispatcher.notify()
        return IngestOutcome(key, "queued", job_id, JobState.QUEUED.value)
    from precise_mrd.service.jobs.service import this_host
    from precise_mrd.service.jobs.worker import run_job

    job = runtime.service.claim(job_id, worker_host=this_host())
    if job is None:  # NB: another delivery claimed it a moment ago
        state = runtime.service.states_of([job_id]).get(job_id)
        return IngestOutcome(key, "duplicate", job_id, state.value if state else None)
    work_dir = job_work_dir(runtime.settings.work_dir, job.spec.tenant_id, job_id)
    beating = threading.Event()
    interval = max(1.0, runtime.settings.heartbeat_stale_seconds / 4)

    def heartbeat() -> None:  # NB: so no recovery elsewhere takes the job for an orphan
        while not beating.wait(interval):
            try:
                runtime.service.heartbeat([job_id])
            except Exception as error:  # a database blip; the next beat retries
                logger.warning("heartbeat of job %s failed: %s", job_id, error)

    beat = threading.Thread(target=heartbeat, name=f"heartbeat-{job_id}", daemon=True)
    beat.start()
    try:
        state = run_job(runtime.service, job_id, work_dir, runtime.settings)
    finally:
        beating.set()
        beat.join()
        remove_work_dirs(runtime.settings.work_dir, job_id)
    logger.info("job %s ran here: %s", job_id, state.value)
    return IngestOutcome(key, "ran", job_id, state.value)


__all__ = [
    "MANIFEST_NAME",
    "Arrival",
    "IngestOutcome",
    "ManifestError",
    "SampleManifest",
    "ingest",
    "job_id_for",
    "match_manifest",
]
