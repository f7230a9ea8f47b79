"""Analytical validation on a simulated dilution series, through the real pipeline.

:func:`run_validation` does what a lab does to validate an MRD assay (CLSI EP17-A2), with the
simulator standing in for contrived samples:

1. **Samples.** Blanks (tumour fraction 0) and, for each tumour fraction of the grid,
   ``replicates`` independent samples, each written as real files by
   :func:`~precise_mrd.pipeline.simulation.simulate_sample` and called by
   :func:`~precise_mrd.pipeline.run.run_pipeline`. Every sample gets its own seed from
   ``np.random.SeedSequence(seed).spawn``, so the result is the same for any number of workers.
   Samples run in a process pool (all cores by default); each worker runs the pipeline
   single-threaded.
2. **Limit of blank** on the blanks' tumour-fraction estimates (non-parametric, EP17-A2), and
   **specificity** (blanks not called positive, with an exact CI).
3. **Detection curve** (hit rate per level, Clopper-Pearson CIs) and the **probit LoD95** with
   Fieller's CI. A small series can be degenerate for a probit (every level all-or-nothing): the
   result then says why in ``lod95_status`` and keeps the empirical LoD (lowest level from which
   every level is detected in >= 95 % of replicates) instead of failing.
4. **ROC/AUC** of blanks against the lowest positive level (and every level), scored by the
   tumour-fraction estimate; **type-I calibration** of the blanks' p-values; **linearity** of
   log mean TF estimate on log true TF (per level means, as in CLSI EP6, so zero estimates at
   low levels are averaged in rather than dropped).

Outputs in ``out_dir`` (each written to a temporary name and renamed): ``validation.json`` and a
self-contained ``validation.html`` (plots as base64 PNG).

The ``smoke`` preset is raised to 1,500 molecules per locus (15,000 informative molecules over
its 10 loci) so that the default grid 1e-5..1e-3 spans the detection curve: at TF 1e-3 a sample
holds ~7.5 expected tumour alt molecules, at 1e-4 fewer than one.

Workers are started with the ``spawn`` method (no inherited threads or locks), so a script that
calls :func:`run_validation` with more than one worker needs the usual
``if __name__ == "__main__":`` guard.

Measurement CSVs for the ``lob``/``lod`` commands are read here too (:func:`read_measurements`).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from precise_mrd import __version__
from precise_mrd.core import lod as lodmath
from precise_mrd.core.errors import ConfigError, InputDataError, InputFileError
from precise_mrd.pipeline.params import PipelineParams

ProgressCallback = Callable[[str, float], None]
"""Called with (what was just finished, fraction of all samples done in 0..1)."""

DEFAULT_TUMOR_FRACTIONS: tuple[float, ...] = (0.0, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3)
#: molecules per locus used for each preset (``None``: the preset's own value)
VALIDATION_MOLECULES_PER_LOCUS: dict[str, int | None] = {"smoke": 1500, "standard": None}
#: blanks run by default: enough for a non-parametric LoB rank inside the data
DEFAULT_MIN_BLANKS = lodmath.MIN_BLANKS_NONPARAMETRIC
CALIBRATION_ALPHAS = (0.01, 0.05, 0.1, 0.2)
JSON_NAME = "validation.json"
HTML_NAME = "validation.html"


# --------------------------------------------------------------------------- measurement tables


def read_measurements(
    path: Path, required: Sequence[str], optional: Sequence[str] = ()
) -> dict[str, list[str]]:
    """Read a CSV (or TSV, by extension) with a header row; return the named columns as text.

    Raises :class:`InputFileError` when the file is missing or unreadable and
    :class:`InputDataError` when a required column is absent or the table has no rows.
    """
    if not path.exists():
        raise InputFileError(str(path), "measurements file not found", "check the path")
    if path.is_dir():
        raise InputFileError(str(path), "is a directory, not a file", "give the CSV file's path")
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab", ".txt") else ","
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle, delimiter=delimiter)
            header = [name.strip() for name in (reader.fieldnames or [])]
            rows = [
                {key.strip(): (value or "").strip() for key, value in row.items() if key}
                for row in reader
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputFileError(
            str(path), f"cannot be read as CSV ({error})", "save it as UTF-8 CSV with a header row"
        ) from error
    for name in required:
        if name not in header:
            raise InputDataError(
                str(path),
                f"has no {name!r} column (columns: {', '.join(header) or 'none'})",
                f"add a header row naming the {', '.join(repr(r) for r in required)} column(s)",
            )
    if not rows:
        raise InputDataError(str(path), "has a header but no data rows", "add measurements")
    names = [*required, *(name for name in optional if name in header)]
    return {name: [row.get(name, "") for row in rows] for name in names}


def parse_numbers(path: Path, column: str, texts: Sequence[str]) -> list[float]:
    """Column text to finite floats; names the first bad row (data rows count from 2)."""
    values = []
    for index, text in enumerate(texts):
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise InputDataError(
                str(path),
                f"row {index + 2}: {column!r} is {text!r}, not a finite number",
                f"put a number in every {column!r} cell",
            )
        values.append(value)
    return values


_TRUE = {"1", "true", "t", "yes", "y", "detected", "positive"}
_FALSE = {"0", "false", "f", "no", "n", "not detected", "negative"}


def parse_flags(path: Path, column: str, texts: Sequence[str]) -> list[bool]:
    """Column text (0/1, true/false, yes/no) to booleans; names the first bad row."""
    flags = []
    for index, text in enumerate(texts):
        lowered = text.lower()
        if lowered in _TRUE:
            flags.append(True)
        elif lowered in _FALSE:
            flags.append(False)
        else:
            raise InputDataError(
                str(path),
                f"row {index + 2}: {column!r} is {text!r}, not 0/1 or true/false",
                f"write 1 (detected) or 0 (not detected) in every {column!r} cell",
            )
    return flags


def limit_of_blank_from_csv(
    path: Path, *, lot_column: str | None = None, parametric: bool = False
) -> dict[str, Any]:
    """LoB of a CSV's ``value`` column (lots from ``lot_column``; default ``lot`` if present)."""
    lot_name = lot_column or "lot"
    table = read_measurements(path, ["value"], [lot_name, "sample"])
    if lot_column is not None and lot_column not in table:
        raise InputDataError(
            str(path),
            f"has no {lot_column!r} column for --lot-column",
            "name an existing column, or leave --lot-column out for a single lot",
        )
    values = parse_numbers(path, "value", table["value"])
    lots = table.get(lot_name)
    try:
        if parametric:
            result = lodmath.lob_parametric(values, lots=lots, samples=table.get("sample"))
        else:
            result = lodmath.lob_nonparametric(values, lots=lots)
    except ValueError as error:
        raise InputDataError(
            str(path),
            str(error),
            "EP17-A2 asks for >= 60 blank results per reagent lot",
        ) from error
    return result.to_dict()


