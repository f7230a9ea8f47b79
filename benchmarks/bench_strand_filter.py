"""Benchmark: the strand-bias filter's effect on blank false positives and on sensitivity.

Simulates ``--n`` blanks (tumour fraction 0) and ``--n`` samples at ``--tumor-fraction``
(default 1e-4) of the `standard` preset, each with its own seed, and runs `precise-mrd run` once
per sample: that run's ``sample_call.json`` is the "filter on" call (the default
``min_strand_bias_p_value`` of 1e-3). The "filter off" call re-counts the evidence from the
run's ``consensus.bam`` (the evidence stage only, not consensus) and calls the sample again with
the same seed and thresholds but a strand-bias threshold no binomial p-value falls below; the
"on" call is made the same way as a check that the re-call reproduces the run.

NB: a run can switch the filter off with ``calling.min_strand_bias_p_value: 0``; re-calling from
the run's consensus (the evidence stage only) costs ~1.5 s per sample where a second run costs
~12 s, so this script re-calls.

Prints one row per sample, then per condition: samples, positives, the positive rate with its
Clopper-Pearson 95% interval, variants flagged ``strand_bias`` and the mean estimated tumour
fraction. "Undetermined" calls count as not positive. Figures, not assertions: not a test.

Usage: .venv/bin/python benchmarks/bench_strand_filter.py [--n 10] [--tumor-fraction 1e-4]
       [--seed 100] [--workdir /work/bench/strand_filter]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean

import numpy as np

from precise_mrd.core.background import BackgroundModel
from precise_mrd.core.calling import CallingParams, Evidence, call_sample
from precise_mrd.core.lod import clopper_pearson
from precise_mrd.io.fasta import open_reference
from precise_mrd.io.vcf import read_variants
from precise_mrd.pipeline.evidence import collect_evidence
from precise_mrd.pipeline.params import PipelineParams

ROOT = Path(__file__).resolve().parents[1]
PRECISE = str(Path(sys.executable).parent / "precise-mrd")
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_pipeline import machine_description  # noqa: E402

#: the seed of the i-th tumour sample is this far past the i-th blank's
TUMOR_SEED_OFFSET = 1000
#: "filter off": no p-value is below 0 (as ``calling.min_strand_bias_p_value: 0`` in a config)
STRAND_FILTER_OFF = 0.0
STRAND_FILTER_ON = CallingParams().min_strand_bias_p_value


@dataclass(frozen=True)
class Call:
    """One sample called one way."""

    decision: str
    p_value: float
    tumor_fraction: float
    n_strand_bias: int


@dataclass(frozen=True)
class SampleResult:
    seed: int
    tumor_fraction: float
    run_seconds: float
    recall_seconds: float
    pipeline_decision: str
    pipeline_p_value: float
    on: Call
    off: Call


def simulate(sample_path: Path, *, tumor_fraction: float, seed: int) -> None:
    """Simulate a `standard` sample into ``sample_path`` unless it is there already."""
    if (sample_path / "reads.bam").exists():
        return
    subprocess.run(
        [
            PRECISE,
            "simulate",
            str(sample_path),
            "--preset",
            "standard",
            "--tumor-fraction",
            str(tumor_fraction),
            "--seed",
            str(seed),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def run_pipeline(sample_path: Path, out_path: Path) -> float:
    """`precise-mrd run` on one sample (the default config); its wall seconds."""
    command = [
        PRECISE,
        "run",
        "--reference",
        str(sample_path / "reference.fa"),
        "--variants",
        str(sample_path / "variants.vcf"),
        "--bam",
        str(sample_path / "reads.bam"),
        "--out",
        str(out_path),
        "--force",
    ]
    started = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise SystemExit(f"run failed on {sample_path}: {completed.stderr.strip()[-500:]}")
    return time.perf_counter() - started


def recount_evidence(sample_path: Path, out_path: Path, params: PipelineParams) -> Evidence:
    """The evidence stage of the run again, from its consensus BAM (no targets BED, as run)."""
    reference_path = sample_path / "reference.fa"
    variants = read_variants(sample_path / "variants.vcf", open_reference(reference_path))
    return collect_evidence(
        out_path / "consensus.bam",
        reference_path,
        variants,
        min_base_quality=params.evidence.min_base_quality,
        min_mapping_quality=params.evidence.min_mapping_quality,
        variant_exclusion_window=params.evidence.variant_exclusion_window,
        flank=params.evidence.flank,
    )


def recall(
    evidence: Evidence,
    background: BackgroundModel,
    params: PipelineParams,
    *,
    min_strand_bias_p_value: float,
) -> Call:
    """The calling stage of the run with one strand-bias threshold (the run's seed)."""
    calling_params = CallingParams(
        alpha=params.calling.alpha,
        min_informative_molecules=params.calling.min_informative_molecules,
        n_bootstrap=params.calling.n_bootstrap,
        min_strand_bias_p_value=min_strand_bias_p_value,
        # NB: the LoD draws come after the p-value's, so skipping them leaves the call as run
        compute_personal_lod=False,
    )
    rng = np.random.default_rng(params.seed)
    call, table = call_sample(evidence.variants, background, calling_params, rng)
    n_strand_bias = sum("strand_bias" in row.filters for row in table.rows)
    return Call(call.decision, call.p_value, call.tumor_fraction, n_strand_bias)


def measure_sample(workdir: Path, *, tumor_fraction: float, seed: int) -> SampleResult:
    sample_path = workdir / f"standard-tf{tumor_fraction:g}-seed{seed}"
    out_path = workdir / "runs" / sample_path.name
    simulate(sample_path, tumor_fraction=tumor_fraction, seed=seed)
    run_seconds = run_pipeline(sample_path, out_path)
    params = PipelineParams.from_yaml(out_path / "config.yaml")
    if params.ml.filter_model is not None:
        raise SystemExit("the default config turned an ML filter on; this benchmark assumes none")
    pipeline_call = json.loads((out_path / "sample_call.json").read_text())
    recall_started = time.perf_counter()
    evidence = recount_evidence(sample_path, out_path, params)
    background = BackgroundModel.fit(evidence.background)
    on = recall(evidence, background, params, min_strand_bias_p_value=STRAND_FILTER_ON)
    off = recall(evidence, background, params, min_strand_bias_p_value=STRAND_FILTER_OFF)
    return SampleResult(
        seed=seed,
        tumor_fraction=tumor_fraction,
        run_seconds=run_seconds,
        recall_seconds=time.perf_counter() - recall_started,
        pipeline_decision=pipeline_call["decision"],
        pipeline_p_value=pipeline_call["p_value"],
        on=on,
        off=off,
    )


def print_samples(results: list[SampleResult]) -> None:
    print(
        f"{'TF':>6}  {'seed':>5}  {'run s':>5}  {'re-call s':>9}  "
        f"{'on: call':>12}  {'p':>7}  {'flagged':>7}  "
        f"{'off: call':>12}  {'p':>7}  {'flagged':>7}"
    )
    for r in results:
        print(
            f"{r.tumor_fraction:>6g}  {r.seed:>5}  "
            f"{r.run_seconds:>5.1f}  {r.recall_seconds:>9.1f}  "
            f"{r.on.decision:>12}  {r.on.p_value:>7.4f}  {r.on.n_strand_bias:>7}  "
            f"{r.off.decision:>12}  {r.off.p_value:>7.4f}  {r.off.n_strand_bias:>7}"
        )


def print_summary(results: list[SampleResult]) -> None:
    print(
        f"{'condition':<16}  {'filter':<6}  {'n':>3}  {'positive':>8}  {'rate':>6}  "
        f"{'95% CI (Clopper-Pearson)':<24}  {'strand_bias flags':>17}  {'mean TF':>9}"
    )
    for tumor_fraction in sorted({r.tumor_fraction for r in results}):
        label = "blank (TF 0)" if tumor_fraction == 0 else f"TF {tumor_fraction:g}"
        group = [r for r in results if r.tumor_fraction == tumor_fraction]
        for name in ("on", "off"):
            calls = [getattr(r, name) for r in group]
            n_positive = sum(call.decision == "positive" for call in calls)
            low, high = clopper_pearson(n_positive, len(calls))
            print(
                f"{label:<16}  {name:<6}  {len(calls):>3}  {n_positive:>8}  "
                f"{n_positive / len(calls):>6.3f}  {f'[{low:.3f}, {high:.3f}]':<24}  "
                f"{sum(call.n_strand_bias for call in calls):>17}  "
                f"{fmean(call.tumor_fraction for call in calls):>9.2e}"
            )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=10, help="samples per condition")
    parser.add_argument("--tumor-fraction", type=float, default=1e-4)
    parser.add_argument(
        "--seed",
        type=int,
        default=100,
        help="blank i has seed + i, tumour sample i seed + 1000 + i",
    )
    parser.add_argument("--workdir", type=Path, default=Path("/work/bench/strand_filter"))
    args = parser.parse_args()
    if not 1 <= args.n <= TUMOR_SEED_OFFSET:
        parser.error(f"--n must be in [1, {TUMOR_SEED_OFFSET}]; got {args.n}")
    if not 0.0 < args.tumor_fraction < 1.0:
        parser.error(f"--tumor-fraction must be in (0, 1); got {args.tumor_fraction}")

    started = time.perf_counter()
    print(f"machine: {machine_description()}")
    print(
        f"strand-bias filter: on = min_strand_bias_p_value {STRAND_FILTER_ON:g}, "
        f"off = {STRAND_FILTER_OFF:g}\n"
    )
    plan = [(0.0, args.seed + i) for i in range(args.n)] + [
        (args.tumor_fraction, args.seed + TUMOR_SEED_OFFSET + i) for i in range(args.n)
    ]
    results = []
    for tumor_fraction, seed in plan:
        results.append(measure_sample(args.workdir, tumor_fraction=tumor_fraction, seed=seed))
        print(f"  done TF {tumor_fraction:g} seed {seed}", file=sys.stderr, flush=True)
    print_samples(results)
    mismatches = [
        r
        for r in results
        if (r.on.decision, r.on.p_value) != (r.pipeline_decision, r.pipeline_p_value)
    ]
    print(
        f"\nre-call with the filter on reproduces the run's call and p-value: "
        f"{len(results) - len(mismatches)}/{len(results)} samples\n"
    )
    print_summary(results)
    print(f"\nwall time: {time.perf_counter() - started:.0f} s")
    return 1 if mismatches else 0


if __name__ == "__main__":
    raise SystemExit(main())
