"""Per-variant evidence tests and the calibrated sample-level MRD call.

Model (INVAR-style). At tracked locus *i* a molecule of type *m* (simplex or duplex) shows the alt
allele with probability

    p_im(TF) = TF * AF_i * (1 - e_im) + (1 - TF * AF_i) * e_im

where ``AF_i`` is the variant's tumour allele fraction and ``e_im`` the background rate of its
substitution class (:class:`~precise_mrd.core.background.BackgroundModel`). Alt counts are binomial
given ``p``, so the log-likelihood ``L(TF)`` is concave in ``TF`` and its maximum on ``[0, 1]`` is
found by bisection on the score. The 95% interval is the profile-likelihood set
``L(TF) >= L(MLE) - chi2_1(0.95) / 2`` (lower bound 0 when it reaches the boundary).

Calibration. The likelihood-ratio statistic ``LR = 2 (L(MLE) - L(0))`` would be compared with the
chi-bar-squared ``0.5 chi2_0 + 0.5 chi2_1`` if the ``e_im`` were known; they are estimated, and loci
vary around their class rate, which makes that reference anti-conservative. The p-value is therefore
a parametric bootstrap under ``TF = 0``: each replicate draws every class rate from its
*unshrunk* Jeffreys posterior (:meth:`BackgroundModel.calibration_beta`; shared by the loci of
that class), each locus rate around it with the fitted locus concentration, and alt counts
binomially; the observed analysis (shrunk point rates) is repeated on each replicate, so any bias
of the shrinkage toward the pooled rate is reproduced in the null distribution rather than
trusted. ``p = (1 + #{LR_b >= LR}) / (B + 1)``. Per-variant p-values use the same unshrunk
posterior (beta-binomial upper tail of simplex + duplex alt molecules, convolved).

Outliers. Loci whose alt count is far above what the fitted TF predicts (germline or CHIP variants,
locus artefacts) are removed one at a time (Bonferroni on the per-locus upper-tail test) before the
final fit. Per-variant filters (strand bias, read-end enrichment, low mapping quality, blocklist)
exclude a locus from the sample likelihood too.

Personal LoD: the smallest TF detected with probability 0.95 at this sample's informative molecules
and background, at the same alpha, by simulation with common random numbers (so detection is
monotone in TF) and bisection on log TF.

>>> import numpy as np
>>> n = np.array([10_000.0]); x = np.array([6.0]); af = np.array([0.5]); e = np.array([1e-4])
>>> tf = fit_tumor_fraction(n, x, af, e)
>>> round(tf * 1e4, 2)  # (6/10000 - 1e-4) / (0.5 * (1 - 2e-4))
10.0
>>> benjamini_hochberg(np.array([0.01, 0.04, 0.03])).round(3).tolist()
[0.03, 0.04, 0.04]
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import optimize, stats

from precise_mrd.core.background import (
    SBS96_CLASSES,
    BackgroundCounts,
    BackgroundModel,
    MoleculeType,
    sbs96_index,
)
from precise_mrd.core.records import Variant

FloatArray = npt.NDArray[np.float64]
Decision = Literal["positive", "negative", "undetermined"]
CHI2_95_HALF = float(stats.chi2.ppf(0.95, 1) / 2.0)
_LOG_TF_MIN = -12.0


@dataclass(frozen=True, slots=True)
class VariantCounts:
    """Molecule counts at one tracked variant (molecules, not reads; mates counted once).

    ``ref_context``: reference bases at ``pos-1, pos, pos+1``. ``n_*``: informative molecules (ref
    or alt base passing quality), ``alt_*``: of which alt. Orientation counts are by the strand
    the molecule came from (``forward`` top, ``reverse`` bottom; the consensus ``sO`` tag, else
    the read-1 strand); a duplex molecule counts on both. ``alt_read_end_distances``: for each
    alt molecule, the distance of the base from the nearest end of its read. ``n_low_mapq``:
    molecules covering the locus whose reads were dropped for low mapping quality.
    """

    variant: Variant
    ref_context: str
    n_simplex: int
    alt_simplex: int
    n_duplex: int
    alt_duplex: int
    n_forward: int = 0
    n_reverse: int = 0
    alt_forward: int = 0
    alt_reverse: int = 0
    alt_read_end_distances: tuple[int, ...] = ()
    n_low_mapq: int = 0

    def __post_init__(self) -> None:
        if len(self.ref_context) != 3 or self.ref_context[1] != self.variant.ref:
            raise ValueError(
                f"ref_context must be 3 bases centred on ref {self.variant.ref}; "
                f"got {self.ref_context!r} for {self.variant.key}"
            )
        for name in ("n_simplex", "alt_simplex", "n_duplex", "alt_duplex", "n_low_mapq"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0; got {getattr(self, name)}")
        if self.alt_simplex > self.n_simplex or self.alt_duplex > self.n_duplex:
            raise ValueError(f"alt molecules exceed informative molecules at {self.variant.key}")

    @property
    def informative(self) -> int:
        return self.n_simplex + self.n_duplex

    @property
    def alt(self) -> int:
        return self.alt_simplex + self.alt_duplex


@dataclass(frozen=True, eq=False)
class Evidence:
    """Everything the caller needs from one consensus BAM."""

    variants: tuple[VariantCounts, ...]
    background: BackgroundCounts
    n_records: int = 0
    n_records_skipped: int = 0


@dataclass(frozen=True, slots=True)
class CallingParams:
    """Thresholds of the per-variant tests and the sample call (all validated).

    * ``alpha``: sample-level type-I error; positive when the calibrated p-value <= alpha.
    * ``min_informative_molecules``, ``min_passing_variants``, ``min_background_opportunities``,
      ``max_outlier_fraction``: QC items; failing any makes the call ``undetermined``.
    * ``outlier_alpha``: a locus is an outlier when its upper-tail p-value given the fitted TF is
      below ``outlier_alpha / n_loci`` (Bonferroni), removed one at a time.
    * Filters apply to loci with at least ``min_alt_for_filters`` alt molecules:
      ``strand_bias`` when the binomial test of alt orientation against the locus's overall
      orientation split has p < ``min_strand_bias_p_value`` (a strand-balance test that adapts to
      the alt count); ``read_end`` when more than ``max_read_end_fraction`` of alt bases lie
      within ``read_end_window`` bases of a read end; ``low_mapq`` when more than
      ``max_low_mapq_fraction`` of covering molecules were dropped for mapping quality.
    * ``n_bootstrap``: null replicates of the calibrated p-value (its resolution is
      ``1 / (n_bootstrap + 1)``); ``n_lod_simulations`` and ``lod_detection_probability`` set
      the personal LoD; ``compute_personal_lod=False`` skips it (``personal_lod`` is ``None``).
    """

    alpha: float = 0.05
    min_informative_molecules: int = 1000
    min_passing_variants: int = 1
    min_background_opportunities: int = 10_000
    max_outlier_fraction: float = 0.5
    outlier_alpha: float = 0.01
    min_alt_for_filters: int = 3
    min_strand_bias_p_value: float = 1e-3
    read_end_window: int = 10
    max_read_end_fraction: float = 0.9
    max_low_mapq_fraction: float = 0.2
    n_bootstrap: int = 2000
    n_lod_simulations: int = 400
    lod_detection_probability: float = 0.95
    compute_personal_lod: bool = True

    def __post_init__(self) -> None:
        for name in ("alpha", "outlier_alpha"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ValueError(f"{name} must be in (0, 1); got {value}")
        if not 0.0 <= self.min_strand_bias_p_value < 1.0:  # NB: 0 switches the filter off
            raise ValueError(
                f"min_strand_bias_p_value must be in [0, 1); got {self.min_strand_bias_p_value}"
            )
        for name in ("max_outlier_fraction", "max_read_end_fraction", "max_low_mapq_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]; got {value}")
        if not 0.5 <= self.lod_detection_probability < 1.0:
            raise ValueError(
                "lod_detection_probability must be in [0.5, 1); "
                f"got {self.lod_detection_probability}"
            )
        for name in ("min_informative_molecules", "min_passing_variants", "read_end_window"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0; got {getattr(self, name)}")
        if self.n_bootstrap < 100:
            raise ValueError(f"n_bootstrap must be >= 100; got {self.n_bootstrap}")
        if self.n_lod_simulations < 50:
            raise ValueError(f"n_lod_simulations must be >= 50; got {self.n_lod_simulations}")


@dataclass(frozen=True, slots=True)
class VariantResult:
    """One row of ``variants.tsv``. ``filters`` is empty for a locus used in the sample fit."""

    chrom: str
    pos: int
    ref: str
    alt: str
    tumor_af: float
    ref_context: str
    sbs_class: str
    informative_simplex: int
    alt_simplex: int
    informative_duplex: int
    alt_duplex: int
    background_rate_simplex: float
    background_rate_duplex: float
    p_value: float
    q_value: float
    outlier_p_value: float
    filters: tuple[str, ...]

    @property
    def is_passing(self) -> bool:
        return not self.filters


@dataclass(frozen=True, slots=True)
class VariantTable:
    """The per-variant results, in input order."""

    rows: tuple[VariantResult, ...]

    def to_columns(self) -> dict[str, list[object]]:
        """Column-oriented dict (``filters`` joined by ``;``, ``PASS`` when empty)."""
        names = [f for f in VariantResult.__slots__ if isinstance(f, str)]
        columns: dict[str, list[object]] = {name: [] for name in names}
        for row in self.rows:
            for name in names:
                value = getattr(row, name)
                if name == "filters":
                    value = ";".join(value) if value else "PASS"
                columns[name].append(value)
        return columns


@dataclass(frozen=True)
class SampleCall:
    """The sample-level MRD call (``sample_call.json``)."""

    decision: Decision
    p_value: float
    p_value_asymptotic: float
    lr_statistic: float
    tumor_fraction: float
    tumor_fraction_ci: tuple[float, float]
    informative_molecules: int
    informative_simplex: int
    informative_duplex: int
    alt_molecules: int
    n_variants: int
    n_variants_passing: int
    n_variants_with_alt: int
    n_outliers: int
    personal_lod: float | None  # None when compute_personal_lod is off
    qc: dict[str, dict[str, object]]
    thresholds: dict[str, float]
    profile_tumor_fraction: tuple[float, ...]
    profile_log_likelihood: tuple[float, ...]
    n_bootstrap: int = 0
    method: str = "INVAR-style binomial likelihood; parametric-bootstrap calibrated LR test"

    def __post_init__(self) -> None:
        if self.decision not in ("positive", "negative", "undetermined"):
            raise ValueError(
                f"decision must be positive/negative/undetermined; got {self.decision}"
            )
        if not 0.0 <= self.p_value <= 1.0:
            raise ValueError(f"p_value must be in [0, 1]; got {self.p_value}")
        low, high = self.tumor_fraction_ci
        if not 0.0 <= low <= self.tumor_fraction <= high <= 1.0:
            raise ValueError(f"need 0 <= ci_low <= tf <= ci_high <= 1; got {low}, {high}")
        if len(self.profile_tumor_fraction) != len(self.profile_log_likelihood):
            raise ValueError("profile arrays must have equal length")

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict (tuples become lists)."""
        data = asdict(self)
        data["tumor_fraction_ci"] = list(self.tumor_fraction_ci)
        data["profile_tumor_fraction"] = list(self.profile_tumor_fraction)
        data["profile_log_likelihood"] = list(self.profile_log_likelihood)
        return data