def limit_of_detection_from_csv(path: Path, *, lot_column: str | None = None) -> dict[str, Any]:
    """Probit LoD95 of a dilution series CSV (``concentration``, ``detected``, optional lot).

    With 2-3 lots each lot is fitted on its own and the largest LoD95 is reported (as for the
    LoB); with 4 or more lots, or none, all results are fitted together.
    """
    lot_name = lot_column or "lot"
    table = read_measurements(path, ["concentration", "detected"], [lot_name])
    if lot_column is not None and lot_column not in table:
        raise InputDataError(
            str(path),
            f"has no {lot_column!r} column for --lot-column",
            "name an existing column, or leave --lot-column out for a single lot",
        )
    concentration = np.array(parse_numbers(path, "concentration", table["concentration"]))
    detected = np.array(parse_flags(path, "detected", table["detected"]))
    lots = table.get(lot_name)
    groups: dict[str, np.ndarray] = {"all": np.arange(concentration.size)}
    if lots is not None and 2 <= len(set(lots)) < lodmath.POOL_LOTS_AT:
        groups = {lot: np.flatnonzero(np.array(lots) == lot) for lot in dict.fromkeys(lots)}
    fits: dict[str, lodmath.ProbitLod] = {}
    for lot, index in groups.items():
        try:
            fits[lot] = lodmath.lod_probit(concentration[index], detected[index])
        except ValueError as error:
            where = "" if lot == "all" else f"lot {lot!r}: "
            raise InputDataError(
                str(path),
                f"{where}{error}",
                "include levels with partial detection and several replicates per level",
            ) from error
    worst = max(fits, key=lambda lot: fits[lot].lod)
    fit = fits[worst]
    rates = lodmath.detection_rates(concentration, detected)
    return {
        "lod95": fit.lod,
        "ci": list(fit.ci),
        "method": fit.method,
        "ci_delta": list(fit.ci_delta),
        "per_lot": {lot: item.lod for lot, item in fits.items()},
        "slope": fit.slope,
        "intercept": fit.intercept,
        "extrapolated": fit.extrapolated,
        "n": int(concentration.size),
        "detection_rates": [asdict(rate) for rate in rates],
    }


