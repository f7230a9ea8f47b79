"""LoB / LoD / detection maths against hand-worked numbers and against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize, stats

from precise_mrd.core.lod import (
    clopper_pearson,
    detection_rates,
    linearity,
    lob_nonparametric,
    lob_parametric,
    lod_classical,
    lod_probit,
    nonparametric_percentile,
    parametric_multiplier,
    pooled_sd,
    roc_curve,
    type1_calibration,
)

# --------------------------------------------------------------------------- non-parametric LoB


def test_rank_position_57_5_for_60_blanks_interpolates_between_ranks_57_and_58() -> None:
    rng = np.random.default_rng(1)
    values = rng.gamma(2.0, 1.0, size=60)
    ordered = np.sort(values)
    expected = ordered[56] + 0.5 * (ordered[57] - ordered[56])  # ranks 57 and 58 (1-based)
    lob = lob_nonparametric(rng.permutation(values))
    assert lob.lob == pytest.approx(expected, rel=1e-12)
    assert lob.method == "nonparametric" and lob.n == 60 and lob.lot_handling == "pooled"
    assert lob.notes == ()


def test_rank_position_with_integer_rank_takes_the_value_itself() -> None:
    # B = 30: 0.5 + 28.5 = 29 exactly -> the 29th smallest value, no interpolation
    values = [float(v) for v in range(100, 130)]
    assert nonparametric_percentile(values) == 128.0


def test_rank_position_quarter_interpolation() -> None:
    # B = 25: 0.5 + 23.75 = 24.25 -> x24 + 0.25 (x25 - x24) with x = squares
    values = [float(v * v) for v in range(1, 26)]
    assert nonparametric_percentile(values) == pytest.approx(576 + 0.25 * (625 - 576))


def test_blank_results_mostly_zero_give_zero_lob() -> None:
    # a typical MRD blank series: TF estimates mostly exactly 0
    values = [0.0] * 58 + [1e-5, 3e-5]
    assert lob_nonparametric(values).lob == 0.0
    values = [0.0] * 56 + [1e-5, 2e-5, 3e-5, 4e-5]  # rank 57.5 -> halfway between 1e-5 and 2e-5
    assert lob_nonparametric(values).lob == pytest.approx(1.5e-5)


def test_two_lots_analysed_separately_and_maximum_reported() -> None:
    lot_a = [float(v) for v in range(1, 61)]  # LoB 57.5
    lot_b = [2.0 * v for v in range(1, 61)]  # LoB 115
    lob = lob_nonparametric(lot_a + lot_b, lots=["A"] * 60 + ["B"] * 60)
    assert lob.lot_handling == "per-lot"
    assert lob.per_lot == {"A": 57.5, "B": 115.0}
    assert lob.lob == 115.0
    assert lob.n_per_lot == {"A": 60, "B": 60}


def test_four_lots_are_pooled() -> None:
    values = [float(v) for v in range(1, 81)]
    lots = [f"L{i % 4}" for i in range(80)]
    lob = lob_nonparametric(values, lots=lots)
    assert lob.lot_handling == "pooled"
    assert lob.per_lot == {"pooled": pytest.approx(0.5 * (76 + 77))}  # rank 76.5


def test_too_few_blanks_are_rejected_with_the_minimum() -> None:
    with pytest.raises(ValueError, match="got 9, need at least 10"):
        lob_nonparametric([0.0] * 9)
    with pytest.raises(ValueError, match="lot 'B': got 5"):
        lob_nonparametric([0.0] * 20 + [1.0] * 5, lots=["A"] * 20 + ["B"] * 5)


def test_small_lots_get_a_note_about_the_recommended_60() -> None:
    assert "recommends at least 60" in lob_nonparametric([0.0] * 20).notes[0]


def test_bad_blank_inputs() -> None:
    with pytest.raises(ValueError, match="must be finite"):
        lob_nonparametric([0.0] * 20 + [math.nan])
    with pytest.raises(ValueError, match="one label per value"):
        lob_nonparametric([0.0] * 20, lots=["A"] * 19)


# --------------------------------------------------------------------------- parametric LoB


def test_parametric_multiplier_hand_values() -> None:
    assert parametric_multiplier(60, 1) == pytest.approx(1.645 / (1 - 1 / 236))
    # two lots x 4 samples x 15 results: per lot B = 60, K = 4 -> 1.645 / (1 - 1/224)
    assert parametric_multiplier(60, 4) == pytest.approx(1.645 / (1 - 1 / 224))
    assert parametric_multiplier(60, 4) == pytest.approx(1.6524, abs=1e-4)


def test_parametric_lob_by_hand_with_samples() -> None:
    # two blank samples, 3 results each: sample a = 1, 2, 3, b = 4, 6, 8; mean 24/6 = 4
    values = [1.0, 2.0, 3.0, 4.0, 6.0, 8.0]
    samples = ["a", "a", "a", "b", "b", "b"]
    # SD_B is the SD of all six results: squares about 4 are 9+4+1+0+4+16 = 34 -> sqrt(34/5);
    # the within-sample pooled SD, sqrt((2 + 8) / 4), is SD_L's and not used here
    assert pooled_sd(values, samples) == (pytest.approx(math.sqrt(2.5)), 4)
    lob = lob_parametric(values, samples=samples)
    expected = 4.0 + 1.645 / (1 - 1 / (4 * (6 - 2))) * math.sqrt(34 / 5)  # c_p with B - K = 4
    assert lob.lob == pytest.approx(expected, rel=1e-12)
    assert lob.method == "parametric"


def test_parametric_lob_two_lots_by_hand() -> None:
    """EP17-A2 5.3: per lot, mean and SD of all its blank results, c_p with B - K d.f.; 2 lots
    are analysed apart and the larger LoB is reported. The samples' means differ, so the overall
    SD and the within-sample SD differ: only the overall one is SD_B."""
    # lot 1: samples p = (0, 1, 2), q = (3, 4, 5), r = (6, 7, 8): mean 4; squares about 4 sum
    # to 16+9+4+1+0+1+4+9+16 = 60 -> SD_B = sqrt(60/8); within-sample SD = 1 (3 * 2 / 6)
    lot1 = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    # lot 2: samples s = (1, 1, 4), t = (2, 2, 2): mean 2; squares 1+1+4+0+0+0 = 6 -> sqrt(6/5)
    lot2 = [1.0, 1.0, 4.0, 2.0, 2.0, 2.0]
    values = lot1 + lot2
    samples = ["p"] * 3 + ["q"] * 3 + ["r"] * 3 + ["s"] * 3 + ["t"] * 3
    lots = ["L1"] * 9 + ["L2"] * 6
    lob = lob_parametric(values, lots=lots, samples=samples)
    lot1_lob = 4.0 + 1.645 / (1 - 1 / (4 * (9 - 3))) * math.sqrt(60 / 8)
    lot2_lob = 2.0 + 1.645 / (1 - 1 / (4 * (6 - 2))) * math.sqrt(6 / 5)
    assert lob.lot_handling == "per-lot"
    assert lob.per_lot["L1"] == pytest.approx(lot1_lob, rel=1e-12)
    assert lob.per_lot["L2"] == pytest.approx(lot2_lob, rel=1e-12)
    assert lob.lob == pytest.approx(max(lot1_lob, lot2_lob), rel=1e-12)
    # the within-sample SD would have given a much smaller lot-1 LoB
    assert pooled_sd(lot1, samples[:9])[0] == pytest.approx(1.0)
    assert lob.per_lot["L1"] > 4.0 + 1.7 * 2.7


def test_parametric_lob_matches_numpy_without_samples() -> None:
    rng = np.random.default_rng(2)
    values = rng.normal(0.5, 0.2, size=60)
    expected = values.mean() + 1.645 / (1 - 1 / 236) * values.std(ddof=1)
    assert lob_parametric(values).lob == pytest.approx(expected, rel=1e-12)


def test_parametric_lob_three_lots_reports_max() -> None:
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.normal(mu, 1.0, 30) for mu in (0.0, 5.0, 1.0)])
    lots = ["x"] * 30 + ["y"] * 30 + ["z"] * 30
    lob = lob_parametric(values, lots=lots)
    assert lob.lot_handling == "per-lot"
    assert lob.lob == lob.per_lot["y"]
    y = values[30:60]
    assert lob.per_lot["y"] == pytest.approx(y.mean() + 1.645 / (1 - 1 / 116) * y.std(ddof=1))


def test_parametric_lob_rejects_zero_spread() -> None:
    with pytest.raises(ValueError, match="no variation"):
        lob_parametric([0.0] * 30)


# --------------------------------------------------------------------------- classical LoD


def test_classical_lod_by_hand() -> None:
    # J = 3 low samples, L = 12 results; pooled SD from per-sample SS
    a, b, c = [1.0, 2.0, 3.0, 2.0], [5.0, 5.0, 7.0, 7.0], [0.0, 4.0, 2.0, 2.0]
    ss = sum(float(np.sum((np.array(s) - np.mean(s)) ** 2)) for s in (a, b, c))
    sd_l = math.sqrt(ss / (12 - 3))
    lod = lod_classical(a + b + c, lob=1.0, samples=["a"] * 4 + ["b"] * 4 + ["c"] * 4)
    assert lod.lod == pytest.approx(1.0 + 1.645 / (1 - 1 / 36) * sd_l)
    assert lod.sd_low["all"] == pytest.approx(sd_l)


# --------------------------------------------------------------------------- detection rates


def test_clopper_pearson_matches_beta_quantiles_and_textbook_values() -> None:
    low, high = clopper_pearson(3, 20)
    assert low == pytest.approx(stats.beta.ppf(0.025, 3, 18))
    assert high == pytest.approx(stats.beta.ppf(0.975, 4, 17))
    assert clopper_pearson(20, 20) == (pytest.approx(0.8316, abs=1e-4), 1.0)  # 0.025 ** (1/20)


def test_detection_rates_group_by_level() -> None:
    rows = detection_rates([3, 1, 3, 1, 3], [True, False, True, True, False])
    assert [(r.concentration, r.n, r.hits) for r in rows] == [(1.0, 2, 1), (3.0, 3, 2)]
    assert rows[1].rate == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="0/1 or true/false"):
        detection_rates([1, 2], [0, 2])


# --------------------------------------------------------------------------- probit LoD


def _probit_data(
    rng: np.random.Generator, intercept: float, slope: float, levels: np.ndarray, reps: int
) -> tuple[np.ndarray, np.ndarray]:
    concentration = np.repeat(levels, reps)
    p = stats.norm.cdf(intercept + slope * np.log10(concentration))
    return concentration, rng.random(concentration.size) < p


def test_probit_mle_matches_a_direct_numerical_optimisation() -> None:
    rng = np.random.default_rng(5)
    concentration, detected = _probit_data(rng, 4.0, 1.5, np.logspace(-4, -1, 7), 12)
    fit = lod_probit(concentration, detected)
    x = np.log10(concentration)

    def negative_loglik(beta: np.ndarray) -> float:
        eta = beta[0] + beta[1] * x
        return -float(np.sum(np.where(detected, stats.norm.logcdf(eta), stats.norm.logcdf(-eta))))

    direct = optimize.minimize(negative_loglik, [0.0, 1.0], method="Nelder-Mead", tol=1e-12)
    assert fit.intercept == pytest.approx(direct.x[0], abs=1e-4)
    assert fit.slope == pytest.approx(direct.x[1], abs=1e-4)
    assert fit.lod == pytest.approx(10 ** ((1.645 - direct.x[0]) / direct.x[1]), rel=1e-3)
    # the interval contains the estimate and is asymmetric on the linear scale
    low, high = fit.ci
    assert low is not None and high is not None and low < fit.lod < high
    assert fit.ci_delta[0] < fit.lod < fit.ci_delta[1]


def test_probit_recovers_a_known_lod95_within_its_ci() -> None:
    intercept, slope = 4.0, 1.5  # true LoD95 = 10 ** ((1.645 - 4) / 1.5) = 0.0269
    true_lod = 10 ** ((1.645 - intercept) / slope)
    rng = np.random.default_rng(6)
    concentration, detected = _probit_data(rng, intercept, slope, np.logspace(-4, -0.5, 8), 20)
    fit = lod_probit(concentration, detected)
    low, high = fit.ci
    assert low is not None and high is not None
    assert low <= true_lod <= high
    assert low < fit.lod < high and high / low < 10.0  # informative, not a vacuous interval
    assert not fit.extrapolated


@pytest.mark.slow
def test_fieller_interval_coverage_is_near_nominal() -> None:
    intercept, slope = 4.0, 1.5
    true_lod = 10 ** ((1.645 - intercept) / slope)
    rng = np.random.default_rng(7)
    covered = 0
    n_sim = 300
    for _ in range(n_sim):
        concentration, detected = _probit_data(rng, intercept, slope, np.logspace(-4, -0.5, 8), 10)
        fit = lod_probit(concentration, detected)
        low, high = fit.ci
        covered += (low is None or low <= true_lod) and (high is None or true_lod <= high)
    # 95% nominal; binomial SD at n=300 is 1.3%: allow 90%..99%
    assert 0.90 <= covered / n_sim <= 0.99


def test_probit_degenerate_inputs_raise_precise_errors() -> None:
    with pytest.raises(ValueError, match="no variation in hits: all 4 results were detected"):
        lod_probit([1, 2, 3, 4], [1, 1, 1, 1])
    with pytest.raises(ValueError, match="no variation in hits: all 2 results were missed"):
        lod_probit([1, 2], [0, 0])
    with pytest.raises(ValueError, match="completely separated"):
        lod_probit([1, 1, 2, 2, 4, 4], [0, 0, 0, 0, 1, 1])
    with pytest.raises(ValueError, match="concentrations > 0"):
        lod_probit([0, 1, 2], [0, 1, 1])
    with pytest.raises(ValueError, match="two distinct"):
        lod_probit([2, 2, 2], [0, 1, 1])


def test_probit_ci_unbounded_when_slope_is_not_significant() -> None:
    # hits barely related to concentration: Fieller gives an unbounded interval, not a fake one
    concentration = [1, 1, 1, 1, 10, 10, 10, 10]
    detected = [0, 1, 0, 1, 1, 0, 1, 1]
    fit = lod_probit(concentration, detected)
    assert fit.ci == (None, None)


# --------------------------------------------------------------------------- ROC / AUC


def test_auc_equals_mann_whitney_u() -> None:
    rng = np.random.default_rng(8)
    negative, positive = rng.normal(0, 1, 40), rng.normal(1, 1, 25)
    roc = roc_curve(negative, positive)
    u = stats.mannwhitneyu(positive, negative).statistic
    assert roc.auc == pytest.approx(u / (40 * 25))
    # trapezoidal area under the ROC points equals the AUC
    area = np.trapezoid(roc.true_positive_rate, roc.false_positive_rate)
    assert area == pytest.approx(roc.auc)
    assert roc.false_positive_rate[-1] == 1.0 and roc.true_positive_rate[-1] == 1.0


def test_auc_perfect_and_ties() -> None:
    assert roc_curve([0.0, 0.0, 0.0], [1.0, 2.0]).auc == 1.0
    assert roc_curve([0.0, 0.0, 1.0], [0.0, 1.0]).auc == pytest.approx(
        (1.0 + 2.5) / 6
    )  # pairs: 0.5+0.5+0, 1+1+0.5
    with pytest.raises(ValueError, match="at least one negative and one positive"):
        roc_curve([], [1.0])


# --------------------------------------------------------------------------- calibration


def test_type1_calibration_counts_and_excess_test() -> None:
    p_values = [0.001, 0.004, 0.02, 0.2, 0.5, 0.7, 0.9, 0.95, 0.99, 1.0]
    points = type1_calibration(p_values, alphas=(0.005, 0.05))
    assert [(p.alpha, p.n_rejected, p.n) for p in points] == [(0.005, 2, 10), (0.05, 3, 10)]
    assert points[1].p_excess == pytest.approx(stats.binom.sf(2, 10, 0.05))
    assert points[1].ci == clopper_pearson(3, 10)
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        type1_calibration([1.5])


def test_uniform_p_values_are_calibrated() -> None:
    rng = np.random.default_rng(9)
    for point in type1_calibration(rng.random(2000)):
        assert point.ci[0] <= point.alpha <= point.ci[1] or point.p_excess > 0.001


# --------------------------------------------------------------------------- linearity


def test_linearity_by_hand() -> None:
    # log10 truth -3, -2, -1; log10 estimate -3.1, -2, -0.9 -> slope 1.1, intercept ~0.2 (hand)
    truth = [1e-3, 1e-2, 1e-1]
    estimate = [10**-3.1, 1e-2, 10**-0.9]
    fit = linearity(truth, estimate)
    assert fit.slope == pytest.approx(1.1)
    assert fit.intercept == pytest.approx(0.2)
    assert fit.r_squared == pytest.approx(1.0)


def test_linearity_excludes_zero_estimates_and_reports_them() -> None:
    fit = linearity([1e-5, 1e-4, 1e-3, 1e-2], [0.0, 1.2e-4, 0.9e-3, 1.1e-2])
    assert fit.n == 3 and fit.n_excluded == 1
    assert 0.9 < fit.slope < 1.1
    assert fit.slope_ci[0] < fit.slope < fit.slope_ci[1]
    with pytest.raises(ValueError, match="at least 3 pairs"):
        linearity([1e-5, 1e-4], [1e-5, 1e-4])
