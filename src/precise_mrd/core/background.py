"""Background error model: post-consensus substitution rates in trinucleotide context.

A tracked variant is only informative against the rate at which the assay itself produces the same
substitution. That rate is measured on the *non-variant* positions of the targets (the tracked
positions and a small window around them are never used, see ``pipeline/evidence.py``) and depends
strongly on the substitution class and its flanking bases (C>T at CpG from deamination, G>T from
8-oxoG damage, ...) and on whether the molecule was read as a duplex.

Classes. The 96 SBS classes collapse a substitution onto its pyrimidine reference base (``C`` or
``T``): ``A[C>T]G`` is index ``sbs96_index("ACG", "T")``; a purine reference is reverse-complemented
together with its alternate and flanks (``CGT`` G>A is ``A[C>T]G``). Opportunities are counted per
32 trinucleotide contexts; the three classes of a context share its opportunities.

Strand awareness. Counts are also split by **template orientation**: whether the pyrimidine
reference base lies on the strand that read 1 of the molecule was sequenced from (orientation 0)
or on the opposite strand (orientation 1). Read 1 and read 2 of one molecule therefore share one
orientation, so mates never split a molecule. Damage such as 8-oxoG (G>T on the read-1 strand)
shows up as an orientation imbalance of ``[C>A]`` rates (:meth:`BackgroundModel.orientation_rates`).
Calling uses the orientation-collapsed rate because per-variant evidence is not split by
orientation; the split is kept for QC and the report.

Estimation, per molecule type (simplex, duplex) and class:

* Jeffreys posterior ``Beta(x + 1/2, n - x + 1/2)`` for the raw rate and its 95% interval;
* empirical-Bayes shrinkage: prior ``Beta(k*m, k*(1-m))`` with mean ``m`` = the pooled rate of the
  molecule type (or the class rate of a normal panel when ``prior_counts`` is given) and strength
  ``k`` chosen by maximising the beta-binomial marginal likelihood over all classes; sparse classes
  move toward ``m``, well-measured ones keep their own rate;
* a floor (``rate_floor``) so that no rate is exactly 0;
* locus-level overdispersion: per-position error counts give a concentration ``tau`` of the spread
  of locus rates around their class rate; :meth:`BackgroundModel.rate` returns a Beta whose variance
  is the posterior variance plus that locus variance, which the caller turns into beta-binomial
  p-values and a calibrated sample-level test.

>>> import numpy as np
>>> sbs96_index("ACG", "T") == sbs96_index("CGT", "A")
True
>>> SBS96_CLASSES[sbs96_index("ACG", "T")]
'A[C>T]G'
>>> counts = BackgroundCounts.empty()
>>> counts.errors[0, 0, sbs96_index("ACG", "T")] = 30
>>> counts.opportunities[0, 0, context_index("ACG")[0]] = 100_000
>>> model = BackgroundModel.fit(counts)
>>> from precise_mrd.core.records import Variant
>>> rate, alpha, beta = model.rate(Variant("chr1", 10, "C", "T"), "ACG", MoleculeType.SIMPLEX)
>>> 1e-4 < rate < 4e-4
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
import numpy.typing as npt
from scipy import special, stats

from precise_mrd.core.records import Variant

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

BASES = "ACGT"
_COMPLEMENT = str.maketrans("ACGTN", "TGCAN")
SUBSTITUTIONS = ("C>A", "C>G", "C>T", "T>A", "T>C", "T>G")
N_CONTEXTS = 32
N_CLASSES = 96
N_ORIENTATIONS = 2
N_MOLECULE_TYPES = 2


class MoleculeType(IntEnum):
    """Index of a consensus molecule type in every count array."""

    SIMPLEX = 0  # one strand only (or a duplex molecule with bD == 0)
    DUPLEX = 1  # both strands seen (aD > 0 and bD > 0)


def _reverse_complement(seq: str) -> str:
    return seq.translate(_COMPLEMENT)[::-1]


def context_index(trinucleotide: str) -> tuple[int, bool]:
    """Index 0..31 of a trinucleotide in pyrimidine orientation, and whether it was flipped.

    Index = 16 * (centre is T) + 4 * five_prime + three_prime, bases in ``ACGT`` order, after
    reverse-complementing a purine centre.

    >>> context_index("ACA"), context_index("TGT")
    ((0, False), (0, True))
    """
    tri = trinucleotide.upper()
    if len(tri) != 3 or any(b not in BASES for b in tri):
        raise ValueError(f"trinucleotide must be 3 bases of ACGT; got {trinucleotide!r}")
    flipped = tri[1] in "AG"
    if flipped:
        tri = _reverse_complement(tri)
    return 16 * (tri[1] == "T") + 4 * BASES.index(tri[0]) + BASES.index(tri[2]), flipped


def sbs96_index(ref_context: str, alt: str) -> int:
    """Index 0..95 of the SBS class of ``ref_context`` (3 reference bases) mutated to ``alt``."""
    ctx, flipped = context_index(ref_context)
    if alt not in BASES or alt == ref_context[1].upper():
        raise ValueError(f"alt must be a base of ACGT other than the centre; got {alt!r}")
    alt_p = alt.translate(_COMPLEMENT) if flipped else alt
    centre = "T" if ctx >= 16 else "C"
    sub = SUBSTITUTIONS.index(f"{centre}>{alt_p}")
    return 16 * sub + (ctx % 16)


def class_context(class_index: IntArray | int) -> IntArray:
    """Context index (0..31) of SBS class indices (0..95)."""
    cls = np.asarray(class_index, dtype=np.int64)
    return np.asarray(16 * (cls // 48) + cls % 16, dtype=np.int64)


SBS96_CLASSES: tuple[str, ...] = tuple(
    f"{BASES[(i % 16) // 4]}[{SUBSTITUTIONS[i // 16]}]{BASES[i % 4]}" for i in range(N_CLASSES)
)


@dataclass(frozen=True, eq=False)
class BackgroundCounts:
    """Error and opportunity counts at non-variant target positions (molecules, not reads).

    ``errors[m, o, c]``: molecules of type ``m`` (:class:`MoleculeType`), template orientation ``o``
    (module docstring) showing SBS class ``c`` (0..95). ``opportunities[m, o, k]``: molecules with a
    confident base (any base) at a position of pyrimidine context ``k`` (0..31).
    ``position_context[j]``, ``position_errors[m, j]``, ``position_opportunities[m, j]``: the same
    per target position (orientation and alternate collapsed), used for locus-level dispersion.
    """

    errors: IntArray
    opportunities: IntArray
    position_context: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    position_errors: IntArray = field(default_factory=lambda: np.zeros((2, 0), dtype=np.int64))
    position_opportunities: IntArray = field(
        default_factory=lambda: np.zeros((2, 0), dtype=np.int64)
    )

    def __post_init__(self) -> None:
        if self.errors.shape != (N_MOLECULE_TYPES, N_ORIENTATIONS, N_CLASSES):
            raise ValueError(f"errors must have shape (2, 2, 96); got {self.errors.shape}")
        if self.opportunities.shape != (N_MOLECULE_TYPES, N_ORIENTATIONS, N_CONTEXTS):
            raise ValueError(
                f"opportunities must have shape (2, 2, 32); got {self.opportunities.shape}"
            )
        k = self.position_context.shape[0]
        for name in ("position_errors", "position_opportunities"):
            shape = getattr(self, name).shape
            if shape != (N_MOLECULE_TYPES, k):
                raise ValueError(f"{name} must have shape (2, {k}); got {shape}")
        if (self.errors < 0).any() or (self.opportunities < 0).any():
            raise ValueError("counts must be >= 0")
        ctx_err = self.errors.reshape(2, 2, 6, 16)
        ctx_err = np.concatenate(
            [ctx_err[:, :, :3].sum(axis=2), ctx_err[:, :, 3:].sum(axis=2)], axis=2
        )
        if (ctx_err > self.opportunities).any():
            raise ValueError("errors of a context exceed its opportunities")

    @classmethod
    def empty(cls) -> BackgroundCounts:
        """All-zero counts, to be filled or merged."""
        return cls(
            errors=np.zeros((2, 2, N_CLASSES), dtype=np.int64),
            opportunities=np.zeros((2, 2, N_CONTEXTS), dtype=np.int64),
        )

    def merge(self, other: BackgroundCounts) -> BackgroundCounts:
        """Sum of two count sets (positions are concatenated)."""
        return BackgroundCounts(
            errors=self.errors + other.errors,
            opportunities=self.opportunities + other.opportunities,
            position_context=np.concatenate([self.position_context, other.position_context]),
            position_errors=np.concatenate([self.position_errors, other.position_errors], axis=1),
            position_opportunities=np.concatenate(
                [self.position_opportunities, other.position_opportunities], axis=1
            ),
        )

    def class_opportunities(self) -> IntArray:
        """Opportunities per (molecule type, orientation, class): those of the class's context."""
        return np.asarray(self.opportunities[:, :, class_context(np.arange(N_CLASSES))])