# --------------------------------------------------------------------------- the dilution series


@dataclass(frozen=True, slots=True)
class SampleTask:
    """One simulated sample to run (picklable: it crosses into a worker process)."""

    index: int
    tumor_fraction: float
    replicate: int
    seed: int
    preset: str
    overrides: tuple[tuple[str, Any], ...]
    work_dir: str
    pipeline_yaml: str = ""  # the pipeline config of every sample ("" = defaults)


@dataclass(frozen=True, slots=True)
class ValidationSample:
    """The pipeline's call on one sample of the series."""

    index: int
    tumor_fraction: float
    replicate: int
    seed: int
    decision: str
    p_value: float
    tumor_fraction_estimate: float
    tumor_fraction_ci: tuple[float, float]
    personal_lod: float | None
    informative_molecules: int
    alt_molecules: int
    seconds: float

    @property
    def is_blank(self) -> bool:
        return self.tumor_fraction == 0.0

    @property
    def is_detected(self) -> bool:
        return self.decision == "positive"


@dataclass(frozen=True)
class ValidationResult:
    """Where the outputs went, the summary (``validation.json`` minus the rows) and the rows."""

    out_dir: Path
    json_path: Path
    html_path: Path
    summary: dict[str, Any]
    samples: tuple[ValidationSample, ...]
    seconds: float


def run_sample(task: SampleTask) -> ValidationSample:
    """Simulate one sample and call it with the real pipeline (runs inside a worker)."""
    from precise_mrd.core.simulate import SimulationParams
    from precise_mrd.pipeline.run import RunInputs, run_pipeline
    from precise_mrd.pipeline.simulation import simulate_sample

    started = time.perf_counter()
    sample_dir = Path(task.work_dir) / f"sample-{task.index:04d}"
    try:
        params = SimulationParams.preset(
            task.preset,
            **dict(task.overrides),
            seed=task.seed,
            tumor_fraction=task.tumor_fraction,
            sample_name=f"VAL{task.index:04d}",
        )
        simulated = simulate_sample(sample_dir / "input", params)
        inputs = RunInputs(
            reference_path=simulated.reference_path,
            variants_path=simulated.vcf_path,
            bam_path=simulated.bam_path,
        )
        base = (
            PipelineParams.from_yaml_text(task.pipeline_yaml, source="validation pipeline config")
            if task.pipeline_yaml
            else PipelineParams()
        )
        result = run_pipeline(
            inputs,
            base.with_overrides(seed=task.seed, threads=1),
            sample_dir / "output",
            sample_name=params.sample_name,
        )
    finally:
        shutil.rmtree(sample_dir, ignore_errors=True)
    call = result.sample_call
    return ValidationSample(
        index=task.index,
        tumor_fraction=task.tumor_fraction,
        replicate=task.replicate,
        seed=task.seed,
        decision=str(call["decision"]),
        p_value=float(call["p_value"]),
        tumor_fraction_estimate=float(call["tumor_fraction"]),
        tumor_fraction_ci=(
            float(call["tumor_fraction_ci"][0]),
            float(call["tumor_fraction_ci"][1]),
        ),
        personal_lod=None if call.get("personal_lod") is None else float(call["personal_lod"]),
        informative_molecules=int(call["informative_molecules"]),
        alt_molecules=int(call["alt_molecules"]),
        seconds=round(time.perf_counter() - started, 3),
    )


