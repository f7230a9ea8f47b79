"""Per-variant tests, BH, the INVAR-style likelihood, outlier removal and the personal LoD."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from scipy import optimize, stats

from precise_mrd.core.background import BackgroundModel, MoleculeType
from precise_mrd.core.calling import (
    CHI2_95_HALF,
    CallingParams,
    VariantCounts,
    benjamini_hochberg,
    call_sample,
    fit_tumor_fraction,
    log_likelihood,
    profile_interval,
)
from precise_mrd.core.evidence_sim import simulate_evidence
from precise_mrd.core.records import Variant

FAST = CallingParams(n_bootstrap=500, n_lod_simulations=200)


def test_benjamini_hochberg_matches_hand_computation() -> None:
    p = np.array([0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216])
    q = benjamini_hochberg(p)
    expected = np.minimum.accumulate((p * 10 / np.arange(1, 11))[::-1])[::-1]
    assert np.allclose(q, expected)
    assert q[0] == pytest.approx(0.01) and q[1] == pytest.approx(0.04)
    shuffled = np.array([0.5, 0.01, 0.02])
    assert np.allclose(benjamini_hochberg(shuffled), [0.5, 0.03, 0.03])
    assert benjamini_hochberg(np.array([])).size == 0


def test_mle_single_locus_has_closed_form() -> None:
    n, x, af, e = np.array([20_000.0]), np.array([25.0]), np.array([0.4]), np.array([2e-4])
    expected = (25 / 20_000 - 2e-4) / (0.4 * (1 - 2 * 2e-4))
    assert fit_tumor_fraction(n, x, af, e) == pytest.approx(expected, rel=1e-6)
    # below background: boundary at 0
    assert fit_tumor_fraction(n, np.array([2.0]), af, e) == 0.0


def test_mle_multi_locus_matches_numerical_optimum_and_interval_is_a_chi2_drop() -> None:
    rng = np.random.default_rng(2)
    n = rng.integers(2000, 8000, size=30).astype(float)
    af = rng.uniform(0.2, 0.6, size=30)
    e = 10 ** rng.uniform(-5, -4, size=30)
    x = rng.binomial(n.astype(int), e + 1e-3 * af).astype(float)
    tf = fit_tumor_fraction(n, x, af, e)
    numeric = optimize.minimize_scalar(
        lambda t: -float(log_likelihood(t, n, x, af, e)),
        bounds=(0, 0.1),
        method="bounded",
        options={"xatol": 1e-12},
    ).x
    assert tf == pytest.approx(numeric, rel=1e-4)
    low, high = profile_interval(n, x, af, e, tf)
    assert 0 < low < tf < high
    lmax = float(log_likelihood(tf, n, x, af, e))
    for bound in (low, high):
        assert float(log_likelihood(bound, n, x, af, e)) == pytest.approx(
            lmax - CHI2_95_HALF, abs=1e-6
        )


def _sample(seed: int, **kwargs: object) -> tuple[list[VariantCounts], BackgroundModel]:
    defaults: dict[str, object] = {
        "n_variants": 30,
        "n_simplex": 2000,
        "n_duplex": 2000,
        "tumor_fraction": 0.0,
        "n_background_positions": 5000,
    }
    defaults.update(kwargs)
    sim = simulate_evidence(np.random.default_rng(seed), **defaults)  # type: ignore[arg-type]
    return list(sim.evidence.variants), BackgroundModel.fit(sim.evidence.background)


def test_germline_locus_in_a_blank_is_removed_as_outlier() -> None:
    variants, model = _sample(4, germline_loci=1)
    call, table = call_sample(variants, model, FAST, np.random.default_rng(0))
    germline = [r for r in table.rows if r.alt_simplex + r.alt_duplex > 1000]
    assert len(germline) == 1
    assert "outlier" in germline[0].filters
    assert germline[0].p_value < 1e-100  # by itself it is far above background
    assert call.n_outliers == 1
    assert call.decision == "negative"
    assert call.tumor_fraction < 1e-4


def test_positive_sample_detected_and_outlier_test_keeps_true_loci() -> None:
    variants, model = _sample(5, tumor_fraction=2e-3)
    call, table = call_sample(variants, model, FAST, np.random.default_rng(1))
    assert call.decision == "positive"
    assert call.p_value <= 1 / (FAST.n_bootstrap + 1) + 1e-12
    assert call.n_outliers == 0
    low, high = call.tumor_fraction_ci
    assert low < 2e-3 < high
    assert call.personal_lod < 2e-3
    assert len(table.rows) == 30 and all(r.is_passing for r in table.rows)
    assert json.loads(json.dumps(call.to_dict()))["decision"] == "positive"
    columns = table.to_columns()
    assert columns["filters"][0] == "PASS" and len(columns["q_value"]) == 30


def test_low_depth_is_undetermined_and_blocklist_excludes() -> None:
    variants, model = _sample(6, n_simplex=10, n_duplex=10)
    call, _ = call_sample(variants, model, FAST, np.random.default_rng(2))
    assert call.decision == "undetermined"
    assert call.qc["informative_molecules"]["passed"] is False
    variants, model = _sample(6)
    key = variants[0].variant.key
    call, table = call_sample(variants, model, FAST, np.random.default_rng(2), blocklist={key})
    assert table.rows[0].filters == ("blocklist",)
    assert call.n_variants_passing == 29


def test_strand_bias_and_read_end_filters() -> None:
    v = Variant("chr1", 100, "C", "T")
    biased = VariantCounts(
        v,
        "ACG",
        5000,
        20,
        0,
        0,
        n_forward=2500,
        n_reverse=2500,
        alt_forward=20,
        alt_reverse=0,
        alt_read_end_distances=tuple([30] * 20),
    )
    at_end = VariantCounts(
        v,
        "ACG",
        5000,
        20,
        0,
        0,
        n_forward=2500,
        n_reverse=2500,
        alt_forward=10,
        alt_reverse=10,
        alt_read_end_distances=tuple([1] * 20),
    )
    _, model = _sample(7)
    _, table = call_sample([biased, at_end], model, FAST, np.random.default_rng(3))
    assert table.rows[0].filters == ("strand_bias",)
    assert table.rows[1].filters == ("read_end",)


def test_per_variant_p_value_is_beta_binomial_upper_tail() -> None:
    _, model = _sample(8)
    v = Variant("chr1", 100, "C", "T")
    vc = VariantCounts(v, "ACG", 4000, 3, 0, 0)
    _, table = call_sample([vc], model, FAST, np.random.default_rng(4))
    _, a, b = model.rate(v, "ACG", MoleculeType.SIMPLEX, calibration=True)
    assert table.rows[0].p_value == pytest.approx(float(stats.betabinom.sf(2, 4000, a, b)))


def test_personal_lod_decreases_with_depth() -> None:
    lods = []
    for depth in (500, 2000, 8000):
        variants, model = _sample(9, n_simplex=depth, n_duplex=depth)
        call, _ = call_sample(variants, model, FAST, np.random.default_rng(5))
        lods.append(call.personal_lod)
    assert lods[0] > lods[1] > lods[2]
    # roughly inverse in depth once background-limited effects are small
    assert lods[0] / lods[2] > 4


def test_params_validation() -> None:
    with pytest.raises(ValueError, match="alpha"):
        CallingParams(alpha=0.0)
    with pytest.raises(ValueError, match="n_bootstrap"):
        CallingParams(n_bootstrap=10)
    with pytest.raises(ValueError, match="ref_context"):
        VariantCounts(Variant("chr1", 100, "C", "T"), "AGG", 1, 0, 0, 0)


def test_chip_like_locus_in_a_positive_sample_is_removed_and_tf_recovered() -> None:
    variants, model = _sample(10, tumor_fraction=1e-3)
    chip = variants[3]
    variants[3] = replace(chip, alt_simplex=100, alt_duplex=100)  # ~5% AF: a CHIP variant
    call, table = call_sample(variants, model, FAST, np.random.default_rng(6))
    assert table.rows[3].filters == ("outlier",)
    assert call.n_outliers == 1 and call.decision == "positive"
    low, high = call.tumor_fraction_ci
    assert low < 1e-3 < high
