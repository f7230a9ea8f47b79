"""run_pipeline: reads + reference + tumour variants -> one calibrated sample call and its report.

Stages, in order (each one a module of this package)::

    validate inputs -> [align FASTQ] -> group by UMI -> consensus -> evidence + background
      -> sample call -> tables, metrics, report

Everything is written into a staging directory beside ``out_dir`` and moved into place only when the
whole run succeeded, so a failed or interrupted run leaves nothing half-written in ``out_dir``. An
``out_dir`` that already holds files is refused (:func:`check_output_dir`) unless ``overwrite``;
then the finished run replaces it whole: the new directory is complete beside the old one before
two renames swap them, and the old one is deleted last (a crash between the renames leaves it as
``.<name>.replaced-*`` beside the new one, never a mixture of the two runs).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from precise_mrd import __version__
from precise_mrd.core.errors import ConfigError, InputFileError
from precise_mrd.core.read_structure import ReadStructure
from precise_mrd.pipeline.artifacts import ARTIFACTS
from precise_mrd.pipeline.params import PipelineParams

ProgressCallback = Callable[[str, float], None]
"""Called with (stage name, fraction of the whole run done in 0..1)."""

#: share of the run's wall time each stage takes, for the progress fraction
STAGE_WEIGHTS: dict[str, float] = {
    "validate": 0.02,
    "align": 0.20,
    "consensus": 0.53,
    "evidence": 0.15,
    "calling": 0.05,
    "report": 0.05,
}

logger = logging.getLogger("precise_mrd.run")


@dataclass(frozen=True)
class RunInputs:
    """What a user brings. Exactly one of ``bam_path`` and ``fastq_paths`` is set."""

    reference_path: Path
    variants_path: Path
    bam_path: Path | None = None
    fastq_paths: tuple[Path, Path] | None = None
    read_structures: str | None = None
    targets_path: Path | None = None

    def __post_init__(self) -> None:
        if (self.bam_path is None) == (self.fastq_paths is None):
            raise ValueError("give exactly one of bam_path and fastq_paths")
        if self.fastq_paths is not None and not self.read_structures:
            raise ValueError("fastq_paths needs read_structures, e.g. '8M142T 8M142T'")


@dataclass(frozen=True)
class RunResult:
    """Where the outputs went, and the headline numbers."""

    out_dir: Path
    sample_call: dict[str, Any]
    metrics: dict[str, Any]
    artifacts: dict[str, Path] = field(default_factory=dict)


class _Progress:
    """Turns stage starts/ends into a monotone 0..1 fraction for the callback."""

    def __init__(self, callback: ProgressCallback | None, stages: list[str]) -> None:
        self._callback = callback
        total = sum(STAGE_WEIGHTS[stage] for stage in stages)
        self._weights = {stage: STAGE_WEIGHTS[stage] / total for stage in stages}
        self._done = 0.0
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self._callback:
            self._callback(name, self._done)
        logger.info("stage %s started", name)
        started = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - started, 3)
        self._done = min(1.0, self._done + self._weights[name])
        logger.info("stage %s finished in %.2f s", name, self.timings[name])
        if self._callback:
            self._callback(name, self._done)


def consensus_params_from(params: PipelineParams) -> Any:
    """The core consensus parameters of a pipeline config."""
    from precise_mrd.core.consensus import ConsensusParams

    section = params.consensus
    return ConsensusParams(
        error_rate_pre_umi=section.error_rate_pre_umi,
        error_rate_post_umi=section.error_rate_post_umi,
        min_input_base_quality=section.min_input_base_quality,
        min_reads=section.min_reads,
        overlap=section.overlap,
    )


def parse_read_structures(text: str) -> tuple[ReadStructure, ReadStructure]:
    """Parse the two read structures of a FASTQ pair, e.g. ``"8M142T 8M142T"``.

    >>> [str(structure) for structure in parse_read_structures("8M142T 8M+T")]
    ['8M142T', '8M+T']
    """
    parts = text.split()
    if len(parts) != 2:
        raise ConfigError(
            "--read-structure",
            f"needs one read structure per FASTQ (R1 and R2); got {len(parts)} in {text!r}",
            'give two, separated by a space, e.g. "8M142T 8M142T"',
        )
    return ReadStructure.parse(parts[0]), ReadStructure.parse(parts[1])


def _check_readable(path: Path, what: str) -> None:
    if not path.exists():
        raise InputFileError(str(path), f"{what} not found", "check the path")
    if path.is_dir():
        raise InputFileError(
            str(path), f"{what} is a directory, not a file", "give the file's path"
        )
    if not os.access(path, os.R_OK):
        raise InputFileError(str(path), f"{what} is not readable", "check the file's permissions")


def _versions() -> dict[str, str]:
    import pysam
    import scipy

    return {
        "precise_mrd": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "pysam": str(getattr(pysam, "__version__", "unknown")),
    }


@contextmanager
def _run_log(path: Path) -> Iterator[None]:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package_logger = logging.getLogger("precise_mrd")
    previous_level = package_logger.level
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        package_logger.removeHandler(handler)
        package_logger.setLevel(previous_level)
        handler.close()


def check_output_dir(out_dir: Path, *, overwrite: bool, fix: str | None = None) -> None:
    """Refuse an ``out_dir`` that is a file, or that holds anything unless ``overwrite``.

    ``fix`` is the advice for the second case in the caller's own words (the CLI names ``--force``).
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise InputFileError(
            str(out_dir), "is a file, not an output directory", "choose a directory"
        )
    if not overwrite and out_dir.is_dir() and any(out_dir.iterdir()):
        raise InputFileError(
            str(out_dir),
            "output directory is not empty (an earlier run?)",
            fix or "choose an empty or new directory, or pass overwrite=True to replace it",
        )