# --------------------------------------------------------------------------- likelihood maths


def _alt_probability(tf: FloatArray | float, af: FloatArray, e: FloatArray) -> FloatArray:
    return np.asarray(e + np.multiply.outer(tf, af * (1.0 - 2.0 * e)), dtype=np.float64)


def log_likelihood(
    tf: FloatArray | float, n: FloatArray, x: FloatArray, af: FloatArray, e: FloatArray
) -> FloatArray:
    """Binomial log-likelihood (up to a constant) at each ``tf`` (scalar or 1-D array)."""
    p = _alt_probability(tf, af, e)
    return np.asarray((x * np.log(p) + (n - x) * np.log1p(-p)).sum(axis=-1), dtype=np.float64)


def _batched_mle(n: FloatArray, x: FloatArray, af: FloatArray, e: FloatArray) -> FloatArray:
    """MLE of TF for each row of ``x`` (shape (B, L)); vectorised bisection on log TF."""
    d = af * (1.0 - 2.0 * e)

    def score(tf: FloatArray) -> FloatArray:
        p = e + tf[:, None] * d
        return np.asarray((d * (x / p - (n - x) / (1.0 - p))).sum(axis=1), dtype=np.float64)

    rows = x.shape[0]
    at_zero = score(np.zeros(rows)) <= 0.0
    at_one = score(np.full(rows, 1.0 - 1e-12)) >= 0.0
    lo = np.full(rows, _LOG_TF_MIN)
    hi = np.zeros(rows)
    for _ in range(45):
        mid = 0.5 * (lo + hi)
        positive = score(10.0**mid) > 0.0
        lo = np.where(positive, mid, lo)
        hi = np.where(positive, hi, mid)
    tf = 10.0 ** (0.5 * (lo + hi))
    tf = np.where(at_zero, 0.0, np.where(at_one, 1.0 - 1e-12, tf))
    return np.asarray(tf, dtype=np.float64)