def plan_samples(
    tumor_fractions: Sequence[float],
    replicates: int,
    blank_replicates: int,
    seed: int,
    preset: str,
    overrides: dict[str, Any],
    work_dir: Path,
    pipeline_yaml: str = "",
) -> list[SampleTask]:
    """The tasks of the series: blanks first, then each level's replicates; one seed each.

    >>> tasks = plan_samples([0.0, 1e-4], 2, 3, 0, "smoke", {}, Path("w"))
    >>> [(t.tumor_fraction, t.replicate) for t in tasks]
    [(0.0, 0), (0.0, 1), (0.0, 2), (0.0001, 0), (0.0001, 1)]
    >>> len({t.seed for t in tasks})
    5
    """
    grid = [(tf, blank_replicates if tf == 0.0 else replicates) for tf in tumor_fractions]
    n_tasks = sum(count for _, count in grid)
    children = np.random.SeedSequence(seed).spawn(n_tasks)
    tasks: list[SampleTask] = []
    for tf, count in grid:
        for replicate in range(count):
            index = len(tasks)
            tasks.append(
                SampleTask(
                    index=index,
                    tumor_fraction=float(tf),
                    replicate=replicate,
                    seed=int(children[index].generate_state(1)[0]),
                    preset=preset,
                    overrides=tuple(sorted(overrides.items())),
                    work_dir=str(work_dir),
                    pipeline_yaml=pipeline_yaml,
                )
            )
    return tasks


def _check_grid(
    tumor_fractions: Sequence[float], replicates: int, blank_replicates: int | None
) -> tuple[float, ...]:
    fractions = tuple(sorted({float(tf) for tf in tumor_fractions}))
    if not fractions or any(not 0.0 <= tf <= 1.0 for tf in fractions):
        raise ConfigError(
            "validation.tumor_fractions",
            f"must be fractions in [0, 1]; got {list(tumor_fractions)}",
            "give e.g. 0, 1e-5, 1e-4, 1e-3",
        )
    if replicates < 1:
        raise ConfigError("validation.replicates", f"must be >= 1; got {replicates}", "use e.g. 3")
    if blank_replicates is not None and blank_replicates < 1:
        raise ConfigError(
            "validation.blank_replicates",
            f"must be >= 1; got {blank_replicates}",
            f"use >= {DEFAULT_MIN_BLANKS} for a limit of blank",
        )
    return fractions