def _publish(staging: Path, out_dir: Path, *, overwrite: bool) -> None:
    """Move the finished outputs into ``out_dir``, replacing what it held only if ``overwrite``."""
    check_output_dir(out_dir, overwrite=overwrite)  # NB: again: another run may have written
    token = f"{os.getpid()}-{time.monotonic_ns()}"
    replaced = out_dir.is_dir() and any(out_dir.iterdir())
    target = out_dir.parent / f".{out_dir.name}.new-{token}" if replaced else out_dir
    target.mkdir(parents=True, exist_ok=True)
    for name in sorted(os.listdir(staging)):
        os.replace(staging / name, target / name)
    shutil.rmtree(staging, ignore_errors=True)
    if replaced:
        old = out_dir.parent / f".{out_dir.name}.replaced-{token}"
        os.rename(out_dir, old)
        os.rename(target, out_dir)
        shutil.rmtree(old, ignore_errors=True)


def run_pipeline(
    inputs: RunInputs,
    params: PipelineParams,
    out_dir: Path,
    *,
    progress: ProgressCallback | None = None,
    sample_name: str | None = None,
    overwrite: bool = False,
) -> RunResult:
    """Run every stage and write the outputs named in :data:`ARTIFACTS` into ``out_dir``.

    ``out_dir`` must be new or empty unless ``overwrite`` (then the run replaces it whole).
    """
    stages = ["validate", *(["align"] if inputs.fastq_paths else []), "consensus"]
    stages += ["evidence", "calling", "report"]
    tracker = _Progress(progress, stages)
    out_dir = Path(out_dir)
    check_output_dir(out_dir, overwrite=overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        with _run_log(staging / ARTIFACTS["log"]), _stage_pool(params.processes) as pool:
            logger.info("precise-mrd %s; config hash %s", __version__, params.config_hash)
            sample_call = _run_stages(inputs, params, staging, tracker, sample_name, pool)
        _publish(staging, out_dir, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    metrics = json.loads((out_dir / ARTIFACTS["metrics"]).read_text())
    return RunResult(
        out_dir=out_dir,
        sample_call=sample_call,
        metrics=metrics,
        artifacts={kind: out_dir / name for kind, name in ARTIFACTS.items()},
    )


@contextmanager
def _stage_pool(processes: int) -> Iterator[Executor | None]:
    """The process pool of a run split by region (``processes`` > 1), else None."""
    if processes < 2:
        yield None
        return
    from precise_mrd.pipeline.parallel import process_pool

    with process_pool(processes) as pool:
        yield pool


def _run_stages(
    inputs: RunInputs,
    params: PipelineParams,
    staging: Path,
    tracker: _Progress,
    sample_name: str | None,
    pool: Executor | None = None,
) -> dict[str, Any]:
    from precise_mrd.core.background import BackgroundModel
    from precise_mrd.core.calling import CallingParams, call_sample
    from precise_mrd.io.bed import read_bed
    from precise_mrd.io.fasta import open_reference
    from precise_mrd.io.tables import write_parquet, write_tsv
    from precise_mrd.io.vcf import read_variants
    from precise_mrd.pipeline.consensus import group_and_call_consensus
    from precise_mrd.pipeline.evidence import collect_evidence
    from precise_mrd.pipeline.report import render_report

    with tracker.stage("validate"):
        _check_readable(inputs.reference_path, "reference FASTA")
        _check_readable(inputs.variants_path, "variants file")
        if inputs.bam_path is not None:
            _check_readable(inputs.bam_path, "reads BAM")
        for fastq_path in inputs.fastq_paths or ():
            _check_readable(fastq_path, "FASTQ")
        reference = open_reference(inputs.reference_path)
        variants = read_variants(inputs.variants_path, reference)
        regions = read_bed(inputs.targets_path, reference) if inputs.targets_path else None
        logger.info("%d variants to track", len(variants))

    reads_bam = inputs.bam_path
    if inputs.fastq_paths is not None:
        from precise_mrd.pipeline.align import align_fastq_pair

        with tracker.stage("align"):
            reads_bam = staging / "aligned.bam"
            align_fastq_pair(
                inputs.fastq_paths[0],
                inputs.fastq_paths[1],
                reference_path=inputs.reference_path,
                read_structures=parse_read_structures(inputs.read_structures or ""),
                out_bam_path=reads_bam,
                threads=params.threads,
            )
    assert reads_bam is not None

    consensus_bam = staging / ARTIFACTS["consensus_bam"]
    umi_options: dict[str, Any] = {
        "strategy": params.umi.strategy,
        "max_edits": params.umi.max_edits,
        "umi_tag": params.umi.umi_tag,
        "umi_from_read_name": params.umi.umi_from_read_name,
        "umi_separator": params.umi.umi_separator,
        "min_mapq": params.umi.min_mapping_quality,
    }
    with tracker.stage("consensus"):
        if pool is not None:
            from precise_mrd.pipeline.parallel import group_and_call_consensus_in_parts

            group_stats, consensus_stats = group_and_call_consensus_in_parts(
                reads_bam,
                consensus_bam,
                pool=pool,
                n_parts=params.processes,
                params=consensus_params_from(params),
                **umi_options,
            )
        else:
            # NB: grouping and consensus run fused: MI-tagged records go straight into the caller
            group_stats, consensus_stats = group_and_call_consensus(
                reads_bam,
                consensus_bam,
                params=consensus_params_from(params),
                threads=params.threads,
                **umi_options,
            )
    for leftover in (staging / "aligned.bam", staging / "aligned.bam.bai"):
        leftover.unlink(missing_ok=True)

    ml_summary: dict[str, Any] | None = None
    with tracker.stage("evidence"):
        evidence = collect_evidence(
            consensus_bam,
            inputs.reference_path,
            variants,
            regions=regions,
            min_base_quality=params.evidence.min_base_quality,
            min_mapping_quality=params.evidence.min_mapping_quality,
            variant_exclusion_window=params.evidence.variant_exclusion_window,
            flank=params.evidence.flank,
            pool=pool,
            n_parts=params.processes,
        )
        filter_model = params.ml.filter_model
        if filter_model is not None:
            from precise_mrd.ml.scoring import apply_ml_filter

            raw_evidence = evidence
            filter_started = time.perf_counter()
            evidence = apply_ml_filter(
                evidence,
                consensus_bam,
                inputs.reference_path,
                variants,
                filter_model,
                threshold=params.ml.threshold,
                seed=params.seed,
                regions=regions,
                flank=params.evidence.flank,
                min_base_quality=params.evidence.min_base_quality,
                min_mapping_quality=params.evidence.min_mapping_quality,
                variant_exclusion_window=params.evidence.variant_exclusion_window,
            )
            ml_summary = {
                "model_type": filter_model,
                "kind": "deep_learning" if params.ml.use_deep_learning else "ml",
                "seconds": round(time.perf_counter() - filter_started, 2),
                "informative_before": int(sum(v.informative for v in raw_evidence.variants)),
                "informative_after": int(sum(v.informative for v in evidence.variants)),
                "alt_before": int(sum(v.alt for v in raw_evidence.variants)),
                "alt_after": int(sum(v.alt for v in evidence.variants)),
            }
            logger.info("artefact filter (%s): %s", filter_model, ml_summary)
        background = BackgroundModel.fit(evidence.background)

    with tracker.stage("calling"):
        rng = np.random.default_rng(params.seed)
        calling_params = CallingParams(
            alpha=params.calling.alpha,
            min_informative_molecules=params.calling.min_informative_molecules,
            n_bootstrap=params.calling.n_bootstrap,
            min_strand_bias_p_value=params.calling.min_strand_bias_p_value,
        )
        call, variant_table = call_sample(evidence.variants, background, calling_params, rng)
        sample_call = call.to_dict()
        sample_call["config_hash"] = params.config_hash
        sample_call["versions"] = _versions()
        variant_columns = variant_table.to_columns()
        write_tsv(staging / ARTIFACTS["calls"], variant_columns)
        write_parquet(staging / ARTIFACTS["calls_parquet"], variant_columns)
        (staging / ARTIFACTS["sample_call"]).write_text(json.dumps(sample_call, indent=2) + "\n")

    with tracker.stage("report"):
        metrics = {
            "summary": _summary_metrics(group_stats, consensus_stats, evidence),
            "grouping": to_jsonable(group_stats),
            "consensus": to_jsonable(consensus_stats),
            "evidence": _evidence_summary(evidence),
            "ml_filter": ml_summary,
            "timings_seconds": dict(tracker.timings),
            "versions": _versions(),
            "config_hash": params.config_hash,
        }
        (staging / ARTIFACTS["config"]).write_text(params.to_yaml())
        html = render_report(
            sample_name=sample_name or (inputs.bam_path or inputs.variants_path).stem,
            sample_call=sample_call,
            variants=variant_columns,
            metrics=metrics,
            background=background.class_table(),
            config_hash=params.config_hash,
        )
        (staging / ARTIFACTS["report"]).write_text(html, encoding="utf-8")
    metrics["timings_seconds"] = dict(tracker.timings)
    (staging / ARTIFACTS["metrics"]).write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    return sample_call


def _summary_metrics(group_stats: Any, consensus_stats: Any, evidence: Any) -> dict[str, Any]:
    """Headline QC figures: family size, duplex rate, on-target rate."""
    histogram = {int(size): int(n) for size, n in consensus_stats.family_size_histogram.items()}
    n_families = sum(histogram.values())
    mean_family_size = sum(s * n for s, n in histogram.items()) / n_families if n_families else 0.0
    n_molecules = int(consensus_stats.n_molecules)
    n_out = int(consensus_stats.n_consensus_reads_out)
    return {
        "umi_strategy": group_stats.strategy,
        "reads_in": int(group_stats.n_reads_in),
        "reads_grouped": int(group_stats.n_reads_out),
        "molecules": n_molecules,
        "mean_family_size": round(mean_family_size, 3),
        "duplex_rate": round(consensus_stats.n_duplex_molecules / n_molecules, 4)
        if n_molecules
        else 0.0,
        # NB: a consensus read spanning two target windows counts once per window; capped at 1.
        "on_target_rate": round(min(1.0, evidence.n_records / n_out), 4) if n_out else 0.0,
        "informative_molecules": int(sum(v.informative for v in evidence.variants)),
    }


def _evidence_summary(evidence: Any) -> dict[str, Any]:
    counts = evidence.background
    opportunities = counts.opportunities.sum(axis=(1, 2))
    errors = counts.errors.sum(axis=(1, 2))
    return {
        "consensus_records": int(evidence.n_records),
        "consensus_records_skipped": int(evidence.n_records_skipped),
        "background_opportunities_simplex": int(opportunities[0]),
        "background_opportunities_duplex": int(opportunities[1]),
        "background_errors_simplex": int(errors[0]),
        "background_errors_duplex": int(errors[1]),
        "informative_molecules": int(sum(v.informative for v in evidence.variants)),
    }


def to_jsonable(value: Any) -> Any:
    """Dataclasses, tuples-as-keys and numpy scalars made into plain JSON values.

    >>> to_jsonable({(1, 2): np.int64(3), "a": (1.5,)})
    {'1/2': 3, 'a': [1.5]}
    """
    from dataclasses import asdict, is_dataclass

    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    if isinstance(value, dict):
        return {
            ("/".join(map(str, key)) if isinstance(key, tuple) else str(key)): to_jsonable(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [to_jsonable(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value
