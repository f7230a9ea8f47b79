"""The self-contained HTML report of one run (plots embedded as PNG, no network needed).

The page puts the call and its evidence first, in words, then QC, plots and the per-variant table.
Plots are drawn with matplotlib's Agg backend, so no display is needed.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from jinja2 import Environment, select_autoescape

from precise_mrd import __version__

#: variant-table columns shown in the report, in order
REPORT_VARIANT_COLUMNS = (
    "chrom",
    "pos",
    "ref",
    "alt",
    "tumor_af",
    "ref_context",
    "informative_simplex",
    "alt_simplex",
    "informative_duplex",
    "alt_duplex",
    "background_rate_simplex",
    "background_rate_duplex",
    "p_value",
    "q_value",
    "filters",
)


@dataclass(frozen=True)
class Plot:
    """One embedded figure."""

    title: str
    caption: str
    png_base64: str
    wide: bool = False  # spans the page rather than one column


@dataclass(frozen=True)
class Cell:
    text: str
    numeric: bool


def format_scientific(value: Any) -> str:
    """Format a number for people: 3 significant digits, scientific below 1e-3.

    >>> format_scientific(0.000123456), format_scientific(0.25), format_scientific(None)
    ('1.23e-04', '0.25', '—')
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    number = float(value)
    if number != 0 and abs(number) < 1e-3:
        return f"{number:.2e}"
    return f"{number:.3g}"


def format_p_value(call: Mapping[str, Any]) -> str:
    """The sample p-value as people should read it: at the bootstrap's resolution
    ``1 / (n_bootstrap + 1)`` it is only a bound.

    >>> format_p_value({"p_value": 1 / 2001, "n_bootstrap": 2000})
    'p < 5.0e-04 (bootstrap floor)'
    >>> format_p_value({"p_value": 0.0123, "n_bootstrap": 2000})
    'p = 0.0123'
    """
    p_value = call.get("p_value")
    n_bootstrap = int(call.get("n_bootstrap") or 0)
    if p_value is not None and n_bootstrap > 0 and p_value <= 1.0 / (n_bootstrap + 1) * (1 + 1e-9):
        return f"p < {1.0 / (n_bootstrap + 1):.1e} (bootstrap floor)"
    return f"p = {format_scientific(p_value)}"


def summary_sentence(call: Mapping[str, Any]) -> str:
    """One plain-words sentence stating the call and its evidence."""
    decision = call.get("decision", "undetermined")
    tf = format_scientific(call.get("tumor_fraction"))
    low, high = (format_scientific(v) for v in call.get("tumor_fraction_ci", (None, None)))
    p_value = format_p_value(call)
    n_alt = call.get("n_variants_with_alt", 0)
    n_variants = call.get("n_variants", 0)
    molecules = f"{call.get('informative_molecules', 0):,}"
    lod = format_scientific(call.get("personal_lod"))
    if decision == "positive":
        return (
            f"Tumour DNA detected: estimated tumour fraction {tf} (95% CI {low}–{high}), "
            f"{p_value}, with alt molecules at {n_alt} of {n_variants} tracked variants "
            f"across {molecules} informative molecules."
        )
    if decision == "negative":
        return (
            f"No tumour DNA detected ({p_value}) across {molecules} informative molecules at "
            f"{n_variants} variants. This sample would have detected a tumour fraction of {lod} "
            f"with 95% probability (personal LoD); the 95% upper bound on the tumour fraction "
            f"is {high}."
        )
    failed = [name for name, check in call.get("qc", {}).items() if not check.get("passed", True)]
    reason = f"failed QC: {', '.join(failed)}" if failed else "insufficient evidence"
    return (
        f"No call could be made ({reason}); {molecules} informative molecules at {n_variants} "
        f"variants (personal LoD {lod})."
    )