def run_validation(
    out_dir: Path,
    *,
    preset: str = "smoke",
    tumor_fractions: Sequence[float] = DEFAULT_TUMOR_FRACTIONS,
    replicates: int = 3,
    seed: int = 0,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    blank_replicates: int | None = None,
    molecules_per_locus: int | None = None,
    n_variants: int | None = None,
    pipeline_params: PipelineParams | None = None,
) -> ValidationResult:
    """Run the dilution series and write ``validation.json`` and ``validation.html``.

    ``pipeline_params`` is the configuration every sample is called with (default: the defaults),
    e.g. with an artefact filter on, so that LoB and LoD describe the configuration a lab will run;
    each sample still gets its own seed and one thread.

    ``blank_replicates`` defaults to ``max(replicates, 10)`` (a non-parametric LoB needs >= 10
    blanks); ``molecules_per_locus`` and ``n_variants`` override the preset (the smoke preset
    defaults to :data:`VALIDATION_MOLECULES_PER_LOCUS`). ``workers`` defaults to all cores.
    """
    from precise_mrd.core.simulate import SimulationParams

    started = time.perf_counter()
    fractions = _check_grid(tumor_fractions, replicates, blank_replicates)
    if preset not in SimulationParams.PRESETS:
        raise ConfigError(
            "validation.preset",
            f"unknown preset {preset!r}",
            f"use one of {', '.join(sorted(SimulationParams.PRESETS))}",
        )
    n_blanks = (
        blank_replicates if blank_replicates is not None else max(replicates, DEFAULT_MIN_BLANKS)
    )
    overrides: dict[str, Any] = {}
    molecules = molecules_per_locus or VALIDATION_MOLECULES_PER_LOCUS.get(preset)
    if molecules is not None:
        overrides["molecules_per_locus"] = molecules
    if n_variants is not None:
        overrides["n_variants"] = n_variants
    SimulationParams.preset(preset, **overrides)  # validate the overrides before any work
    n_workers = max(1, workers if workers is not None else (os.cpu_count() or 1))

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix=".validation-work-", dir=out_dir))
    try:
        pipeline_yaml = pipeline_params.to_yaml() if pipeline_params is not None else ""
        tasks = plan_samples(
            fractions, replicates, n_blanks, seed, preset, overrides, work_dir, pipeline_yaml
        )
        samples = _run_tasks(tasks, n_workers, progress)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)

    summary = summarise(samples)
    summary["design"] = {
        "preset": preset,
        "simulation_overrides": overrides,
        "tumor_fractions": list(fractions),
        "replicates": replicates,
        "blank_replicates": n_blanks if 0.0 in fractions else 0,
        "seed": seed,
        "workers": n_workers,
        "n_samples": len(samples),
        "artefact_filter": (
            pipeline_params.ml.filter_model if pipeline_params is not None else None
        ),
        "pipeline_config_hash": (pipeline_params or PipelineParams()).config_hash,
    }
    seconds = round(time.perf_counter() - started, 2)
    summary["timing"] = {
        "wall_seconds": seconds,
        "sample_seconds_total": round(sum(s.seconds for s in samples), 2),
        "sample_seconds_mean": round(float(np.mean([s.seconds for s in samples])), 2),
    }
    summary["versions"] = {"precise_mrd": __version__}
    summary["created"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    document = {**summary, "samples": [_sample_row(s) for s in samples]}
    json_path = out_dir / JSON_NAME
    html_path = out_dir / HTML_NAME
    _write_atomic(json_path, json.dumps(_jsonable(document), indent=2) + "\n")
    _write_atomic(html_path, render_validation_html(summary, samples))
    return ValidationResult(
        out_dir=out_dir,
        json_path=json_path,
        html_path=html_path,
        summary=summary,
        samples=tuple(samples),
        seconds=seconds,
    )


def _run_tasks(
    tasks: list[SampleTask], n_workers: int, progress: ProgressCallback | None
) -> list[ValidationSample]:
    done: list[ValidationSample] = []

    def record(sample: ValidationSample) -> None:
        done.append(sample)
        if progress:
            progress(
                f"{len(done)}/{len(tasks)} samples (TF {sample.tumor_fraction:g})",
                len(done) / len(tasks),
            )

    if progress:
        progress(f"0/{len(tasks)} samples", 0.0)
    if n_workers == 1 or len(tasks) == 1:
        for task in tasks:
            record(run_sample(task))
    else:
        # NB: spawn, not fork: the parent may hold numba/BLAS threads, and fork would copy them.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            max_workers=min(n_workers, len(tasks)), mp_context=context
        ) as pool:
            futures: list[Future[ValidationSample]] = [pool.submit(run_sample, t) for t in tasks]
            try:
                for future in _as_completed(futures):
                    record(future.result())
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    return sorted(done, key=lambda sample: sample.index)


def _as_completed(futures: list[Future[ValidationSample]]) -> Any:
    from concurrent.futures import as_completed

    return as_completed(futures)


# --------------------------------------------------------------------------- the statistics


