"""Background model: SBS-96 indexing, Jeffreys intervals, empirical-Bayes shrinkage, floor."""

from __future__ import annotations

import numpy as np
import pytest

from precise_mrd.core.background import (
    SBS96_CLASSES,
    BackgroundCounts,
    BackgroundModel,
    MoleculeType,
    class_context,
    context_index,
    sbs96_index,
)
from precise_mrd.core.records import Variant

CT = Variant("chr1", 5, "C", "T")


def test_sbs96_indexing_collapses_reverse_complements() -> None:
    seen = set()
    for left in "ACGT":
        for centre in "ACGT":
            for right in "ACGT":
                for alt in "ACGT":
                    if alt == centre:
                        continue
                    idx = sbs96_index(left + centre + right, alt)
                    comp = {"A": "T", "C": "G", "G": "C", "T": "A"}
                    rc = comp[right] + comp[centre] + comp[left]
                    assert sbs96_index(rc, comp[alt]) == idx
                    assert class_context(idx) == context_index(left + centre + right)[0]
                    seen.add(idx)
    assert seen == set(range(96))
    assert len(set(SBS96_CLASSES)) == 96
    assert SBS96_CLASSES[sbs96_index("TGA", "T")] == "T[C>A]A"  # G>T is C>A on the other strand
    with pytest.raises(ValueError, match="trinucleotide"):
        context_index("ANA")


def _counts(errors_per_class: np.ndarray, opps_per_context: np.ndarray) -> BackgroundCounts:
    counts = BackgroundCounts.empty()
    counts.errors[0, 0] = errors_per_class
    counts.opportunities[0, 0] = opps_per_context
    return counts


def test_shrinkage_moves_sparse_classes_to_pooled_rate_only() -> None:
    rng = np.random.default_rng(11)
    opps = np.full(32, 2_000_000)
    opps[5] = 200  # context 5 (C-centred) is sparse: its classes 5, 21, 37
    true = np.full(96, 3e-5)
    rich = sbs96_index("ACG", "T")  # a well-measured class (context 2)
    true[rich] = 3e-4
    errors = rng.binomial(opps[class_context(np.arange(96))], true)
    model = BackgroundModel.fit(_counts(errors, opps))
    rates = model.class_rates[MoleculeType.SIMPLEX]
    sparse = [c for c in range(96) if class_context(c) == 5]
    assert len(sparse) == 3
    for c in sparse:
        # raw Jeffreys would be ~ 0.5/201 = 2.5e-3; shrinkage pulls it to the pooled ~3e-5
        assert rates[c] == pytest.approx(model.pooled_rate[0], rel=0.5)
        assert rates[c] < 1e-4
    assert rates[rich] == pytest.approx(3e-4, rel=0.15)
    # the Jeffreys interval of the raw rate covers the raw estimate
    raw = errors / opps[class_context(np.arange(96))]
    assert (model.jeffreys_low[0] <= raw).all() and (raw <= model.jeffreys_high[0]).all()


def test_normal_panel_prior_is_the_shrinkage_target() -> None:
    opps = np.full(32, 1_000_000)
    opps[5] = 100
    errors = np.full(96, 30)
    errors[class_context(np.arange(96)) == 5] = 0
    prior = BackgroundCounts.empty()
    prior.opportunities[0, 0] = np.full(32, 10_000_000)
    prior.errors[0, 0] = 300
    sparse = next(c for c in range(96) if class_context(c) == 5)
    prior.errors[0, 0, sparse] = 10_000  # normals say this class is at 1e-3
    without = BackgroundModel.fit(_counts(errors, opps)).class_rates[0, sparse]
    with_panel = BackgroundModel.fit(_counts(errors, opps), prior_counts=prior).class_rates[
        0, sparse
    ]
    assert without < 1e-4
    assert with_panel > 3e-4