def fit_tumor_fraction(n: FloatArray, x: FloatArray, af: FloatArray, e: FloatArray) -> float:
    """Maximum-likelihood TF on ``[0, 1]`` for loci with ``n`` molecules and ``x`` alt."""
    return float(_batched_mle(n, x[None, :], af, e)[0])


def _batched_lr(n: FloatArray, x: FloatArray, af: FloatArray, e: FloatArray) -> FloatArray:
    tf = _batched_mle(n, x, af, e)
    p1 = e + tf[:, None] * (af * (1.0 - 2.0 * e))
    ll1 = (x * np.log(p1) + (n - x) * np.log1p(-p1)).sum(axis=1)
    ll0 = (x * np.log(e) + (n - x) * np.log1p(-e)).sum(axis=1)
    return np.asarray(np.maximum(2.0 * (ll1 - ll0), 0.0), dtype=np.float64)


def profile_interval(
    n: FloatArray, x: FloatArray, af: FloatArray, e: FloatArray, mle: float
) -> tuple[float, float]:
    """95% profile-likelihood interval of TF (lower bound 0 at the boundary)."""
    lmax = float(log_likelihood(mle, n, x, af, e))

    def drop(tf: float) -> float:
        return float(log_likelihood(tf, n, x, af, e)) - (lmax - CHI2_95_HALF)

    low = 0.0 if drop(0.0) >= 0.0 else float(optimize.brentq(drop, 0.0, mle, xtol=1e-14))
    top = 1.0 - 1e-12
    high = top if drop(top) >= 0.0 else float(optimize.brentq(drop, mle, top, xtol=1e-14))
    return low, high