def summarise(samples: Sequence[ValidationSample]) -> dict[str, Any]:
    """Every validation figure from the per-sample calls (no I/O; see the module docstring)."""
    blanks = [s for s in samples if s.is_blank]
    positives = [s for s in samples if not s.is_blank]
    summary: dict[str, Any] = {}

    # limit of blank and specificity
    blank_tf = [s.tumor_fraction_estimate for s in blanks]
    summary["lob"], summary["lob_detail"] = None, None
    if blanks:
        try:
            lob = lodmath.lob_nonparametric(blank_tf)
            summary["lob"], summary["lob_detail"] = lob.lob, lob.to_dict()
        except ValueError as error:
            summary["lob_status"] = str(error)
        n_false = sum(s.is_detected for s in blanks)
        summary["specificity"] = (len(blanks) - n_false) / len(blanks)
        summary["specificity_ci"] = list(
            lodmath.clopper_pearson(len(blanks) - n_false, len(blanks))
        )
        summary["blank_false_positives"] = n_false
        summary["n_blanks"] = len(blanks)
        p_blank = [s.p_value for s in blanks]
        summary["type1_calibration"] = [
            asdict(point) for point in lodmath.type1_calibration(p_blank, CALIBRATION_ALPHAS)
        ]
    else:
        summary.update(specificity=None, specificity_ci=None, type1_calibration=None)
        summary["lob_status"] = "no blanks in the series (add tumour fraction 0)"

    # detection curve and LoD95
    summary["detection"] = []
    summary.update(lod95=None, lod95_ci=[None, None], lod95_detail=None)
    if positives:
        levels = [s.tumor_fraction for s in positives]
        hits = [s.is_detected for s in positives]
        rates = lodmath.detection_rates(levels, hits)
        summary["detection"] = [asdict(rate) for rate in rates]
        summary["lod95_empirical"] = _empirical_lod(rates)
        try:
            fit = lodmath.lod_probit(levels, hits)
            summary["lod95"], summary["lod95_ci"] = fit.lod, list(fit.ci)
            summary["lod95_detail"] = fit.to_dict()
            status = ["fitted"]
            if fit.extrapolated:
                status.append("the LoD95 lies outside the tested levels (extrapolated)")
            if fit.ci[1] is None or fit.ci[1] > max(levels):
                status.append(
                    "the CI's upper end lies beyond the highest tested level: "
                    "add replicates or higher levels to narrow it"
                )
            summary["lod95_status"] = "; ".join(status)
        except ValueError as error:
            summary["lod95_status"] = f"probit not estimable: {error}"

    # ROC / AUC: blanks against the lowest positive level, and against each level
    summary["auc"], summary["auc_by_level"] = None, {}
    if blanks and positives:
        lowest = min(s.tumor_fraction for s in positives)
        for level in sorted({s.tumor_fraction for s in positives}):
            scores = [s.tumor_fraction_estimate for s in positives if s.tumor_fraction == level]
            roc = lodmath.roc_curve(blank_tf, scores)
            by_p = lodmath.roc_curve(
                [1 - s.p_value for s in blanks],
                [1 - s.p_value for s in positives if s.tumor_fraction == level],
            )
            summary["auc_by_level"][f"{level:g}"] = {
                "auc": roc.auc,
                "auc_se": roc.auc_se,
                "auc_one_minus_p": by_p.auc,
                "n_blank": roc.n_negative,
                "n_positive": roc.n_positive,
            }
            if level == lowest:
                summary["auc"], summary["auc_level"] = roc.auc, level
        summary["auc_score"] = "tumour-fraction estimate (ties count one half)"

    # linearity of the TF estimate
    summary["linearity"] = None
    level_means = _level_means(positives)
    if level_means:
        try:
            fit_line = lodmath.linearity(list(level_means), list(level_means.values()))
            summary["linearity"] = {**asdict(fit_line), "basis": "mean estimate per level"}
        except ValueError as error:
            summary["linearity_status"] = str(error)
    summary["levels"] = _level_table(samples)
    return summary


def _empirical_lod(rates: Sequence[lodmath.DetectionRate]) -> float | None:
    """Lowest level from which every level upward is detected in >= 95 % of replicates."""
    lod: float | None = None
    for rate in reversed(rates):
        if rate.rate < 0.95:
            break
        lod = rate.concentration
    return lod


def _level_means(positives: Sequence[ValidationSample]) -> dict[float, float]:
    means: dict[float, float] = {}
    for level in sorted({s.tumor_fraction for s in positives}):
        values = [s.tumor_fraction_estimate for s in positives if s.tumor_fraction == level]
        means[level] = float(np.mean(values))
    return means


def _level_table(samples: Sequence[ValidationSample]) -> list[dict[str, Any]]:
    rows = []
    for level in sorted({s.tumor_fraction for s in samples}):
        group = [s for s in samples if s.tumor_fraction == level]
        estimates = np.array([s.tumor_fraction_estimate for s in group])
        hits = sum(s.is_detected for s in group)
        rows.append(
            {
                "tumor_fraction": level,
                "n": len(group),
                "positive": hits,
                "positive_rate": hits / len(group),
                "positive_rate_ci": list(lodmath.clopper_pearson(hits, len(group))),
                "mean_estimate": float(estimates.mean()),
                "median_p_value": float(np.median([s.p_value for s in group])),
                "mean_informative_molecules": float(
                    np.mean([s.informative_molecules for s in group])
                ),
                "mean_personal_lod": _mean_or_none([s.personal_lod for s in group]),
            }
        )
    return rows