def test_rate_floor_and_beta_parameters() -> None:
    counts = _counts(np.zeros(96, dtype=np.int64), np.full(32, 10**9))
    model = BackgroundModel.fit(counts, rate_floor=1e-7)
    rate, alpha, beta = model.rate(CT, "ACG", MoleculeType.SIMPLEX)
    assert rate >= 1e-7 * 0.999
    assert alpha / (alpha + beta) == pytest.approx(rate)
    # duplex never observed: falls back to the default rate, still a valid Beta
    rate_d, a_d, b_d = model.rate(CT, "ACG", MoleculeType.DUPLEX)
    assert rate_d == pytest.approx(1e-5, rel=1e-6) and a_d > 0 and b_d > 0


def test_locus_concentration_detects_overdispersion() -> None:
    rng = np.random.default_rng(3)
    k, depth, rate = 20_000, 5000, 3e-5

    def counts(tau: float | None) -> BackgroundCounts:
        ctx = rng.integers(0, 32, size=k)
        classes = 16 * np.where(ctx >= 16, 3, 0)[:, None] + 16 * np.arange(3) + (ctx % 16)[:, None]
        locus = (
            rng.beta(tau * rate, tau * (1 - rate), size=(k, 3)) if tau else np.full((k, 3), rate)
        )
        x = rng.binomial(depth, locus)
        c = BackgroundCounts(
            errors=np.zeros((2, 2, 96), dtype=np.int64),
            opportunities=np.zeros((2, 2, 32), dtype=np.int64),
            position_context=ctx.astype(np.int64),
            position_errors=np.stack([x.sum(axis=1), np.zeros(k, dtype=np.int64)]),
            position_opportunities=np.stack([np.full(k, depth), np.zeros(k, dtype=np.int64)]),
        )
        c.errors[0, 0] = np.bincount(classes.ravel(), weights=x.ravel(), minlength=96).astype(int)
        c.opportunities[0, 0] = np.bincount(ctx, minlength=32) * depth
        return c

    tau_true = 5e4
    dispersed = BackgroundModel.fit(counts(tau_true)).locus_concentration[0]
    plain = BackgroundModel.fit(counts(None)).locus_concentration[0]
    assert tau_true / 4 < dispersed < tau_true * 4
    assert plain > 20 * tau_true
    # the dispersed model's Beta is wider than the posterior alone
    model = BackgroundModel.fit(counts(tau_true))
    _, a, b = model.rate(Variant("chr1", 5, "C", "T"), "ACA", MoleculeType.SIMPLEX)
    assert a + b < model.alpha[0, sbs96_index("ACA", "T")] + model.beta[0, sbs96_index("ACA", "T")]


def test_counts_validation() -> None:
    with pytest.raises(ValueError, match="shape"):
        BackgroundCounts(
            errors=np.zeros((2, 96), dtype=np.int64), opportunities=np.zeros((2, 2, 32))
        )
    bad = BackgroundCounts.empty()
    bad.errors[0, 0, 0] = 5
    with pytest.raises(ValueError, match="exceed"):
        BackgroundCounts(errors=bad.errors, opportunities=bad.opportunities)
    merged = BackgroundCounts.empty().merge(BackgroundCounts.empty())
    model = BackgroundModel.fit(merged)
    with pytest.raises(ValueError, match="centred"):
        model.rate(CT, "AGG", MoleculeType.SIMPLEX)
    assert merged.errors.sum() == 0


def test_calibration_posterior_is_unshrunk_for_informative_classes() -> None:
    opps = np.full(32, 1_000_000)
    opps[7] = 10  # too few opportunities to expect an error: keeps the shrunk posterior
    errors = np.full(96, 20)
    errors[class_context(np.arange(96)) == 7] = 0
    cpg = sbs96_index("ACG", "T")
    errors[cpg] = 200  # an artefact class far above the pooled rate
    model = BackgroundModel.fit(_counts(errors, opps))
    a, b = model.calibration_beta()
    assert a[0, cpg] == pytest.approx(200.5) and b[0, cpg] == pytest.approx(1_000_000 - 199.5)
    sparse = next(c for c in range(96) if class_context(c) == 7)
    assert a[0, sparse] == pytest.approx(model.alpha[0, sparse])
    # the orientation split adds up to the collapsed counts
    rates = model.orientation_rates()
    assert rates.shape == (2, 2, 96)
    assert np.array_equal(model.orientation_errors.sum(axis=1), model.errors)