def _eb_strength(x: FloatArray, n: FloatArray, mean: FloatArray) -> float:
    """Prior strength maximising the beta-binomial marginal likelihood (grid on log scale)."""
    grid = np.logspace(1, 10, 46)
    keep = n > 0
    if not keep.any():
        return float(grid[-1])
    # identical (x, n, mean) rows contribute identically: evaluate each once, weighted
    rows, weight = np.unique(
        np.stack([x[keep], n[keep], mean[keep]], axis=1), axis=0, return_counts=True
    )
    x, n, mean = rows[:, 0], rows[:, 1], rows[:, 2]
    a = grid[:, None] * mean[None, :]
    b = grid[:, None] * (1.0 - mean[None, :])
    loglik = ((special.betaln(a + x, b + n - x) - special.betaln(a, b)) * weight).sum(axis=1)
    return float(grid[int(np.argmax(loglik))])


@dataclass(frozen=True, eq=False)
class BackgroundModel:
    """Fitted per-class rates; build with :meth:`fit`.

    ``alpha[m, c]``, ``beta[m, c]``: shrunk Beta posterior of class ``c`` for molecule type ``m``.
    ``jeffreys_low/high[m, c]``: 95% Jeffreys interval of the raw class rate. ``pooled_rate[m]``:
    per-alternate rate of all classes together. ``prior_strength[m]``: the empirical-Bayes ``k``.
    ``locus_concentration[m]``: ``tau`` of locus-to-locus spread (``inf`` when none detected).
    """

    alpha: FloatArray
    beta: FloatArray
    jeffreys_low: FloatArray
    jeffreys_high: FloatArray
    errors: IntArray
    opportunities: IntArray
    orientation_errors: IntArray
    orientation_opportunities: IntArray
    pooled_rate: FloatArray
    prior_strength: FloatArray
    locus_concentration: FloatArray
    rate_floor: float
    prior_rate: FloatArray | None = None  # (2, 96): the mean each class was shrunk towards

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "jeffreys_low", "jeffreys_high", "errors", "opportunities"):
            if getattr(self, name).shape != (N_MOLECULE_TYPES, N_CLASSES):
                raise ValueError(f"{name} must have shape (2, 96)")
        if not (self.alpha > 0).all() or not (self.beta > 0).all():
            raise ValueError("Beta posterior parameters must be > 0")
        if not 0.0 < self.rate_floor < 0.1:
            raise ValueError(f"rate_floor must be in (0, 0.1); got {self.rate_floor}")

    @classmethod
    def fit(
        cls,
        counts: BackgroundCounts,
        *,
        prior_counts: BackgroundCounts | None = None,
        rate_floor: float = 1e-7,
        default_rates: tuple[float, float] = (1e-4, 1e-5),
    ) -> BackgroundModel:
        """Fit the model from ``counts`` (never from tracked positions).

        ``prior_counts``: counts from a panel of normal samples; their per-class Jeffreys means
        become the shrinkage targets. ``default_rates`` (simplex, duplex) are used as the pooled
        rate only when a molecule type has no opportunities at all.
        """
        x_all = counts.errors.sum(axis=1).astype(np.float64)  # (2, 96)
        n_all = counts.class_opportunities().sum(axis=1).astype(np.float64)
        pooled = np.empty(2)
        strength = np.empty(2)
        alpha = np.empty((2, N_CLASSES))
        beta = np.empty((2, N_CLASSES))
        targets = np.empty((2, N_CLASSES))
        for m in range(N_MOLECULE_TYPES):
            total_opp = counts.opportunities[m].sum()
            if total_opp > 0:
                pooled[m] = (x_all[m].sum() + 0.5) / (3.0 * total_opp + 1.0)
            else:
                pooled[m] = default_rates[m]
            pooled[m] = max(pooled[m], rate_floor)
            if prior_counts is not None:
                px = prior_counts.errors[m].sum(axis=0).astype(np.float64)
                pn = prior_counts.class_opportunities()[m].sum(axis=0).astype(np.float64)
                target = np.where(pn > 0, (px + 0.5) / (pn + 1.0), pooled[m])
            else:
                target = np.full(N_CLASSES, pooled[m])
            target = np.clip(target, rate_floor, 0.5)
            targets[m] = target
            strength[m] = _eb_strength(x_all[m], n_all[m], target)
            alpha[m] = strength[m] * target + x_all[m]
            beta[m] = strength[m] * (1.0 - target) + n_all[m] - x_all[m]
            # NB: the floor acts on the posterior mean; alpha is raised, beta kept.
            mean = alpha[m] / (alpha[m] + beta[m])
            low = mean < rate_floor
            alpha[m, low] = rate_floor * beta[m, low] / (1.0 - rate_floor)
        jl = stats.beta.ppf(0.025, x_all + 0.5, n_all - x_all + 0.5)
        jh = stats.beta.ppf(0.975, x_all + 0.5, n_all - x_all + 0.5)
        jl = np.where(x_all > 0, jl, 0.0)
        model_no_tau = alpha / (alpha + beta)
        tau = np.array(
            [
                _locus_concentration(counts, model_no_tau[m], m, rate_floor)
                for m in range(N_MOLECULE_TYPES)
            ]
        )
        return cls(
            alpha=alpha,
            beta=beta,
            jeffreys_low=np.asarray(jl, dtype=np.float64),
            jeffreys_high=np.asarray(jh, dtype=np.float64),
            errors=counts.errors.sum(axis=1),
            opportunities=counts.class_opportunities().sum(axis=1),
            orientation_errors=counts.errors.copy(),
            orientation_opportunities=counts.class_opportunities(),
            pooled_rate=pooled,
            prior_strength=strength,
            locus_concentration=tau,
            rate_floor=rate_floor,
            prior_rate=targets,
        )

    @property
    def class_rates(self) -> FloatArray:
        """Posterior mean rate per (molecule type, class)."""
        return np.asarray(self.alpha / (self.alpha + self.beta), dtype=np.float64)

    def calibration_beta(self) -> tuple[FloatArray, FloatArray]:
        """Beta parameters (2, 96) used to *test*: the unshrunk Jeffreys posterior of every class
        with at least one expected error (``opportunities * pooled_rate >= 1``), else the shrunk
        one.

        # NB: shrinkage biases classes far from the pooled rate (CpG C>T, 8-oxoG) toward it; a
        # test calibrated on the shrunk posterior inherits that bias and is anti-conservative.
        """
        x = self.errors.astype(np.float64)
        n = self.opportunities.astype(np.float64)
        informative = n * self.pooled_rate[:, None] >= 1.0
        a = np.where(informative, x + 0.5, self.alpha)
        b = np.where(informative, n - x + 0.5, self.beta)
        return np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)

    def class_beta(
        self, class_index: int, molecule_type: MoleculeType, *, calibration: bool = False
    ) -> tuple[float, float, float]:
        """``(rate, alpha, beta)`` of a class, with locus-level spread added (moment-matched).

        ``calibration=True`` starts from :meth:`calibration_beta` instead of the shrunk posterior.
        """
        if calibration:
            ca, cb = self.calibration_beta()
            a = float(ca[molecule_type, class_index])
            b = float(cb[molecule_type, class_index])
        else:
            a = float(self.alpha[molecule_type, class_index])
            b = float(self.beta[molecule_type, class_index])
        mean = a / (a + b)
        var = a * b / ((a + b) ** 2 * (a + b + 1.0))
        tau = float(self.locus_concentration[molecule_type])
        if np.isfinite(tau):
            var += mean * (1.0 - mean) / (tau + 1.0)
        concentration = mean * (1.0 - mean) / var - 1.0
        return mean, mean * concentration, (1.0 - mean) * concentration

    def rate(
        self,
        variant: Variant,
        ref_context: str,
        molecule_type: MoleculeType,
        *,
        calibration: bool = False,
    ) -> tuple[float, float, float]:
        """``(rate, alpha, beta)`` of ``variant``'s substitution in ``ref_context`` (the 3
        reference bases centred on it) for one molecule type.

        ``rate`` is the shrunk posterior mean; ``Beta(alpha, beta)`` carries both the estimation
        uncertainty of the class and the locus-to-locus spread (used for beta-binomial tests).
        """
        if len(ref_context) != 3 or ref_context[1].upper() != variant.ref:
            raise ValueError(
                f"ref_context must be 3 bases centred on {variant.ref}; got {ref_context!r}"
            )
        return self.class_beta(
            sbs96_index(ref_context, variant.alt), molecule_type, calibration=calibration
        )

    def orientation_rates(self) -> FloatArray:
        """Jeffreys-mean rate per (molecule type, orientation, class) for strand-damage QC."""
        x = self.orientation_errors.astype(np.float64)
        n = self.orientation_opportunities.astype(np.float64)
        return np.asarray((x + 0.5) / (n + 1.0), dtype=np.float64)

    def class_table(self) -> list[dict[str, object]]:
        """One row per (molecule type, class) for reports: the model's ``rate``, the observed
        ``errors``/``opportunities`` with their Jeffreys interval, the ``prior_rate`` the class
        was shrunk towards and ``from_prior``: fewer than one error was expected there at the
        pooled rate, so the rate is the prior's, not a measurement (the classes the calibrated
        test also takes from the shrunk posterior, see :meth:`calibration_beta`)."""
        rates = self.class_rates
        prior = self.prior_rate if self.prior_rate is not None else rates
        from_prior = self.opportunities * self.pooled_rate[:, None] < 1.0
        rows: list[dict[str, object]] = []
        for m in MoleculeType:
            for c in range(N_CLASSES):
                rows.append(
                    {
                        "molecule_type": m.name.lower(),
                        "sbs_class": SBS96_CLASSES[c],
                        "errors": int(self.errors[m, c]),
                        "opportunities": int(self.opportunities[m, c]),
                        "rate": float(rates[m, c]),
                        "ci_low": float(self.jeffreys_low[m, c]),
                        "ci_high": float(self.jeffreys_high[m, c]),
                        "prior_rate": float(prior[m, c]),
                        "from_prior": bool(from_prior[m, c]),
                    }
                )
        return rows


def _locus_concentration(
    counts: BackgroundCounts, class_rate: FloatArray, m: int, rate_floor: float
) -> float:
    """Empirical-Bayes concentration of per-position rates around their context rate."""
    n = counts.position_opportunities[m].astype(np.float64)
    if n.size == 0 or n.sum() == 0:
        return float("inf")
    x = counts.position_errors[m].astype(np.float64)
    if x.sum() == 0:
        return float("inf")  # no error anywhere: no spread between loci can be seen
    ctx_rate = class_rate.reshape(6, 16)
    per_ctx = np.concatenate([ctx_rate[:3].sum(axis=0), ctx_rate[3:].sum(axis=0)])
    mean = np.clip(per_ctx[counts.position_context], rate_floor, 0.5)
    tau = _eb_strength(x, n, mean)
    return float("inf") if tau >= 1e10 * 0.999 else tau