def _mean_or_none(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def _sample_row(sample: ValidationSample) -> dict[str, Any]:
    row = asdict(sample)
    row["tumor_fraction_ci"] = list(sample.tumor_fraction_ci)
    return row


def _jsonable(value: Any) -> Any:
    """Plain JSON values; non-finite floats become null (strict JSON has no Infinity)."""
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary name beside ``path``, then rename it into place."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- the HTML page


def _figure_png(figure: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _detection_plot(summary: dict[str, Any]) -> str | None:
    import matplotlib.pyplot as plt

    rates = summary["detection"]
    if not rates:
        return None
    figure, axis = plt.subplots(figsize=(6, 4))
    x = np.array([r["concentration"] for r in rates])
    y = np.array([r["rate"] for r in rates])
    low = np.array([r["ci"][0] for r in rates])
    high = np.array([r["ci"][1] for r in rates])
    axis.errorbar(
        x,
        y,
        yerr=[y - low, high - y],
        fmt="o",
        color="#1f5f8b",
        capsize=3,
        label="observed (95% Clopper-Pearson)",
    )
    detail = summary.get("lod95_detail")
    if detail:
        grid = np.logspace(math.log10(x.min()) - 0.5, math.log10(x.max()) + 0.5, 200)
        from scipy import stats

        fitted = stats.norm.cdf(detail["intercept"] + detail["slope"] * np.log10(grid))
        axis.plot(grid, fitted, color="#c0392b", label="probit fit")
        axis.axvline(
            summary["lod95"], color="#c0392b", linestyle="--", label=f"LoD95 {summary['lod95']:.2e}"
        )
        ci_low, ci_high = summary["lod95_ci"]
        shown_low = grid[0] if ci_low is None else max(ci_low, grid[0])
        shown_high = grid[-1] if ci_high is None else min(ci_high, grid[-1])
        axis.axvspan(shown_low, shown_high, color="#c0392b", alpha=0.12, label="LoD95 95% CI")
    axis.axhline(0.95, color="grey", linewidth=0.8, linestyle=":")
    axis.set_xscale("log")
    axis.set_xlim(x.min() / 10**0.5, x.max() * 10**0.5)
    axis.set_ylim(-0.05, 1.05)
    axis.set_xlabel("true tumour fraction")
    axis.set_ylabel("fraction called positive")
    axis.legend(fontsize=7, loc="upper left", framealpha=0.8)
    return _figure_png(figure)


def _qq_plot(samples: Sequence[ValidationSample]) -> str | None:
    import matplotlib.pyplot as plt
    from scipy import stats

    p_values = np.sort([s.p_value for s in samples if s.is_blank])
    if p_values.size == 0:
        return None
    n = p_values.size
    ranks = np.arange(1, n + 1)
    expected = ranks / (n + 1)
    figure, axis = plt.subplots(figsize=(5, 4))
    band_low = stats.beta.ppf(0.025, ranks, n + 1 - ranks)
    band_high = stats.beta.ppf(0.975, ranks, n + 1 - ranks)
    axis.fill_between(
        -np.log10(expected),
        -np.log10(band_low),
        -np.log10(band_high),
        color="grey",
        alpha=0.2,
        label="95% band under uniform p",
    )
    axis.plot(
        -np.log10(expected),
        -np.log10(np.maximum(p_values, 1e-300)),
        "o",
        color="#1f5f8b",
        label="blank samples",
    )
    top = max(float(-np.log10(expected[0])), float(-np.log10(max(p_values[0], 1e-300))))
    axis.plot([0, top], [0, top], color="black", linewidth=0.8)
    axis.set_xlabel("expected -log10 p (uniform)")
    axis.set_ylabel("observed -log10 p")
    axis.legend(fontsize=8)
    return _figure_png(figure)


def _linearity_plot(summary: dict[str, Any], samples: Sequence[ValidationSample]) -> str | None:
    import matplotlib.pyplot as plt

    positives = [s for s in samples if not s.is_blank]
    if not positives:
        return None
    figure, axis = plt.subplots(figsize=(5, 4))
    truth = np.array([s.tumor_fraction for s in positives])
    estimate = np.array([s.tumor_fraction_estimate for s in positives])
    floor = min(truth.min() / 10, 1e-7)
    axis.plot(
        truth,
        np.where(estimate > 0, estimate, floor),
        "o",
        alpha=0.4,
        color="#7f8c8d",
        label="samples (0 drawn at the floor)",
    )
    means = _level_means(positives)
    axis.plot(
        list(means),
        [max(v, floor) for v in means.values()],
        "s",
        color="#1f5f8b",
        label="level mean",
    )
    grid = np.array([truth.min() / 2, truth.max() * 2])
    axis.plot(grid, grid, color="black", linewidth=0.8, label="identity")
    line = summary.get("linearity")
    if line:
        axis.plot(
            grid,
            10 ** (line["intercept"] + line["slope"] * np.log10(grid)),
            color="#c0392b",
            label=f"fit: slope {line['slope']:.2f}, R² {line['r_squared']:.3f}",
        )
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("true tumour fraction")
    axis.set_ylabel("estimated tumour fraction")
    axis.legend(fontsize=8)
    return _figure_png(figure)


def _roc_plot(samples: Sequence[ValidationSample]) -> str | None:
    import matplotlib.pyplot as plt

    blanks = [s.tumor_fraction_estimate for s in samples if s.is_blank]
    levels = sorted({s.tumor_fraction for s in samples if not s.is_blank})
    if not blanks or not levels:
        return None
    figure, axis = plt.subplots(figsize=(5, 4))
    for level in levels:
        scores = [s.tumor_fraction_estimate for s in samples if s.tumor_fraction == level]
        roc = lodmath.roc_curve(blanks, scores)
        axis.plot(
            roc.false_positive_rate,
            roc.true_positive_rate,
            marker=".",
            label=f"TF {level:g}: AUC {roc.auc:.2f}",
        )
    axis.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle=":")
    axis.set_xlabel("false-positive rate (blanks)")
    axis.set_ylabel("true-positive rate")
    axis.legend(fontsize=8, loc="lower right")
    return _figure_png(figure)


def render_validation_html(summary: dict[str, Any], samples: Sequence[ValidationSample]) -> str:
    """The self-contained validation report (plots embedded as base64 PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    from jinja2 import Environment, select_autoescape

    template_text = (
        resources.files("precise_mrd.pipeline").joinpath("templates/validation.html.j2").read_text()
    )
    environment = Environment(autoescape=select_autoescape(default=True))
    environment.filters["sci"] = _format_number
    plots = [
        (
            "Detection curve",
            "Fraction of replicates called positive at each true tumour fraction, "
            "with the probit fit and the LoD95.",
            _detection_plot(summary),
        ),
        (
            "Type-I calibration (blank p-values)",
            "QQ plot of the blanks' p-values against the "
            "uniform distribution; points above the band mean the test is anti-conservative. "
            "A blank whose TF estimate is 0 has p = 1 exactly (the likelihood-ratio statistic is "
            "0 on the boundary), so blank p-values have a point mass at 1 and sit below the line "
            "by design; the table of blanks with p <= alpha is the calibration test.",
            _qq_plot(samples),
        ),
        (
            "Tumour-fraction linearity",
            "Estimated against true tumour fraction (log-log).",
            _linearity_plot(summary, samples),
        ),
        (
            "ROC: blanks against each level",
            "Score: the tumour-fraction estimate.",
            _roc_plot(samples),
        ),
    ]
    return environment.from_string(template_text).render(
        summary=summary,
        samples=[_sample_row(s) for s in samples],
        plots=[{"title": t, "caption": c, "png": p} for t, c, p in plots if p is not None],
        version=__version__,
    )


def _format_number(value: Any) -> str:
    """3 significant digits; scientific below 1e-3; an em dash for missing values.

    >>> _format_number(1.23456e-4), _format_number(0.5), _format_number(None)
    ('1.23e-04', '0.5', '—')
    """
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    number = float(value)
    if number != 0 and abs(number) < 1e-3:
        return f"{number:.2e}"
    return f"{number:.3g}"
