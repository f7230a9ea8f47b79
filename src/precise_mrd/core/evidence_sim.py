"""Count-level simulator of per-variant evidence and background counts.

The read-level simulator (DESIGN.md 2.7) writes BAM files; this one skips reads and draws the
molecule counts :func:`~precise_mrd.core.calling.call_sample` consumes, so that statistical
properties of the caller (false-positive rate, p-value calibration, sensitivity, bias, interval
coverage, linearity) can be measured over hundreds of samples in seconds.

Generative model, all from one ``np.random.Generator``:

* class rates (:func:`realistic_class_rates`): per SBS class and molecule type, log-uniform in
  ``1e-5..1e-4`` (simplex) and ``1e-6..1e-5`` (duplex) per alternate base; with ``artefacts`` C>T at
  CpG is 10x (simplex) / 3x (duplex) higher and [C>A] (G>T, 8-oxoG) 5x higher in simplex molecules,
  all of the excess on template orientation 0;
* locus rates: each locus (tracked or background) and alternate draws its own rate
  ``Beta(tau * r, tau * (1 - r))`` around its class rate ``r`` (locus overdispersion; ``tau`` per
  molecule type, ``inf`` for none);
* tracked loci: ``alt ~ Binomial(n, TF * AF (1 - e) + (1 - TF * AF) e)`` per molecule type; strand
  of each molecule fair; read-end distances uniform over a 150-bp read; ``germline_loci`` of them
  instead carry the alt in half of all molecules;
* background: ``n_background_positions`` positions of random context at the given depths, with
  errors per alternate and orientation.

>>> import numpy as np
>>> sample = simulate_evidence(np.random.default_rng(1), n_variants=5, n_simplex=1000,
...                            n_duplex=1000, tumor_fraction=0.0, n_background_positions=500)
>>> len(sample.evidence.variants), sample.evidence.background.position_context.shape
(5, (500,))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from precise_mrd.core.background import (
    BASES,
    N_CLASSES,
    BackgroundCounts,
    class_context,
    sbs96_index,
)
from precise_mrd.core.calling import Evidence, VariantCounts
from precise_mrd.core.records import Variant

FloatArray = npt.NDArray[np.float64]
READ_LENGTH = 150


def realistic_class_rates(rng: np.random.Generator, *, artefacts: bool = True) -> FloatArray:
    """Per-orientation class rates, shape (molecule type, orientation, 96)."""
    simplex = 10.0 ** rng.uniform(-5.0, -4.0, N_CLASSES)
    duplex = 10.0 ** rng.uniform(-6.0, -5.0, N_CLASSES)
    rates = np.empty((2, 2, N_CLASSES))
    rates[0] = simplex
    rates[1] = duplex
    if artefacts:
        cls = np.arange(N_CLASSES)
        cpg_ct = (cls // 16 == 2) & (cls % 4 == 2)  # C>T with 3' G
        c_to_a = cls // 16 == 0  # [C>A] == G>T on the other strand
        # all the excess on orientation 0, so the orientation mean is the stated multiple
        rates[0, 0, cpg_ct] *= 19.0
        rates[1, 0, cpg_ct] *= 5.0
        rates[0, 0, c_to_a] *= 9.0
    return rates


@dataclass(frozen=True, eq=False)
class SimulatedSample:
    """Simulated counts and the truth they came from."""

    evidence: Evidence
    class_rates: FloatArray  # (2, 2, 96) true per-orientation class rates
    locus_rates: FloatArray  # (n_variants, 2) true rates of each tracked alt
    tumor_fraction: float
    germline: npt.NDArray[np.bool_]


def _locus_rates(mean: FloatArray, concentration: float, rng: np.random.Generator) -> FloatArray:
    if not np.isfinite(concentration):
        return mean
    return np.asarray(rng.beta(concentration * mean, concentration * (1.0 - mean)))


def _random_context(rng: np.random.Generator, size: int) -> npt.NDArray[np.int64]:
    return np.asarray(rng.integers(0, 4, size=(size, 3)), dtype=np.int64)


def simulate_evidence(
    rng: np.random.Generator,
    *,
    n_variants: int,
    n_simplex: int | npt.ArrayLike,
    n_duplex: int | npt.ArrayLike,
    tumor_fraction: float,
    tumor_afs: npt.ArrayLike | None = None,
    class_rates: FloatArray | None = None,
    artefacts: bool = True,
    locus_concentration: tuple[float, float] = (2e5, 2e6),
    n_background_positions: int = 20_000,
    background_depth: tuple[int, int] | None = None,
    germline_loci: int = 0,
) -> SimulatedSample:
    """Draw one sample's :class:`Evidence` (see the module docstring for the model).

    ``n_simplex``/``n_duplex``: informative molecules per variant (scalar or per variant).
    ``background_depth``: (simplex, duplex) molecules per background position; default the mean
    per-variant depths.
    """
    if n_variants < 1:
        raise ValueError(f"n_variants must be >= 1; got {n_variants}")
    if not 0.0 <= tumor_fraction <= 1.0:
        raise ValueError(f"tumor_fraction must be in [0, 1]; got {tumor_fraction}")
    if not 0 <= germline_loci <= n_variants:
        raise ValueError(f"germline_loci must be in [0, n_variants]; got {germline_loci}")
    rates = realistic_class_rates(rng, artefacts=artefacts) if class_rates is None else class_rates
    if rates.shape != (2, 2, N_CLASSES):
        raise ValueError(f"class_rates must have shape (2, 2, 96); got {rates.shape}")
    mean_rates = rates.mean(axis=1)  # (2, 96)
    depth = np.stack(
        [
            np.broadcast_to(np.asarray(n_simplex, dtype=np.int64), n_variants),
            np.broadcast_to(np.asarray(n_duplex, dtype=np.int64), n_variants),
        ],
        axis=1,
    )
    afs = (
        np.full(n_variants, 0.5)
        if tumor_afs is None
        else np.broadcast_to(np.asarray(tumor_afs, dtype=np.float64), n_variants)
    )

    # tracked loci
    tri = _random_context(rng, n_variants)
    alt_shift = rng.integers(1, 4, size=n_variants)
    germline = np.zeros(n_variants, dtype=bool)
    germline[rng.choice(n_variants, size=germline_loci, replace=False)] = True
    variants: list[VariantCounts] = []
    locus_rates = np.zeros((n_variants, 2))
    for i in range(n_variants):
        ctx = "".join(BASES[b] for b in tri[i])
        alt = BASES[(tri[i, 1] + alt_shift[i]) % 4]
        c = sbs96_index(ctx, alt)
        alts = []
        for m in range(2):
            e = float(_locus_rates(mean_rates[m, c : c + 1], locus_concentration[m], rng)[0])
            locus_rates[i, m] = e
            shift = 0.5 if germline[i] else tumor_fraction * afs[i]
            p = shift * (1.0 - e) + (1.0 - shift) * e
            alts.append(int(rng.binomial(depth[i, m], p)))
        total = int(depth[i].sum())
        alt_total = sum(alts)
        n_forward = int(rng.binomial(total, 0.5))
        alt_forward = int(rng.binomial(alt_total, 0.5))
        distances = rng.integers(0, READ_LENGTH // 2, size=alt_total)
        variants.append(
            VariantCounts(
                variant=Variant("chr1", 1000 * (i + 1), ctx[1], alt, float(afs[i])),
                ref_context=ctx,
                n_simplex=int(depth[i, 0]),
                alt_simplex=alts[0],
                n_duplex=int(depth[i, 1]),
                alt_duplex=alts[1],
                n_forward=n_forward,
                n_reverse=total - n_forward,
                alt_forward=alt_forward,
                alt_reverse=alt_total - alt_forward,
                alt_read_end_distances=tuple(int(d) for d in distances),
            )
        )

    # background positions: pyrimidine context index directly
    k = n_background_positions
    bg_depth = (
        (int(depth[:, 0].mean()), int(depth[:, 1].mean()))
        if background_depth is None
        else background_depth
    )
    position_context = np.asarray(rng.integers(0, 32, size=k), dtype=np.int64)
    # the 3 classes of each context: sub in {0,1,2} (C) or {3,4,5} (T)
    sub0 = np.where(position_context >= 16, 3, 0)
    classes = 16 * (sub0[:, None] + np.arange(3)[None, :]) + (position_context % 16)[:, None]
    assert (class_context(classes) == position_context[:, None]).all()
    errors = np.zeros((2, 2, N_CLASSES), dtype=np.int64)
    opportunities = np.zeros((2, 2, 32), dtype=np.int64)
    pos_errors = np.zeros((2, k), dtype=np.int64)
    pos_opp = np.zeros((2, k), dtype=np.int64)
    for m in range(2):
        n = np.full(k, bg_depth[m], dtype=np.int64)
        n0 = rng.binomial(n, 0.5)
        locus = _locus_rates(mean_rates[m][classes], locus_concentration[m], rng)  # (k, 3)
        scale = locus / mean_rates[m][classes]
        for o, n_o in enumerate((n0, n - n0)):
            e = np.clip(rates[m, o][classes] * scale, 0.0, 1.0 / 3.0)
            x = rng.binomial(n_o[:, None], e)
            errors[m, o] += np.bincount(
                classes.ravel(), weights=x.ravel(), minlength=N_CLASSES
            ).astype(np.int64)
            opportunities[m, o] += np.bincount(position_context, weights=n_o, minlength=32).astype(
                np.int64
            )
            pos_errors[m] += x.sum(axis=1)
        pos_opp[m] = n
    background = BackgroundCounts(
        errors=errors,
        opportunities=opportunities,
        position_context=position_context,
        position_errors=pos_errors,
        position_opportunities=pos_opp,
    )
    return SimulatedSample(
        evidence=Evidence(variants=tuple(variants), background=background),
        class_rates=rates,
        locus_rates=locus_rates,
        tumor_fraction=tumor_fraction,
        germline=germline,
    )