def _figure_to_base64(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _family_size_plot(histogram: Mapping[str, int]) -> Plot | None:
    if not histogram:
        return None
    sizes = sorted(int(size) for size in histogram)
    counts = [histogram[str(size)] if str(size) in histogram else histogram[size] for size in sizes]  # type: ignore[index]
    figure, axis = plt.subplots(figsize=(5.2, 3.4))
    axis.bar(sizes, counts, color="#3b6ea8")
    axis.set_xlabel("reads per molecule (family size)")
    axis.set_ylabel("molecules")
    axis.set_title("Family size distribution")
    return Plot(
        "Family sizes", "Raw reads per UMI family (both strands).", _figure_to_base64(figure)
    )


def _positive(rate: float, floor: float = 1e-9) -> float:
    """A rate drawable on a log axis (missing, non-finite or tiny rates at ``floor``)."""
    return rate if math.isfinite(rate) and rate > floor else floor


def _background_plot(background: Sequence[Mapping[str, Any]]) -> Plot | None:
    """``background``: the rows of ``BackgroundModel.class_table`` (model rate, observed errors
    and opportunities, the prior each class was shrunk to and whether its rate is the prior's)."""
    if not background:
        return None
    labels = list(dict.fromkeys(str(row["sbs_class"]) for row in background))
    figure, axes = plt.subplots(2, 1, figsize=(10.5, 5.6), sharex=True)
    positions = np.arange(len(labels))
    plotted: list[float] = []
    notes: list[str] = []
    for axis, molecule_type, colour in zip(
        axes, ("simplex", "duplex"), ("#d98c3f", "#3b6ea8"), strict=True
    ):
        rows = {str(r["sbs_class"]): r for r in background if r["molecule_type"] == molecule_type}
        model = np.array([_positive(float(rows[k]["rate"])) for k in labels])
        prior = np.array(
            [_positive(float(rows[k].get("prior_rate", rows[k]["rate"]))) for k in labels]
        )
        from_prior = np.array([bool(rows[k].get("from_prior", False)) for k in labels])
        errors = np.array([int(rows[k].get("errors", 0)) for k in labels])
        measured = ~from_prior
        observed = np.array(
            [
                _positive(int(rows[k]["errors"]) / int(rows[k]["opportunities"]))
                if int(rows[k].get("opportunities", 0)) and int(rows[k].get("errors", 0))
                else 0.0
                for k in labels
            ]
        )
        axis.scatter(
            positions[measured],
            model[measured],
            s=12,
            color=colour,
            label=f"{molecule_type}: model rate (measured)",
        )
        axis.scatter(
            positions[from_prior],
            model[from_prior],
            s=12,
            facecolors="none",
            edgecolors=colour,
            label=f"{molecule_type}: too few observations, prior",
        )
        seen = observed > 0
        axis.scatter(
            positions[seen],
            observed[seen],
            s=7,
            marker="x",
            color="#333",
            label="observed errors / opportunities",
        )
        axis.step(
            positions,
            prior,
            where="mid",
            color="#999",
            linewidth=0.8,
            linestyle="--",
            label="prior (shrinkage target)",
        )
        values = [*model, *prior, *observed[seen]]
        plotted += values
        # NB: limits before the log scale: a flat series (every rate at the floor after an
        # artefact filter) would give a singular axis and a warning
        axis.set_ylim(min(values) / 3, max(values) * 3)
        axis.set_yscale("log")
        axis.set_ylabel(f"{molecule_type} error rate", fontsize=8)
        axis.legend(fontsize=6.5, loc="upper left", ncol=2)
        for group in range(1, len(labels) // 16):
            axis.axvline(group * 16 - 0.5, color="#ddd", linewidth=0.6)
        n_prior = int(from_prior.sum())
        notes.append(
            f"{molecule_type}: {len(labels) - n_prior} of {len(labels)} classes measured, "
            f"{n_prior} from the prior ({int(errors.sum()):,} errors observed in all)"
        )
    low, high = min(plotted), max(plotted)
    for axis in axes:
        axis.set_ylim(low / 3, high * 3)
    groups = [label[2:5] for label in labels[::16]]
    centres = np.minimum(positions[::16] + 7.5, len(labels) - 1)  # the 16 contexts of a group
    axes[1].set_xticks(centres, groups, fontsize=9)
    axes[1].set_xticks(
        positions, [label[0] + label[-1] for label in labels], minor=True, fontsize=5, rotation=90
    )
    axes[1].tick_params(axis="x", which="major", pad=14)
    axes[0].set_title("Background error by trinucleotide context (96 classes, 5'/3' bases below)")
    return Plot(
        "Background",
        "Consensus error rate per substitution class at non-variant target positions. Filled "
        "points: the rate measured there (shrunk a little towards the prior); open points: "
        "classes with fewer than one error expected, whose rate is the prior's, not a "
        "measurement; crosses: the raw observed rate. " + "; ".join(notes) + ".",
        _figure_to_base64(figure),
        wide=True,
    )


def _expected_alt(n: float, tf: float, af: float, e: float) -> float:
    return n * (tf * af * (1 - e) + (1 - tf * af) * e)


def _observed_vs_expected_plot(
    variants: Mapping[str, Sequence[Any]], call: Mapping[str, Any]
) -> Plot | None:
    if not variants.get("informative_simplex"):
        return None
    tf = float(call.get("tumor_fraction") or 0.0)
    expected, observed = [], []
    for i in range(len(variants["informative_simplex"])):
        af = float(variants["tumor_af"][i])
        expected.append(
            _expected_alt(
                float(variants["informative_simplex"][i]),
                tf,
                af,
                float(variants["background_rate_simplex"][i]),
            )
            + _expected_alt(
                float(variants["informative_duplex"][i]),
                tf,
                af,
                float(variants["background_rate_duplex"][i]),
            )
        )
        observed.append(float(variants["alt_simplex"][i]) + float(variants["alt_duplex"][i]))
    figure, axis = plt.subplots(figsize=(5.2, 3.4))
    axis.scatter(expected, observed, s=14, color="#3b6ea8", alpha=0.8)
    top = max([*expected, *observed, 1.0])
    axis.plot([0, top], [0, top], color="#999", linewidth=1, linestyle="--")
    axis.set_xlabel("expected alt molecules at the fitted TF")
    axis.set_ylabel("observed alt molecules")
    axis.set_title("Per-variant alt molecules")
    return Plot(
        "Per-variant evidence",
        "Each point is a tracked variant; the dashed line is observed = expected.",
        _figure_to_base64(figure),
    )


def _likelihood_plot(call: Mapping[str, Any]) -> Plot | None:
    grid = list(call.get("profile_tumor_fraction") or [])
    log_likelihood = list(call.get("profile_log_likelihood") or [])
    points = [(tf, ll) for tf, ll in zip(grid, log_likelihood, strict=True) if tf > 0]
    if len(points) < 2:
        return None
    best = max(ll for _, ll in points)
    figure, axis = plt.subplots(figsize=(5.2, 3.4))
    axis.plot([tf for tf, _ in points], [ll - best for _, ll in points], color="#3b6ea8")
    low, high = call.get("tumor_fraction_ci", (None, None))
    for bound in (low, high):
        if bound:
            axis.axvline(bound, color="#c62828", linestyle=":", linewidth=1)
    axis.axhline(-1.92, color="#999", linestyle="--", linewidth=1)
    axis.set_xscale("log")
    axis.set_ylim(-12, 0.5)
    axis.set_xlabel("tumour fraction")
    axis.set_ylabel("log-likelihood − max")
    axis.set_title("Likelihood profile of the tumour fraction")
    return Plot(
        "Likelihood profile",
        "Profile log-likelihood; the dashed line (−1.92) marks the 95% CI, dotted lines its "
        "bounds.",
        _figure_to_base64(figure),
    )


def _variant_rows(variants: Mapping[str, Sequence[Any]]) -> tuple[list[str], list[list[Cell]]]:
    columns = [name for name in REPORT_VARIANT_COLUMNS if name in variants]
    n_rows = len(next(iter(variants.values()), []))
    rows: list[list[Cell]] = []
    for index in range(n_rows):
        row: list[Cell] = []
        for name in columns:
            value = variants[name][index]
            if isinstance(value, float):
                row.append(Cell(format_scientific(value), True))
            elif isinstance(value, int):
                row.append(Cell(f"{value:,}" if name != "pos" else str(value), True))
            elif isinstance(value, list | tuple):
                row.append(Cell(", ".join(str(v) for v in value) or "PASS", False))
            else:
                row.append(Cell(str(value) if value not in (None, "") else "PASS", False))
        rows.append(row)
    return columns, rows


def _metric_rows(metrics: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for name, value in metrics.items():
        label = f"{prefix}{name}"
        if isinstance(value, Mapping):
            if name.endswith("histogram"):
                continue
            rows.extend(_metric_rows(value, prefix=f"{label}."))
        elif isinstance(value, float):
            rows.append((label, format_scientific(value)))
        elif isinstance(value, list | tuple):
            continue
        else:
            rows.append((label, str(value)))
    return rows


def render_report(
    *,
    sample_name: str,
    sample_call: Mapping[str, Any],
    variants: Mapping[str, Sequence[Any]],
    metrics: Mapping[str, Any],
    background: Sequence[Mapping[str, Any]],
    config_hash: str,
) -> str:
    """Render the report as one self-contained HTML string."""
    template_text = (
        resources.files("precise_mrd.pipeline").joinpath("templates/report.html.j2").read_text()
    )
    environment = Environment(autoescape=select_autoescape(default=True))
    template = environment.from_string(template_text)
    family_histogram = metrics.get("consensus", {}).get("family_size_histogram", {})
    candidates = [
        _likelihood_plot(sample_call),
        _observed_vs_expected_plot(variants, sample_call),
        _family_size_plot({str(k): v for k, v in family_histogram.items()}),
        _background_plot(background),
    ]
    columns, rows = _variant_rows(variants)
    return template.render(
        sample_name=sample_name,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        version=__version__,
        config_hash=config_hash,
        call=sample_call,
        summary_sentence=summary_sentence(sample_call),
        fmt_sci=format_scientific,
        p_text=format_p_value(sample_call),
        plots=[plot for plot in candidates if plot is not None],
        variant_columns=columns,
        variant_rows=rows,
        metric_rows=_metric_rows(metrics),
        artefact_filter=metrics.get("ml_filter"),
        thresholds=", ".join(f"{k} = {v}" for k, v in sample_call.get("thresholds", {}).items()),
    )