def benjamini_hochberg(p_values: FloatArray) -> FloatArray:
    """Benjamini-Hochberg q-values (step-up, monotone, capped at 1)."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.size == 0:
        return p.copy()
    order = np.argsort(p)
    ranked = p[order] * p.size / np.arange(1, p.size + 1)
    q_sorted = np.minimum.accumulate(ranked[::-1])[::-1]
    q = np.empty_like(p)
    q[order] = np.minimum(q_sorted, 1.0)
    return q


#: terms of the sum's distribution past ``observed`` added up for a small upper tail
_TAIL_TERMS = 64


def _upper_tail_sum(observed: int, parts: Sequence[tuple[int, float, float]]) -> float:
    """P(sum of independent BetaBinomial(n, a, b) >= observed).

    A small tail is summed term by term (``1 - P(S < observed)`` cancels to 0 below ~1e-16) over
    the :data:`_TAIL_TERMS` values from ``observed`` on, where the terms fall off fast (the
    background expects far fewer alt molecules than it is asked about); it never reports 0: a
    tail below the smallest normal double is reported as that bound.

    >>> p = _upper_tail_sum(30, [(20000, 2.0, 2e6)])  # 0.02 alt molecules expected, 30 seen
    >>> 1e-60 < p < 1e-58                              # (1 - P(S < 30) gives 0.0)
    True
    """
    if observed <= 0:
        return 1.0
    length = observed + _TAIL_TERMS
    k = np.arange(length)
    pmf = np.zeros(length)
    pmf[0] = 1.0
    for n, a, b in parts:
        if n == 0:
            continue
        part = stats.betabinom.pmf(k, n, a, b)
        pmf = np.convolve(pmf, part)[:length]
    below = float(pmf[:observed].sum())
    tail = float(pmf[observed:].sum())
    p_value = tail if tail < 0.5 else 1.0 - below
    return float(min(1.0, max(np.finfo(np.float64).tiny, p_value)))


# --------------------------------------------------------------------------- the caller


@dataclass(frozen=True)
class _Loci:
    """Flattened (locus, molecule type) columns of the passing loci."""

    n: FloatArray
    x: FloatArray
    af: FloatArray
    e: FloatArray
    alpha: FloatArray
    beta: FloatArray
    class_id: npt.NDArray[np.int64]  # 0..191: molecule type * 96 + SBS class


def _columns(
    indices: Sequence[int], variants: Sequence[VariantCounts], model: BackgroundModel
) -> _Loci:
    n, x, af, e, a, b, cls = [], [], [], [], [], [], []
    for i in indices:
        vc = variants[i]
        c = sbs96_index(vc.ref_context, vc.variant.alt)
        for m, (ni, xi) in zip(
            MoleculeType,
            ((vc.n_simplex, vc.alt_simplex), (vc.n_duplex, vc.alt_duplex)),
            strict=True,
        ):
            if ni == 0:
                continue
            rate, ra, rb = model.class_beta(c, m)
            n.append(ni)
            x.append(xi)
            af.append(vc.variant.tumor_af)
            e.append(rate)
            a.append(ra)
            b.append(rb)
            cls.append(int(m) * 96 + c)
    f = np.asarray
    return _Loci(
        f(n, dtype=np.float64),
        f(x, dtype=np.float64),
        f(af, dtype=np.float64),
        f(e, dtype=np.float64),
        f(a, dtype=np.float64),
        f(b, dtype=np.float64),
        f(cls, dtype=np.int64),
    )


def _draw_rates(
    loci: _Loci, model: BackgroundModel, size: int, rng: np.random.Generator
) -> FloatArray:
    """Locus rates (size, L): class rate from its posterior, shared by loci of the class, then
    the locus around it with the fitted locus concentration."""
    classes, inverse = np.unique(loci.class_id, return_inverse=True)
    m, c = classes // 96, classes % 96
    alpha, beta = model.calibration_beta()
    class_rates = rng.beta(alpha[m, c], beta[m, c], size=(size, classes.size))
    # NB: a Beta with a tiny alpha underflows to exactly 0, which the locus draw below rejects.
    rates = np.clip(class_rates[:, inverse], 1e-300, 0.5)
    tau = model.locus_concentration[loci.class_id // 96]
    finite = np.isfinite(tau)
    if finite.any():
        t = np.broadcast_to(np.where(finite, tau, 1.0), rates.shape)
        drawn = rng.beta(t * rates, t * (1.0 - rates))
        rates = np.where(finite[None, :], drawn, rates)
    return np.asarray(np.clip(rates, 1e-300, 0.5), dtype=np.float64)


def _outlier_p_values(
    loci_idx: Sequence[int], variants: Sequence[VariantCounts], model: BackgroundModel, tf: float
) -> FloatArray:
    out = np.ones(len(loci_idx))
    for j, i in enumerate(loci_idx):
        vc = variants[i]
        c = sbs96_index(vc.ref_context, vc.variant.alt)
        parts = []
        for m, ni in zip(MoleculeType, (vc.n_simplex, vc.n_duplex), strict=True):
            rate, ra, rb = model.class_beta(c, m, calibration=True)
            shift = tf * vc.variant.tumor_af
            mean = shift + (1.0 - shift) * rate
            var = (1.0 - shift) ** 2 * ra * rb / ((ra + rb) ** 2 * (ra + rb + 1.0))
            conc = max(mean * (1.0 - mean) / max(var, 1e-300) - 1.0, 1e-6)
            parts.append((ni, mean * conc, (1.0 - mean) * conc))
        out[j] = _upper_tail_sum(vc.alt, parts)
    return out


def _variant_filters(
    vc: VariantCounts, params: CallingParams, blocklist: Collection[str]
) -> list[str]:
    flags = []
    if vc.variant.key in blocklist:
        flags.append("blocklist")
    alt_oriented = vc.alt_forward + vc.alt_reverse
    total_oriented = vc.n_forward + vc.n_reverse
    if alt_oriented >= params.min_alt_for_filters and total_oriented > 0:
        expected = min(max(vc.n_forward / total_oriented, 1e-6), 1 - 1e-6)
        p = stats.binomtest(vc.alt_forward, alt_oriented, expected).pvalue
        if p < params.min_strand_bias_p_value:
            flags.append("strand_bias")
    dist = np.asarray(vc.alt_read_end_distances)
    if (
        dist.size >= params.min_alt_for_filters
        and (dist < params.read_end_window).mean() > params.max_read_end_fraction
    ):
        flags.append("read_end")
    covering = vc.informative + vc.n_low_mapq
    if covering > 0 and vc.n_low_mapq / covering > params.max_low_mapq_fraction:
        flags.append("low_mapq")
    return flags


def call_sample(
    variants: Sequence[VariantCounts],
    background: BackgroundModel,
    params: CallingParams,
    rng: np.random.Generator,
    *,
    blocklist: Collection[str] = (),
    background_opportunities: int | None = None,
) -> tuple[SampleCall, VariantTable]:
    """Per-variant tests and the sample call for one sample.

    ``background_opportunities``: simplex opportunities the model was fitted on (for the QC item);
    ``None`` takes them from ``background``.
    """
    nvar = len(variants)
    # per-variant p-values against the background alone
    p_values = np.ones(nvar)
    rates = np.zeros((nvar, 2))
    for i, vc in enumerate(variants):
        parts = []
        for m, ni in zip(MoleculeType, (vc.n_simplex, vc.n_duplex), strict=True):
            rates[i, m] = background.rate(vc.variant, vc.ref_context, m)[0]
            _, ra, rb = background.rate(vc.variant, vc.ref_context, m, calibration=True)
            parts.append((ni, ra, rb))
        p_values[i] = _upper_tail_sum(vc.alt, parts)
    q_values = benjamini_hochberg(p_values)
    filters = [_variant_filters(vc, params, blocklist) for vc in variants]

    # sample fit with iterative outlier removal
    passing = [i for i in range(nvar) if not filters[i] and variants[i].informative > 0]
    outlier_p = np.ones(nvar)
    n_outliers = 0
    max_removed = int(np.floor(params.max_outlier_fraction * len(passing)))
    while passing:
        loci = _columns(passing, variants, background)
        tf = fit_tumor_fraction(loci.n, loci.x, loci.af, loci.e)
        op = _outlier_p_values(passing, variants, background, tf)
        outlier_p[passing] = op
        worst = int(np.argmin(op))
        if op[worst] >= params.outlier_alpha / len(passing):
            break
        filters[passing[worst]].append("outlier")
        n_outliers += 1
        del passing[worst]
        if n_outliers > max_removed:
            break

    qc: dict[str, dict[str, object]] = {}
    loci = _columns(passing, variants, background)
    informative = int(loci.n.sum())
    simplex_inf = sum(variants[i].n_simplex for i in passing)
    duplex_inf = sum(variants[i].n_duplex for i in passing)
    qc["informative_molecules"] = {
        "passed": informative >= params.min_informative_molecules,
        "reason": f"{informative} informative molecules "
        f"(minimum {params.min_informative_molecules})",
    }
    qc["passing_variants"] = {
        "passed": len(passing) >= params.min_passing_variants,
        "reason": f"{len(passing)} of {nvar} variants pass filters "
        f"(minimum {params.min_passing_variants})",
    }
    outlier_fraction = n_outliers / max(1, n_outliers + len(passing))
    qc["outlier_fraction"] = {
        "passed": n_outliers <= max_removed,
        "reason": f"{n_outliers} outlier loci ({outlier_fraction:.0%}; maximum "
        f"{params.max_outlier_fraction:.0%}): more suggests contamination or a sample swap",
    }
    opp = (
        int(background.opportunities[MoleculeType.SIMPLEX].sum() // 3)
        if background_opportunities is None
        else background_opportunities
    )
    qc["background_opportunities"] = {
        "passed": opp >= params.min_background_opportunities,
        "reason": f"{opp} background opportunities (minimum {params.min_background_opportunities})",
    }

    if loci.n.size:
        tf = fit_tumor_fraction(loci.n, loci.x, loci.af, loci.e)
        ci = profile_interval(loci.n, loci.x, loci.af, loci.e, tf)
        lr = float(_batched_lr(loci.n, loci.x[None, :], loci.af, loci.e)[0])
        null_e = _draw_rates(loci, background, params.n_bootstrap, rng)
        null_x = rng.binomial(loci.n.astype(np.int64), null_e).astype(np.float64)
        null_lr = _batched_lr(loci.n, null_x, loci.af, loci.e)
        p_value = float((1 + np.sum(null_lr >= lr - 1e-9)) / (params.n_bootstrap + 1))
        p_asym = 0.5 * float(stats.chi2.sf(lr, 1)) if lr > 0 else 1.0
        lod = (
            _personal_lod(loci, background, params, null_lr, rng)
            if params.compute_personal_lod
            else None
        )
        grid = np.concatenate([[0.0], np.logspace(-7, 0, 85)])
        profile = log_likelihood(grid, loci.n, loci.x, loci.af, loci.e)
    else:
        tf, ci, lr, p_value, p_asym, lod = 0.0, (0.0, 1.0), 0.0, 1.0, 1.0, 1.0
        grid, profile = np.zeros(0), np.zeros(0)

    decision: Decision
    if not all(bool(item["passed"]) for item in qc.values()):
        decision = "undetermined"
    else:
        decision = "positive" if p_value <= params.alpha else "negative"
    alt_molecules = int(loci.x.sum())
    call = SampleCall(
        decision=decision,
        p_value=p_value,
        p_value_asymptotic=p_asym,
        lr_statistic=lr,
        tumor_fraction=tf,
        tumor_fraction_ci=(min(ci[0], tf), max(ci[1], tf)),
        informative_molecules=informative,
        informative_simplex=simplex_inf,
        informative_duplex=duplex_inf,
        alt_molecules=alt_molecules,
        n_variants=nvar,
        n_variants_passing=len(passing),
        n_variants_with_alt=sum(1 for i in passing if variants[i].alt > 0),
        n_outliers=n_outliers,
        personal_lod=lod,
        qc=qc,
        thresholds={
            "alpha": params.alpha,
            "min_informative_molecules": float(params.min_informative_molecules),
            "outlier_alpha": params.outlier_alpha,
            "lod_detection_probability": params.lod_detection_probability,
        },
        profile_tumor_fraction=tuple(float(v) for v in grid),
        profile_log_likelihood=tuple(float(v) for v in profile),
        n_bootstrap=params.n_bootstrap if loci.n.size else 0,
    )
    rows = []
    for i, vc in enumerate(variants):
        v = vc.variant
        rows.append(
            VariantResult(
                chrom=v.chrom,
                pos=v.pos,
                ref=v.ref,
                alt=v.alt,
                tumor_af=v.tumor_af,
                ref_context=vc.ref_context,
                sbs_class=SBS96_CLASSES[sbs96_index(vc.ref_context, v.alt)],
                informative_simplex=vc.n_simplex,
                alt_simplex=vc.alt_simplex,
                informative_duplex=vc.n_duplex,
                alt_duplex=vc.alt_duplex,
                background_rate_simplex=float(rates[i, 0]),
                background_rate_duplex=float(rates[i, 1]),
                p_value=float(p_values[i]),
                q_value=float(q_values[i]),
                outlier_p_value=float(outlier_p[i]),
                filters=tuple(filters[i]),
            )
        )
    return call, VariantTable(tuple(rows))


def _critical_lr(null_lr: FloatArray, alpha: float) -> float:
    """Smallest threshold c such that LR > c gives a bootstrap p-value <= alpha."""
    b = null_lr.size
    k = int(np.floor(alpha * (b + 1) - 1))  # allowed null replicates at or above the LR
    if k < 0:
        return float("inf")
    desc = np.sort(null_lr)[::-1]
    return float(desc[k]) if k < b else 0.0


def _personal_lod(
    loci: _Loci,
    model: BackgroundModel,
    params: CallingParams,
    null_lr: FloatArray,
    rng: np.random.Generator,
) -> float:
    """Smallest TF with detection probability >= target (common random numbers, bisection)."""
    crit = _critical_lr(null_lr, params.alpha)
    if not np.isfinite(crit):
        return 1.0
    sims = params.n_lod_simulations
    e = _draw_rates(loci, model, sims, rng)
    u = rng.random(e.shape)

    def detection(tf: float) -> float:
        p = e + tf * loci.af * (1.0 - 2.0 * e)
        x = stats.binom.ppf(u, loci.n, p)
        return float(np.mean(_batched_lr(loci.n, x, loci.af, loci.e) > crit))

    target = params.lod_detection_probability
    lo, hi = -8.0, 0.0
    if detection(10.0**hi) < target:
        return 1.0
    if detection(10.0**lo) >= target:
        return float(10.0**lo)
    for _ in range(12):  # 8 decades / 2**12: 0.5% precision on TF
        mid = 0.5 * (lo + hi)
        if detection(10.0**mid) >= target:
            hi = mid
        else:
            lo = mid
    return float(10.0**hi)


__all__ = [
    "CallingParams",
    "Evidence",
    "SampleCall",
    "VariantCounts",
    "VariantResult",
    "VariantTable",
    "benjamini_hochberg",
    "call_sample",
    "fit_tumor_fraction",
    "log_likelihood",
    "profile_interval",
]
