"""Statistical caller vs ML- and DL-filtered callers on held-out simulated samples, side by side.

Every sample is simulated with a seed the shipped model never saw (default from 1000 on; the model
was trained on seeds 1..10), with damage artefacts switched up (``artifact_rate`` 1e-3), taken
through the real consensus and evidence stages, then called twice: on the evidence as collected and
on the evidence after :func:`precise_mrd.ml.scoring.apply_ml_filter` with each ``--model-type``
(tabular ML such as ``ensemble``, or the networks ``cnn`` / ``cnn_lstm``). Figures:

* specificity on blanks and sensitivity per tumour fraction at the caller's nominal alpha;
* sensitivity **at equal specificity on blanks** (``--specificity``, default 0.95): each method's
  p-value cut-off is set on its own blanks so that the same number of blanks,
  ``floor((1 - specificity) * n_blanks)``, are called positive;
* probit LoD95 (Fieller CI) from the detections at equal specificity;
* median informative molecules per sample (what the filter costs in depth).

Run: ``.venv/bin/python benchmarks/ml_vs_statistical.py --model-type ensemble cnn cnn_lstm``
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from precise_mrd.core.background import BackgroundModel
from precise_mrd.core.calling import CallingParams, Evidence, call_sample
from precise_mrd.core.lod import lod_probit
from precise_mrd.ml.scoring import apply_ml_filter
from precise_mrd.pipeline.evidence import collect_evidence
from precise_mrd.training import simulate_consensus_sample


def _call(evidence: Evidence, seed: int) -> dict[str, Any]:
    params = CallingParams(n_bootstrap=500, compute_personal_lod=False)
    call, _ = call_sample(
        evidence.variants,
        BackgroundModel.fit(evidence.background),
        params,
        np.random.default_rng(seed),
    )
    return {
        "p_value": call.p_value,
        "decision": call.decision,
        "tumor_fraction": call.tumor_fraction,
        "informative": call.informative_molecules,
        "alt": call.alt_molecules,
    }


def run_one(work: Path, seed: int, tf: float, args: argparse.Namespace) -> dict[str, Any]:
    sample = simulate_consensus_sample(
        work,
        seed,
        tf,
        artifact_rate=args.artifact_rate,
        n_variants=args.n_variants,
        molecules_per_locus=args.molecules,
        sample_name=f"BENCH{seed}",
    )
    sim, consensus, variants = sample.sim, sample.consensus_path, sample.variants
    evidence = collect_evidence(consensus, sim.reference_path, variants)
    row: dict[str, Any] = {
        "seed": seed,
        "tumor_fraction": tf,
        "statistical": _call(evidence, seed),
        "filter_seconds": {},
    }
    for model_type in args.model_type:
        started = time.perf_counter()
        filtered = apply_ml_filter(
            evidence, consensus, sim.reference_path, variants, model_type, seed=seed
        )
        row["filter_seconds"][model_type] = round(time.perf_counter() - started, 2)
        row[model_type] = _call(filtered, seed)
    return row


def summarise(
    rows: list[dict[str, Any]], methods: list[str], alpha: float, specificity: float
) -> dict[str, Any]:
    blanks = [r for r in rows if r["tumor_fraction"] == 0]
    levels = sorted({r["tumor_fraction"] for r in rows if r["tumor_fraction"] > 0})
    out: dict[str, Any] = {}
    # the same number of false positives allowed for both methods: floor((1 - spec) * blanks)
    n_fp = int(np.floor((1 - specificity) * len(blanks) + 1e-9))
    for method in methods:
        blank_p = np.sort([r[method]["p_value"] for r in blanks])
        cutoff = float(blank_p[n_fp]) if n_fp < blank_p.size else 1.0
        entry: dict[str, Any] = {
            "specificity_at_alpha": float(np.mean([r[method]["p_value"] >= alpha for r in blanks])),
            "equal_specificity": 1 - n_fp / max(len(blanks), 1),
            "p_value_cutoff_at_equal_specificity": cutoff,
            "alt_molecules_in_blanks": int(sum(r[method]["alt"] for r in blanks)),
            "median_informative_molecules": float(
                np.median([r[method]["informative"] for r in rows])
            ),
        }
        for tf in levels:
            at = [r for r in rows if r["tumor_fraction"] == tf]
            entry[f"sensitivity_at_alpha_tf_{tf:g}"] = float(
                np.mean([r[method]["p_value"] < alpha for r in at])
            )
            entry[f"sensitivity_equal_specificity_tf_{tf:g}"] = float(
                np.mean([r[method]["p_value"] < cutoff for r in at])
            )
            entry[f"mean_tf_estimate_tf_{tf:g}"] = float(
                np.mean([r[method]["tumor_fraction"] for r in at])
            )
        positives = [r for r in rows if r["tumor_fraction"] > 0]
        entry["lod95_equal_specificity"] = _lod95(
            [r["tumor_fraction"] for r in positives],
            [r[method]["p_value"] < cutoff for r in positives],
        )
        out[method] = entry
    return out


def _lod95(concentrations: list[float], detected: list[bool]) -> dict[str, Any]:
    """Probit LoD95 with Fieller CI (core.lod), or why it could not be fitted."""
    if len(set(concentrations)) < 2:
        return {"lod95": None, "note": "needs at least two tumour-fraction levels"}
    try:
        fit = lod_probit(concentrations, detected)
    except (ValueError, ArithmeticError) as exc:
        return {"lod95": None, "note": str(exc)}
    return {"lod95": fit.lod, "ci": list(fit.ci), "extrapolated": fit.extrapolated}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-blanks", type=int, default=12)
    parser.add_argument("--n-per-level", type=int, default=8)
    parser.add_argument("--levels", type=float, nargs="+", default=[3e-5, 1e-4, 3e-4])
    parser.add_argument("--n-variants", type=int, default=40)
    parser.add_argument("--molecules", type=int, default=1500)
    parser.add_argument("--artifact-rate", type=float, default=1e-3)
    parser.add_argument(
        "--model-type", nargs="+", default=["ensemble"], help="ML and/or DL model types"
    )
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--specificity", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    grid = [0.0] * args.n_blanks + [tf for tf in args.levels for _ in range(args.n_per_level)]
    rows = []
    scratch = Path(tempfile.mkdtemp(prefix="ml-bench-"))
    started = time.perf_counter()
    try:
        for i, tf in enumerate(grid):
            rows.append(run_one(scratch / f"s{i}", args.seed + i, tf, args))
            shutil.rmtree(scratch / f"s{i}", ignore_errors=True)
            print(json.dumps(rows[-1]), flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    summary = {
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "seconds": round(time.perf_counter() - started, 1),
        "summary": summarise(rows, ["statistical", *args.model_type], args.alpha, args.specificity),
        "samples": rows,
    }
    print(json.dumps(summary["summary"], indent=2))
    if args.out is not None:
        args.out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
