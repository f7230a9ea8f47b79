"""The job worker: one process runs one job, then exits.

``python -m precise_mrd.service.jobs.worker --job-id ID --database-url URL --artifact-root DIR``
is what the local executor starts (in its own process group, so a cancel or a timeout kills the
worker and everything it started). The worker

1. loads the job; anything but INITIALIZING (e.g. canceled meanwhile) means exit quietly;
2. refuses what this worker cannot do: ``use_deep_learning`` without PyTorch installed, or with
   ``use_ml_calling`` as well, ends EXECUTOR_ERROR with the reason and the fix;
3. parses the config (the job's seed seeds the run unless the config sets ``seed``;
   ``use_parallel`` sets ``threads`` and ``processes``, splitting the sample by region, unless
   the config sets them);
4. materialises the inputs into ``<work-root>/<job_id>/inputs``: the uploads named in
   ``spec.inputs`` (``reads`` BAM, or ``reads`` + ``reads_r2`` FASTQ, ``reference``,
   ``variants``, ``targets``), or, with no reads, a ``smoke`` sample simulated from the job's seed;
5. INITIALIZING -> RUNNING, runs the pipeline writing progress and stage to the database (at most
   every :data:`PROGRESS_INTERVAL_SECONDS`, and at every stage change);
6. stores every artifact under ``jobs/<job_id>/`` and writes the result summary and COMPLETE.

An :class:`~precise_mrd.core.errors.InputError` or :class:`~precise_mrd.core.errors.ConfigError`
ends the job as EXECUTOR_ERROR with the error's one-line message; any other exception as
SYSTEM_ERROR with ``"<ExceptionType>: message"``. The worker logs JSON lines carrying the job id and
the submission's ``request_id`` to stderr and to ``worker.log``, stored as ``jobs/<id>/worker.log``.

Test-only knobs: when the executor runs with ``PRECISE_MRD_ENABLE_DEBUG_JOBS=true`` (it passes
``--enable-debug-jobs``), a top-level ``service_debug`` config section is honoured and removed
before validation: ``sleep_seconds`` (sleep while RUNNING, stage ``debug_sleep``, with a child
process sleeping as long, to show that the whole process group is stopped), ``simulation``
(overrides of the ``smoke`` preset, e.g. ``{n_variants: 2}``), ``exit_code`` (the worker dies
with that code once RUNNING) and ``no_pipeline`` (the job goes QUEUED -> ... -> COMPLETE through
the same claims and transitions, with no inputs, no pipeline and no artifacts: for tests of the
queue itself). Without the flag the section is an unknown config key.

>>> summarize_call({"decision": "negative", "p_value": 0.4, "extra": 1})
{'decision': 'negative', 'p_value': 0.4}
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from precise_mrd.core.errors import ConfigError, InputError, InputFileError
from precise_mrd.pipeline.artifacts import ARTIFACTS, VALIDATION_ARTIFACTS
from precise_mrd.pipeline.params import PipelineParams
from precise_mrd.pipeline.run import RunInputs
from precise_mrd.service.db.engine import PoolLimits, create_engine_for_url, make_session_factory
from precise_mrd.service.jobs.model import (
    JobSpec,
    JobState,
    JobView,
    job_key_prefix,
    legacy_job_key_prefix,
)
from precise_mrd.service.jobs.service import SqlJobService
from precise_mrd.service.settings import Settings
from precise_mrd.service.storage import ArtifactStore, store_from_settings
from precise_mrd.service.storage.integrity import checksum_file, verify_file

#: least time between two progress writes within one stage
PROGRESS_INTERVAL_SECONDS = 0.5
#: read structures assumed for uploaded FASTQ pairs when the job does not name them
DEFAULT_READ_STRUCTURES = "8M+T 8M+T"
#: keys of the result summary copied from sample_call.json
SUMMARY_KEYS = (
    "decision",
    "p_value",
    "tumor_fraction",
    "tumor_fraction_ci",
    "personal_lod",
    "informative_molecules",
    "n_variants",
    "n_variants_with_alt",
    "config_hash",
)
WORKER_LOG = "worker.log"
DEBUG_SECTION = "service_debug"

logger = logging.getLogger("precise_mrd.service.worker")


class JsonLineFormatter(logging.Formatter):
    """One JSON object per record, with the job's id and request id."""

    def __init__(self, job_id: str, request_id: str | None) -> None:
        super().__init__()
        self.job_id = job_id
        self.request_id = request_id

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
            "job_id": self.job_id,
            "request_id": self.request_id,
            "pid": record.process,
        }
        for key in ("stage", "progress", "state", "reason"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


@dataclass(frozen=True)
class DebugKnobs:
    """The test-only ``service_debug`` section."""

    sleep_seconds: float = 0.0
    simulation: Mapping[str, Any] | None = None
    exit_code: int | None = None
    no_pipeline: bool = False

    @classmethod
    def from_mapping(cls, value: Any) -> DebugKnobs:
        if not isinstance(value, Mapping):
            raise ConfigError(DEBUG_SECTION, "must be a mapping", "see service/jobs/worker.py")
        unknown = sorted(set(value) - {"sleep_seconds", "simulation", "exit_code", "no_pipeline"})
        if unknown:
            raise ConfigError(
                f"{DEBUG_SECTION}.{unknown[0]}", "unknown key", "see service/jobs/worker.py"
            )
        simulation = value.get("simulation")
        exit_code = value.get("exit_code")
        return cls(
            sleep_seconds=float(value.get("sleep_seconds", 0.0)),
            simulation=dict(simulation) if simulation else None,
            exit_code=int(exit_code) if exit_code is not None else None,
            no_pipeline=bool(value.get("no_pipeline", False)),
        )


def summarize_call(sample_call: Mapping[str, Any]) -> dict[str, Any]:
    """The result summary stored with the job: the headline keys of ``sample_call.json``."""
    return {key: sample_call[key] for key in SUMMARY_KEYS if key in sample_call}


def parse_config(spec: JobSpec, *, enable_debug_jobs: bool) -> tuple[PipelineParams, DebugKnobs]:
    """The effective config of a job: its config validated, then the request's flags applied
    (the job's seed, and ``threads``/``processes`` for ``use_parallel``, where the config leaves
    them unset; ``use_ml_calling`` /
    ``use_deep_learning`` with their model types). ``POST /submit`` hashes this very result for
    its ``config_hash``, so the 202 and the run agree."""
    text = spec.config_yaml or ""
    knobs = DebugKnobs()
    try:
        loaded = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError:
        loaded = None  # from_yaml_text below raises the precise error
    if not isinstance(loaded, dict):
        params = PipelineParams.from_yaml_text(text, source="config")
        loaded = {}
    else:
        if enable_debug_jobs and DEBUG_SECTION in loaded:
            knobs = DebugKnobs.from_mapping(loaded.pop(DEBUG_SECTION))
        params = PipelineParams.from_mapping(loaded)
    overrides: dict[str, Any] = {}
    if "seed" not in loaded:
        overrides["seed"] = spec.seed
    if spec.use_parallel:
        cores = max(1, min(4, os.cpu_count() or 1))
        if "threads" not in loaded:
            overrides["threads"] = cores
        if "processes" not in loaded:
            overrides["processes"] = cores
    if spec.use_ml_calling:
        overrides["ml"] = {
            **params.ml.model_dump(),
            "use_ml_calling": True,
            "model_type": spec.ml_model_type or params.ml.model_type,
            "use_deep_learning": False,  # NB: the request's flag replaces the config's filter
        }
    if spec.use_deep_learning:
        overrides["ml"] = {
            **params.ml.model_dump(),
            "use_ml_calling": False,
            "use_deep_learning": True,
            "dl_model_type": spec.dl_model_type or params.ml.dl_model_type,
        }
    if overrides:
        params = params.with_overrides(**overrides)
    return params, knobs


def check_supported(spec: JobSpec) -> None:
    """Refuse flags this worker cannot honour (rather than silently ignoring them)."""
    if spec.use_ml_calling and spec.use_deep_learning:
        raise ConfigError(
            "use_deep_learning",
            "use_ml_calling and use_deep_learning are both true",
            "resubmit with one artefact filter",
        )
    if spec.use_deep_learning:
        from precise_mrd.ml.deep import check_torch_installed

        check_torch_installed("use_deep_learning")


def unsupported_reason(error: ConfigError) -> str:
    """The reason text of a refused flag (e.g. "deep-learning scoring needs PyTorch...")."""
    return f"{error.problem}; fix: {error.fix}"


def materialize_inputs(
    job: JobView, store: ArtifactStore, inputs_dir: Path, knobs: DebugKnobs
) -> tuple[RunInputs, str]:
    """Copy the uploads into ``inputs_dir`` (or simulate a sample); return inputs and a name."""
    inputs_dir.mkdir(parents=True, exist_ok=True)
    keys = dict(job.spec.inputs)
    if "reads" not in keys:
        from precise_mrd.core.simulate import SimulationParams
        from precise_mrd.pipeline.simulation import simulate_sample

        overrides = {"seed": job.spec.seed, **(knobs.simulation or {})}
        params = SimulationParams.preset("smoke", **overrides)
        logger.info("simulating a smoke sample from seed %d", job.spec.seed)
        sample = simulate_sample(inputs_dir, params)
        return (
            RunInputs(
                reference_path=sample.reference_path,
                variants_path=sample.vcf_path,
                bam_path=sample.bam_path,
            ),
            job.spec.run_id,
        )
    for required in ("reference", "variants"):
        if required not in keys:
            raise InputFileError(
                required,
                "is required when reads are uploaded",
                f"upload the {required} file with the reads, or omit reads to simulate",
            )
    paths: dict[str, Path] = {}
    for kind, key in keys.items():
        target = inputs_dir / f"{kind}-{key.rsplit('/', 1)[-1]}"
        store.get_file(key, target)
        # NB: what the API recorded as the upload streamed in; a corrupted object stops here
        verify_file(key, target, job.spec.checksums.get(key))
        paths[kind] = target
    reads = paths["reads"]
    if "reads_r2" in paths:
        structures = getattr(job.spec, "read_structures", None) or DEFAULT_READ_STRUCTURES
        run_inputs = RunInputs(
            reference_path=paths["reference"],
            variants_path=paths["variants"],
            fastq_paths=(reads, paths["reads_r2"]),
            read_structures=structures,
            targets_path=paths.get("targets"),
        )
    else:
        run_inputs = RunInputs(
            reference_path=paths["reference"],
            variants_path=paths["variants"],
            bam_path=reads,
            targets_path=paths.get("targets"),
        )
    return run_inputs, job.spec.run_id


class JobLeftRunningError(Exception):
    """The job is no longer RUNNING (canceled, failed by its supervisor): stop the pipeline."""


class ProgressWriter:
    """The pipeline's progress callback: writes stage changes at once, the rest throttled.

    It is also the cooperative cancel: when a write finds the job no longer RUNNING (the API
    marked it CANCELING, the supervisor timed it out), it raises :class:`JobLeftRunningError`
    and the pipeline stops at once, before its supervisor's kill arrives."""

    def __init__(self, service: SqlJobService, job_id: str) -> None:
        self.service = service
        self.job_id = job_id
        self.stage: str | None = None
        self.last_write = 0.0

    def __call__(self, stage: str, fraction: float) -> None:
        now = time.monotonic()
        if stage == self.stage and now - self.last_write < PROGRESS_INTERVAL_SECONDS:
            return
        if stage != self.stage:
            logger.info("stage %s", stage, extra={"stage": stage, "progress": round(fraction, 4)})
        else:
            logger.debug("progress", extra={"stage": stage, "progress": round(fraction, 4)})
        self.stage = stage
        self.last_write = now
        if not self.service.update_progress(self.job_id, progress=fraction, stage=stage):
            raise JobLeftRunningError(self.job_id)


VALIDATION_SUMMARY_KEYS = (
    "lob",
    "lod95",
    "lod95_ci",
    "specificity",
    "auc",
    "linearity",
    "lob_status",
    "lod95_status",
)


def is_validation_job(params: PipelineParams) -> bool:
    """A dilution-series job: the job's config says ``job_type: validation`` (the
    ``validation-dilution`` template does). Never inferred from the sections present: every
    resolved config carries a ``validation`` section."""
    return params.job_type == "validation"


def _run_validation_job(
    service: SqlJobService, job: JobView, params: PipelineParams, work_dir: Path
) -> JobState:
    """A dilution series (simulated blanks and tumour fractions through the real pipeline)."""
    from precise_mrd.pipeline.validation import run_validation

    grid = params.validation
    result = run_validation(
        work_dir / "out",
        preset=grid.preset,
        tumor_fractions=grid.tumor_fractions,
        replicates=grid.replicates,
        blank_replicates=grid.blank_replicates,
        molecules_per_locus=grid.molecules_per_locus,
        n_variants=grid.n_variants,
        seed=params.seed,
        # NB: one process per job; the executor already runs MAX_CONCURRENT_JOBS jobs at once.
        workers=1,
        progress=ProgressWriter(service, job.job_id),
        pipeline_params=params,
    )
    # NB: the job's own config download, as a sample job has: submitted again, it runs this job.
    (result.out_dir / ARTIFACTS["config"]).write_text(params.to_yaml(), encoding="utf-8")
    names = {**VALIDATION_ARTIFACTS, "config": ARTIFACTS["config"]}
    prefix = job_key_prefix(job.spec.tenant_id, job.job_id)
    outputs = store_outputs(service.store, prefix, result.out_dir, names)
    summary = {key: result.summary[key] for key in VALIDATION_SUMMARY_KEYS if key in result.summary}
    return _finish(service, job.job_id, result=summary, outputs=outputs)


@dataclass(frozen=True)
class StoredOutputs:
    artifacts: dict[str, str]  # download type -> key
    checksums: dict[str, dict[str, Any]]  # key -> {"sha256", "size"}


def store_outputs(
    store: ArtifactStore, prefix: str, out_dir: Path, names: Mapping[str, str]
) -> StoredOutputs:
    """Store each output file that exists under ``prefix`` (:func:`job_key_prefix`), recording
    its SHA-256 and size as written."""
    artifacts: dict[str, str] = {}
    checksums: dict[str, dict[str, Any]] = {}
    for kind, name in names.items():
        path = out_dir / name
        if path.is_file():
            key = f"{prefix}{name}"
            checksums[key] = checksum_file(path).as_dict()
            store.put_file(key, path)
            artifacts[kind] = key
    return StoredOutputs(artifacts, checksums)


def _finish(
    service: SqlJobService, job_id: str, *, result: dict[str, Any], outputs: StoredOutputs
) -> JobState:
    """RUNNING -> COMPLETE with the result summary; the job's state if it was canceled meanwhile."""
    done = service.transition(
        job_id,
        from_states=[JobState.RUNNING],
        to_state=JobState.COMPLETE,
        result=result,
        artifacts=outputs.artifacts,
        checksums=outputs.checksums,
        progress=1.0,
        stage="done",
    )
    if not done:
        logger.info("finished, but the job was canceled meanwhile")
        return service.load(job_id).state
    headline = result.get("decision", result.get("lod95"))
    logger.info("complete: %s", headline, extra={"state": "COMPLETE", "progress": 1.0})
    return JobState.COMPLETE


def run_job(service: SqlJobService, job_id: str, work_dir: Path, settings: Settings) -> JobState:
    """Run one claimed job to a final state (or leave it to the executor if it was canceled)."""
    job = service.load(job_id)
    if job.state != JobState.INITIALIZING:
        logger.info("job is %s, not INITIALIZING; nothing to do", job.state)
        return job.state
    store = service.store
    live = (JobState.INITIALIZING, JobState.RUNNING)
    try:
        check_supported(job.spec)
    except ConfigError as error:
        reason = unsupported_reason(error)
        logger.warning("refused: %s", reason, extra={"reason": reason})
        service.transition(
            job_id, from_states=live, to_state=JobState.EXECUTOR_ERROR, reason=reason
        )
        return JobState.EXECUTOR_ERROR
    try:
        params, knobs = parse_config(job.spec, enable_debug_jobs=settings.enable_debug_jobs)
        if not knobs.no_pipeline:
            run_inputs, sample_name = materialize_inputs(job, store, work_dir / "inputs", knobs)
        if not service.transition(
            job_id, from_states=[JobState.INITIALIZING], to_state=JobState.RUNNING
        ):
            logger.info("job left INITIALIZING (canceled?); stopping")
            return service.load(job_id).state
        logger.info("running; config hash %s", params.config_hash, extra={"state": "RUNNING"})
        if knobs.exit_code is not None:
            logger.warning("debug: exiting with code %d", knobs.exit_code)
            logging.shutdown()
            os._exit(knobs.exit_code)
        if knobs.sleep_seconds > 0:
            import subprocess

            child = subprocess.Popen(
                [sys.executable, "-c", f"import time; time.sleep({knobs.sleep_seconds})"]
            )
            service.update_progress(job_id, progress=0.0, stage="debug_sleep")
            time.sleep(knobs.sleep_seconds)
            child.wait()
        if knobs.no_pipeline:
            return _finish(service, job_id, result={}, outputs=StoredOutputs({}, {}))
        _note_cold_cache(settings)
        if is_validation_job(params):
            return _run_validation_job(service, job, params, work_dir)
        from precise_mrd.pipeline.run import run_pipeline

        result = run_pipeline(
            run_inputs,
            params,
            work_dir / "out",
            progress=ProgressWriter(service, job_id),
            sample_name=sample_name,
        )
        prefix = job_key_prefix(job.spec.tenant_id, job_id)
        outputs = store_outputs(store, prefix, result.out_dir, ARTIFACTS)
        summary = {**summarize_call(result.sample_call), **_run_figures(result.out_dir)}
        return _finish(service, job_id, result=summary, outputs=outputs)
    except JobLeftRunningError:
        state = service.load(job_id).state
        logger.info("stopped: the job is %s", state.value, extra={"state": state.value})
        return state
    except (InputError, ConfigError) as error:
        reason = str(error).splitlines()[0]
        logger.warning("rejected: %s", reason, extra={"reason": reason})
        service.transition(
            job_id, from_states=live, to_state=JobState.EXECUTOR_ERROR, reason=reason
        )
        return JobState.EXECUTOR_ERROR
    except Exception as error:
        reason = f"{type(error).__name__}: {error}".splitlines()[0][:1000]
        logger.exception("failed: %s", reason, extra={"reason": reason})
        service.transition(job_id, from_states=live, to_state=JobState.SYSTEM_ERROR, reason=reason)
        return JobState.SYSTEM_ERROR


def _run_figures(out_dir: Path) -> dict[str, Any]:
    """Stage timings and molecule counts from metrics.json, kept with the result for /metrics."""
    try:
        metrics = json.loads((out_dir / ARTIFACTS["metrics"]).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    figures: dict[str, Any] = {"timings_seconds": metrics.get("timings_seconds", {})}
    molecules = (metrics.get("summary") or {}).get("molecules")
    if molecules is not None:
        figures["molecules"] = molecules
    return figures


def _note_cold_cache(settings: Settings) -> None:
    """Say so when this job will compile the kernels (a cold cache costs ~40 s)."""
    from precise_mrd.pipeline.warmup import is_cache_warm  # NB: imports numba (~0.25 s)

    if not is_cache_warm(settings.kernel_cache_dir):
        logger.info(
            "compiled-kernel cache %s is cold: compiling kernels", settings.kernel_cache_dir
        )


def _configure_logging(log_path: Path, job: JobView | None, job_id: str, level: str) -> None:
    formatter = JsonLineFormatter(job_id, job.spec.request_id if job else None)
    handlers: list[logging.Handler] = [
        logging.FileHandler(log_path, encoding="utf-8"),
        logging.StreamHandler(sys.stderr),
    ]
    package_logger = logging.getLogger("precise_mrd")
    for handler in handlers:
        handler.setFormatter(formatter)
        package_logger.addHandler(handler)
    package_logger.setLevel(level.upper())


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m precise_mrd.service.jobs.worker``."""
    parser = argparse.ArgumentParser(description="Run one precise-mrd job.")
    parser.add_argument("--job-id", required=True)
    parser.add_argument(
        "--database-url", default=None, help="default: PRECISE_MRD_DATABASE_URL (keeps it off ps)"
    )
    parser.add_argument("--artifact-root", required=True, type=Path)
    parser.add_argument("--work-root", type=Path, default=None)
    #: the job's own scratch directory (the executor's, under the tenant); default: under the root
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--enable-debug-jobs", action="store_true")
    args = parser.parse_args(argv)
    overrides = {"database_url": args.database_url} if args.database_url else {}
    settings = Settings(
        **overrides,
        artifact_root=args.artifact_root,
        work_root=args.work_root or args.artifact_root.parent / "work",
        log_level=args.log_level,
        enable_debug_jobs=args.enable_debug_jobs,
    )
    # NB: one job, one thread: two connections cover a progress write beside a transition
    engine = create_engine_for_url(settings.database_url, PoolLimits(size=2, max_overflow=2))
    service = SqlJobService(make_session_factory(engine), store_from_settings(settings), settings)
    work_dir = args.work_dir or settings.work_dir / args.job_id
    work_dir.mkdir(parents=True, exist_ok=True)
    log_path = work_dir / WORKER_LOG
    job: JobView | None = None
    try:
        job = service.load(args.job_id)
        _configure_logging(log_path, job, args.job_id, settings.log_level)
        logger.info("worker started", extra={"state": job.state.value})
        run_job(service, args.job_id, work_dir, settings)
    finally:
        logging.shutdown()
        if log_path.is_file():
            prefix = (
                job_key_prefix(job.spec.tenant_id, args.job_id)
                if job is not None
                else legacy_job_key_prefix(args.job_id)
            )
            service.store.put_file(f"{prefix}{WORKER_LOG}", log_path)
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
