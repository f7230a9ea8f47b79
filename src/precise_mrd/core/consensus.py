"""Consensus base calling for UMI families, in the style of fgbio's vanilla and duplex callers.

A *family* is the set of raw reads that were copied (by PCR) from one strand of one original
molecule and that cover the same end of it with the same alignment, so that column ``i`` of every
read is the same template base. For each column the caller asks: which base ``B`` in ``ACGT`` was
on the molecule?

1. Every raw base of quality ``q`` is trusted a little less than its Phred score says, because the
   copy it was read from may itself carry a PCR error made *after* the UMI was attached. The two
   error chances combine as independent trials (fgbio's ``probabilityOfErrorTwoTrials``)::

       e = p_q + p_post - 4/3 * p_q * p_post    (p_q = 10^(-q/10); p_post from error_rate_post_umi)

   An error turns the base into one of the three others with equal chance.
2. The log-likelihood of each candidate ``B`` sums ``log(1 - e)`` over reads that show ``B`` and
   ``log(e / 3)`` over reads that show another base. Bases that are ``N`` or whose quality is below
   ``min_input_base_quality`` are ignored. With a flat prior the posterior of the best base is its
   normalised likelihood, and ``1 - posterior`` is the consensus error probability.
3. Errors made before the UMI was attached (in the first copy, or damage) are copied into every
   read of the family and cannot be seen; ``error_rate_pre_umi`` is combined with the consensus
   error in the same two-trials way, which caps the quality near ``error_rate_pre_umi``.
4. A column without usable bases, or where two bases tie, is a no-call: ``N`` with quality 2.
   Qualities are floored to an integer and capped at ``max_consensus_quality``; a consensus base
   with quality below ``min_consensus_base_quality`` is masked to ``N``/2.

A **duplex** molecule has a single-strand consensus from each of its two strands (``/A`` and
``/B``). Per column (fgbio's ``DuplexConsensusCaller``): if either strand is ``N`` the duplex base
is ``N``; if they agree the qualities add (capped); if they disagree the base with the higher
quality wins with quality ``high - low``; a tie is ``N``. A PCR error on one strand's first copy,
present in all of that strand's reads, therefore cannot pass as a confident duplex base.

Everything here is vectorised over many families at once: reads are rows of a 2-D ``uint8`` array
(bases coded ``A=0 C=1 G=2 T=3 N=4``, padded with ``N``), families are contiguous row ranges given
by their start ``offsets``, and all per-family sums are one :func:`numpy.bincount`.

Three agreeing Q30 reads give a quality bounded by the pre-UMI error rate (Q45):

>>> params = ConsensusParams()
>>> reads = encode_bases([b"ACGT", b"ACGT", b"ACGT"])
>>> quals = np.full((3, 4), 30, dtype=np.uint8)
>>> result = call_families(reads, quals, np.array([0]), params)
>>> decode_bases(result.bases[0]), result.quals[0].tolist(), result.depths[0].tolist()
('ACGT', [45, 45, 45, 45], [3, 3, 3, 3])

One read disagreeing at the last base lowers that quality; its error is counted:

>>> reads = encode_bases([b"ACGT", b"ACGT", b"ACGA"])
>>> result = call_families(reads, quals, np.array([0]), params)
>>> decode_bases(result.bases[0]), result.quals[0].tolist(), result.errors[0].tolist()
('ACGT', [45, 45, 45, 33], [0, 0, 0, 1])

Duplex: agreement adds qualities, disagreement subtracts, a tie is ``N``:

>>> bases, q = combine_duplex(encode_bases([b"AAC"]), np.array([[30, 30, 30]], dtype=np.uint8),
...                           encode_bases([b"ATG"]), np.array([[40, 20, 30]], dtype=np.uint8),
...                           params)
>>> decode_bases(bases[0]), q[0].tolist()
('AAN', [70, 10, 2])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import numpy as np
import numpy.typing as npt

from precise_mrd.core.consensus_kernels import (
    duplex_rows,
    errors_against,
    family_likelihoods,
    finish_columns,
    posterior_errors,
)

PhredScore: TypeAlias = int
"""A Phred-scaled quality or error rate: ``-10 * log10(p_error)``."""

U8Array: TypeAlias = npt.NDArray[np.uint8]
I32Array: TypeAlias = npt.NDArray[np.int32]
I64Array: TypeAlias = npt.NDArray[np.int64]

NO_CALL: int = 4
"""Code of ``N`` (and of padding) in the 0..4 base coding."""
NO_CALL_QUALITY: PhredScore = 2
"""Quality given to every ``N`` consensus base (fgbio's ``NoCallQual``)..."""
NOT_ENOUGH_READS_QUALITY: PhredScore = 0
"""...except one masked for too few raw bases (fgbio's ``NotEnoughReadsQual``)."""
MAX_PHRED: PhredScore = 93
"""Largest quality a SAM/BAM record can carry as a printable character."""
_COUNT_UNIT = float(2**20)
_MAX_FAMILY_READS = 90_000

_CODE_OF_ASCII = np.full(256, NO_CALL, dtype=np.uint8)
for _code, _letter in enumerate("ACGT"):
    _CODE_OF_ASCII[ord(_letter)] = _code
    _CODE_OF_ASCII[ord(_letter.lower())] = _code
_ASCII_OF_CODE = np.frombuffer(b"ACGTN", dtype=np.uint8)


def encode_bases(seqs: Sequence[bytes]) -> U8Array:
    """Encode equal-length ASCII sequences as a 2-D array of codes (``A=0 C=1 G=2 T=3``, else 4).

    >>> encode_bases([b"ACGTN", b"acgtx"]).tolist()
    [[0, 1, 2, 3, 4], [0, 1, 2, 3, 4]]
    """
    flat = np.frombuffer(b"".join(seqs), dtype=np.uint8)
    width = len(seqs[0]) if seqs else 0
    return _CODE_OF_ASCII[flat].reshape(len(seqs), width)


def encode_ascii(flat: U8Array) -> U8Array:
    """Map ASCII base letters (any shape) to codes 0..4."""
    return _CODE_OF_ASCII[flat]


def decode_bases(codes: U8Array) -> str:
    """Decode a 1-D array of base codes to a string (``4`` becomes ``N``).

    >>> decode_bases(np.array([0, 1, 2, 3, 4], dtype=np.uint8))
    'ACGTN'
    """
    return _ASCII_OF_CODE[codes].tobytes().decode("ascii")


def decode_ascii(codes: U8Array) -> U8Array:
    """Map base codes (any shape) back to ASCII letters as ``uint8``."""
    return _ASCII_OF_CODE[codes]


def phred_to_probability(phred: float | npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``10 ** (-phred / 10)``.

    >>> float(phred_to_probability(30))
    0.001
    """
    return np.asarray(np.power(10.0, -np.asarray(phred, dtype=np.float64) / 10.0))


def probability_of_error_two_trials(
    p1: float | npt.NDArray[np.float64], p2: float | npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Probability that a base is wrong after two independent error chances ``p1`` and ``p2``.

    Exactly one error, or two errors that do not restore the original base (2 of 3 ways):
    ``p1 (1 - p2) + p2 (1 - p1) + 2/3 p1 p2 = p1 + p2 - 4/3 p1 p2``.

    >>> round(float(probability_of_error_two_trials(0.001, 0.0001)), 10)
    0.0010998667
    """
    a = np.asarray(p1, dtype=np.float64)
    b = np.asarray(p2, dtype=np.float64)
    return np.asarray(a + b - (4.0 / 3.0) * a * b)


def probability_to_phred(p_error: npt.NDArray[np.float64], cap: PhredScore) -> U8Array:
    """Phred score of an error probability, floored with fgbio's 0.001 tolerance, and capped."""
    with np.errstate(divide="ignore"):
        phred = -10.0 * np.log10(np.maximum(p_error, 1e-300))
    return np.minimum(np.floor(phred + 1e-3), cap).astype(np.uint8)


OVERLAP_MODES: Final = ("per_read_pair", "per_consensus")
"""Where overlapping mates are reconciled: in each raw read pair before the family consensus
(fgbio's ``--consensus-call-overlapping-bases``), or in the finished R1 and R2 consensus."""


@dataclass(frozen=True, slots=True)
class ConsensusParams:
    """Settings of the consensus caller (names and defaults follow fgbio).

    ``min_reads`` is ``(total, larger strand, smaller strand)`` as fgbio duplex ``--min-reads``:
    a duplex molecule needs at least ``total`` reads over both strands, ``larger strand`` reads on
    its better-covered strand and ``smaller strand`` on the other (0 keeps single-strand
    molecules). A simplex molecule (no ``/A``/``/B``) uses ``total`` only. Reads are counted as
    read pairs (templates) per strand.

    >>> ConsensusParams(min_reads=(2, 1, 1)).min_reads
    (2, 1, 1)
    >>> ConsensusParams(min_reads=(1, 2, 0))
    Traceback (most recent call last):
    ...
    ValueError: min_reads must be non-increasing (total >= strand >= other strand); got (1, 2, 0)
    """

    error_rate_pre_umi: PhredScore = 45
    error_rate_post_umi: PhredScore = 40
    min_input_base_quality: PhredScore = 10
    min_consensus_base_quality: PhredScore = 2
    min_reads: tuple[int, int, int] = (1, 1, 0)
    max_consensus_quality: PhredScore = 90
    overlap: str = "per_consensus"

    def __post_init__(self) -> None:
        for name in ("error_rate_pre_umi", "error_rate_post_umi"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 1 <= value <= MAX_PHRED:
                raise ValueError(f"{name} must be a Phred score in [1, {MAX_PHRED}]; got {value!r}")
        for name in ("min_input_base_quality", "min_consensus_base_quality"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value <= MAX_PHRED:
                raise ValueError(f"{name} must be a Phred score in [0, {MAX_PHRED}]; got {value!r}")
        cap = self.max_consensus_quality
        if not isinstance(cap, int) or not NO_CALL_QUALITY < cap <= MAX_PHRED:
            raise ValueError(
                f"max_consensus_quality must be in ({NO_CALL_QUALITY}, {MAX_PHRED}]; got {cap!r}"
            )
        if self.overlap not in OVERLAP_MODES:
            modes = ", ".join(OVERLAP_MODES)
            raise ValueError(f"overlap must be one of {modes}; got {self.overlap!r}")
        reads = self.min_reads
        if (
            not isinstance(reads, tuple)
            or len(reads) != 3
            or not all(isinstance(n, int) and n >= 0 for n in reads)
        ):
            raise ValueError(f"min_reads must be a tuple of three integers >= 0; got {reads!r}")
        if reads[0] < 1:
            raise ValueError(f"min_reads[0] (total reads) must be >= 1; got {reads!r}")
        if not reads[0] >= reads[1] >= reads[2]:
            raise ValueError(
                f"min_reads must be non-increasing (total >= strand >= other strand); got {reads!r}"
            )

    def passes_min_reads(
        self, n_a: I64Array, n_b: I64Array, is_duplex: npt.NDArray[np.bool_]
    ) -> npt.NDArray[np.bool_]:
        """Vectorised ``min_reads`` test for molecules with ``n_a``/``n_b`` reads per strand.

        >>> p = ConsensusParams(min_reads=(3, 2, 1))
        >>> p.passes_min_reads(np.array([2, 3, 3]), np.array([1, 0, 0]),
        ...                    np.array([True, True, False])).tolist()
        [True, False, True]
        """
        total = n_a + n_b
        high = np.maximum(n_a, n_b)
        low = np.minimum(n_a, n_b)
        duplex_ok = (total >= self.min_reads[0]) & (high >= self.min_reads[1])
        duplex_ok &= low >= self.min_reads[2]
        simplex_ok = total >= self.min_reads[0]
        return np.where(is_duplex, duplex_ok, simplex_ok)


@dataclass(frozen=True)
class FamilyConsensus:
    """Single-strand consensus of ``n`` families, each padded to ``width`` columns.

    ``bases``/``quals`` are the called consensus (``N``/2 where masked); ``raw_bases`` is the most
    likely base before masking (``N`` only without coverage), which raw-read errors are counted
    against; ``counts[f, b, i]`` is how many usable raw bases of family ``f`` show base ``b`` at
    column ``i``; ``depths`` is their sum and ``errors`` the raw bases that differ from
    ``raw_bases``.
    """

    bases: U8Array
    quals: U8Array
    raw_bases: U8Array
    counts: I32Array
    depths: I32Array
    errors: I32Array


def _weight_table(params: ConsensusParams) -> npt.NDArray[np.float64]:
    """``table[q]``: what a raw base of quality ``q`` adds to the cell of the base it shows.

    A usable raw base adds ``log(1 - e)`` to the candidate it shows and ``log(e / 3)`` to the
    other three; the common ``log(e / 3)`` cancels in the posterior, so only the difference (the
    *gain*) is summed, plus ``2**20`` to count the base. Qualities below
    ``min_input_base_quality`` weigh nothing.
    """
    q = np.arange(256, dtype=np.float64)
    e = probability_of_error_two_trials(
        phred_to_probability(np.minimum(q, MAX_PHRED)),
        phred_to_probability(params.error_rate_post_umi),
    )
    weight = np.log1p(-e) - np.log(e / 3.0) + _COUNT_UNIT
    weight[: params.min_input_base_quality] = 0.0
    return np.asarray(weight, dtype=np.float64)


def call_families(
    bases: U8Array,
    quals: U8Array,
    offsets: I64Array,
    params: ConsensusParams,
    *,
    rows: I64Array | None = None,
    width: int | None = None,
    min_depth: int | I64Array = 1,
) -> FamilyConsensus:
    """Single-strand consensus of every family at once.

    ``bases`` and ``quals`` are ``(n_reads, width)`` (codes 0..4, padding coded ``N``); the reads
    of family ``f`` are rows ``offsets[f]`` up to ``offsets[f + 1]`` (or the end). Every family
    must have at least one read (``offsets`` strictly increasing, starting at 0).

    With ``rows``, read ``k`` is row ``rows[k]`` of ``bases``/``quals`` instead (no copy of the
    matrices is made), and only the first ``width`` columns are called (default: all).

    As fgbio's ``VanillaUmiConsensusCaller``:

    * a column with fewer than ``min_depth`` usable raw bases (one value, or one per family; 1
      by default, so a column without coverage) is a no-call, ``N`` with quality
      :data:`NOT_ENOUGH_READS_QUALITY`, except in a one-read family;
    * a one-read family keeps the read's bases, each quality combined as two trials with the
      *worse* of the two error-rate priors alone (``min(error_rate_pre_umi,
      error_rate_post_umi)``), depth 1 (0 where the base is ``N`` or below
      ``min_input_base_quality``) and no errors;
    * where two bases tie (a no-call), every raw base of the column counts as an error.
    """
    if quals.shape != bases.shape:
        raise ValueError(f"quals shape {quals.shape} differs from bases shape {bases.shape}")
    if width is None:
        width = bases.shape[1]
    elif not 0 <= width <= bases.shape[1]:
        raise ValueError(f"width must be in [0, {bases.shape[1]}]; got {width}")
    if rows is None:
        rows = np.arange(bases.shape[0], dtype=np.int64)
    else:
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= bases.shape[0]):
            raise ValueError(f"rows must index the {bases.shape[0]} rows of bases")
    n_reads = len(rows)
    offsets = np.asarray(offsets, dtype=np.int64)
    if len(offsets) == 0:
        empty = np.zeros((0, width), dtype=np.uint8)
        zeros = np.zeros((0, width), dtype=np.int32)
        return FamilyConsensus(empty, empty, empty, np.zeros((0, 4, width), np.int32), zeros, zeros)
    if offsets[0] != 0 or np.any(np.diff(offsets) <= 0) or offsets[-1] >= n_reads:
        raise ValueError("offsets must start at 0, increase strictly and stay below n_reads")
    sizes = np.diff(np.append(offsets, n_reads))
    if int(sizes.max()) >= _MAX_FAMILY_READS:
        raise ValueError(f"a family has >= {_MAX_FAMILY_READS} reads; downsample it first")
    weights = _weight_table(params)
    bounds = np.append(offsets, n_reads)
    counts, raw_bases, n_best, depths, errors, values, n_values, first_value = family_likelihoods(
        np.ascontiguousarray(bases), np.ascontiguousarray(quals), rows, bounds, weights, width
    )
    # NB: exp and log10 in numpy (see consensus_kernels); the arithmetic around them is compiled.
    exp_values = np.exp(values[:n_values])
    p_pre_umi = float(phred_to_probability(params.error_rate_pre_umi))
    p_error = posterior_errors(exp_values, first_value, p_pre_umi)
    np.log10(p_error, out=p_error)
    bases_out, quals_out = finish_columns(
        p_error, raw_bases, n_best, params.max_consensus_quality, params.min_consensus_base_quality
    )
    call = FamilyConsensus(bases_out, quals_out, raw_bases, counts, depths, errors)
    _apply_fgbio_rules(
        call, n_best, bases, quals, rows, offsets, width, params, min_depth=min_depth
    )
    return call


def _apply_fgbio_rules(
    call: FamilyConsensus,
    n_best: npt.NDArray[np.integer[Any]],
    bases: U8Array,
    quals: U8Array,
    rows: I64Array,
    offsets: I64Array,
    width: int,
    params: ConsensusParams,
    *,
    min_depth: int | I64Array = 1,
) -> None:
    """fgbio's rules on top of the likelihood call of ``call``, in place (see
    :func:`call_families`): tie errors, the one-read path and the ``min_depth`` mask."""
    bases_out, quals_out, raw_bases = call.bases, call.quals, call.raw_bases
    depths, errors = call.depths, call.errors
    sizes = np.diff(np.append(offsets, len(rows)))
    tied = (n_best > 1) & (depths > 0)
    errors[tied] = depths[tied]
    singles = np.flatnonzero(sizes == 1)
    if len(singles):
        read_rows = rows[offsets[singles]]
        in_bases = bases[read_rows, :width]
        in_quals = quals[read_rows, :width]
        usable = (in_bases < NO_CALL) & (in_quals >= params.min_input_base_quality)
        single_quals = _single_read_table(params)[in_quals]
        called = usable & (single_quals >= params.min_consensus_base_quality)
        bases_out[singles] = np.where(called, in_bases, NO_CALL)
        quals_out[singles] = np.where(called, single_quals, NO_CALL_QUALITY)
        raw_bases[singles] = np.where(usable, in_bases, NO_CALL)
        depths[singles] = usable
        errors[singles] = 0
    # NB: fgbio's one-read path has no depth test (min_reads >= 2 never gets there)
    too_shallow = depths < np.reshape(np.asarray(min_depth, dtype=np.int64), (-1, 1))
    too_shallow[singles] = False
    bases_out[too_shallow] = NO_CALL
    quals_out[too_shallow] = NOT_ENOUGH_READS_QUALITY


def _single_read_table(params: ConsensusParams) -> U8Array:
    """``table[q]``: fgbio's consensus quality of a one-read family's base of quality ``q``."""
    q = np.arange(256, dtype=np.float64)
    worse_prior = min(params.error_rate_pre_umi, params.error_rate_post_umi)
    p_error = probability_of_error_two_trials(
        phred_to_probability(np.minimum(q, MAX_PHRED)), phred_to_probability(worse_prior)
    )
    return probability_to_phred(p_error, params.max_consensus_quality)


def _call_families_numpy(
    bases: U8Array, quals: U8Array, offsets: I64Array, params: ConsensusParams
) -> FamilyConsensus:
    """The all-numpy formulation of :func:`call_families` (no checks), kept as its reference."""
    n_reads, width = bases.shape
    n_families = len(offsets)
    sizes = np.diff(np.append(offsets, n_reads))
    family_of_read = np.repeat(np.arange(n_families, dtype=np.int64), sizes)
    # NB: one bincount over (family, base, column) cells sums every candidate's log-likelihood
    # gain AND counts the raw bases of every family at once: a usable raw base weighs
    # 2**20 + gain, so a cell's sum is count * 2**20 + total gain (gain < 11 per base; exact while
    # a family has < 90,000 reads). A base below min_input_base_quality weighs 0 (neither counted
    # nor evidence); N (and padding) lands in a fifth base slot that is dropped.
    cell = (family_of_read * (5 * width))[:, None] + bases * np.int64(width)
    cell += np.arange(width, dtype=np.int64)
    weights = _weight_table(params)[quals]
    total = np.bincount(cell.ravel(), weights=weights.ravel(), minlength=n_families * 5 * width)
    total = total.reshape(n_families, 5, width)[:, :4]
    counts_float = np.floor(total * (1.0 / _COUNT_UNIT))
    loglik = total - counts_float * _COUNT_UNIT
    counts = counts_float.astype(np.int32)
    depths = counts.sum(axis=1, dtype=np.int32)

    # NB: an explicit running max over the 4 candidates beats np.argmax along a length-4 axis.
    best = np.zeros((n_families, width), dtype=np.uint8)
    best_ll = loglik[:, 0].copy()
    for base in (1, 2, 3):
        better = loglik[:, base] > best_ll
        best[better] = base
        np.maximum(best_ll, loglik[:, base], out=best_ll)
    relative = loglik - best_ll[:, None, :]
    n_best = (relative >= -1e-6).sum(axis=1)  # ties, within the packing's rounding
    # NB: drop the best base itself rather than subtracting its exp(0) = 1 afterwards, which
    # would cancel away posterior errors below ~1e-16 when the quality cap is high.
    np.put_along_axis(relative, best[:, None, :].astype(np.intp), -np.inf, axis=1)
    others = np.exp(relative).sum(axis=1)
    p_error = others / (1.0 + others)
    p_error = probability_of_error_two_trials(
        phred_to_probability(params.error_rate_pre_umi), p_error
    )
    quals_out = probability_to_phred(p_error, params.max_consensus_quality)

    covered = depths > 0
    raw_bases = np.where(covered, best, NO_CALL).astype(np.uint8)
    is_call = covered & (n_best == 1) & (quals_out >= params.min_consensus_base_quality)
    bases_out = np.where(is_call, raw_bases, NO_CALL).astype(np.uint8)
    quals_out = np.where(is_call, quals_out, NO_CALL_QUALITY).astype(np.uint8)
    index = np.minimum(raw_bases, 3)[:, None, :].astype(np.intp)
    agree = np.take_along_axis(counts, index, axis=1)[:, 0]
    errors = np.where(raw_bases < NO_CALL, depths - agree, 0).astype(np.int32)
    call = FamilyConsensus(bases_out, quals_out, raw_bases, counts, depths, errors)
    _apply_fgbio_rules(
        call, n_best, bases, quals, np.arange(n_reads, dtype=np.int64), offsets, width, params
    )
    return call


def _errors_against(counts: I32Array, depths: I32Array, reference: U8Array) -> I32Array:
    """Raw bases that differ from ``reference`` (none where ``reference`` is ``N``)."""
    return errors_against(
        np.ascontiguousarray(counts), np.ascontiguousarray(depths), np.ascontiguousarray(reference)
    )


def combine_duplex(
    a_bases: U8Array,
    a_quals: U8Array,
    b_bases: U8Array,
    b_quals: U8Array,
    params: ConsensusParams,
) -> tuple[U8Array, U8Array]:
    """Duplex base and quality from two aligned single-strand consensuses (same shape)."""
    raw, quals = _duplex_raw(a_bases, a_quals, b_bases, b_quals, params)
    masked = (a_bases == NO_CALL) | (b_bases == NO_CALL) | (quals <= NO_CALL_QUALITY)
    masked |= quals < params.min_consensus_base_quality
    bases = np.where(masked, NO_CALL, raw).astype(np.uint8)
    return bases, np.where(masked, NO_CALL_QUALITY, quals).astype(np.uint8)


def _duplex_raw(
    a_bases: U8Array,
    a_quals: U8Array,
    b_bases: U8Array,
    b_quals: U8Array,
    params: ConsensusParams,
) -> tuple[U8Array, U8Array]:
    """fgbio's raw duplex call before masking: the base the errors are counted against."""
    qa = a_quals.astype(np.int32)
    qb = b_quals.astype(np.int32)
    agree = a_bases == b_bases
    raw = np.where(agree | (qa >= qb), a_bases, b_bases).astype(np.uint8)
    quals = np.where(agree, np.minimum(qa + qb, params.max_consensus_quality), np.abs(qa - qb))
    quals = np.where(~agree & (qa == qb), 0, quals)
    return raw, quals.astype(np.uint8)


@dataclass(frozen=True)
class DuplexConsensus:
    """Duplex consensus of aligned family pairs, with errors of all raw reads of both strands."""

    bases: U8Array
    quals: U8Array
    depths: I32Array
    errors: I32Array


def call_duplex(a: FamilyConsensus, b: FamilyConsensus, params: ConsensusParams) -> DuplexConsensus:
    """Combine row ``i`` of ``a`` with row ``i`` of ``b`` (same shapes) into duplex consensuses.

    Raw-read errors are counted against the raw duplex base, over the reads of both strands.

    >>> p = ConsensusParams()
    >>> q = np.full((2, 3), 30, dtype=np.uint8)
    >>> a = call_families(encode_bases([b"ACG", b"ACG"]), q, np.array([0]), p)
    >>> b = call_families(encode_bases([b"ACT", b"ACT"]), q, np.array([0]), p)
    >>> d = call_duplex(a, b, p)
    >>> decode_bases(d.bases[0]), d.quals[0].tolist(), d.depths[0].tolist(), d.errors[0].tolist()
    ('ACN', [88, 88, 2], [4, 4, 4], [0, 0, 2])
    """
    bases, quals = combine_duplex(a.bases, a.quals, b.bases, b.quals, params)
    raw, _ = _duplex_raw(a.bases, a.quals, b.bases, b.quals, params)
    counts = a.counts + b.counts
    depths = a.depths + b.depths
    return DuplexConsensus(bases, quals, depths, _errors_against(counts, depths, raw))


def call_duplex_rows(
    ss: FamilyConsensus, a_rows: I64Array, b_rows: I64Array, params: ConsensusParams
) -> DuplexConsensus:
    """:func:`call_duplex` of rows ``a_rows[i]`` and ``b_rows[i]`` of one :class:`FamilyConsensus`
    (same result, without copying the per-base counts of either strand).

    >>> p = ConsensusParams()
    >>> q = np.full((4, 3), 30, dtype=np.uint8)
    >>> ss = call_families(encode_bases([b"ACG", b"ACG", b"ACT", b"ACT"]), q, np.array([0, 2]), p)
    >>> d = call_duplex_rows(ss, np.array([0]), np.array([1]), p)
    >>> decode_bases(d.bases[0]), d.quals[0].tolist(), d.depths[0].tolist(), d.errors[0].tolist()
    ('ACN', [88, 88, 2], [4, 4, 4], [0, 0, 2])
    """
    bases, quals, depths, errors = duplex_rows(
        np.ascontiguousarray(ss.bases),
        np.ascontiguousarray(ss.quals),
        np.ascontiguousarray(ss.counts),
        np.ascontiguousarray(ss.depths),
        np.asarray(a_rows, dtype=np.int64),
        np.asarray(b_rows, dtype=np.int64),
        params.max_consensus_quality,
        params.min_consensus_base_quality,
    )
    return DuplexConsensus(bases, quals, depths, errors)


def reconcile_overlap(
    r1_bases: U8Array,
    r1_quals: U8Array,
    r1_depths: I32Array,
    r2_bases: U8Array,
    r2_quals: U8Array,
    r2_depths: I32Array,
) -> tuple[U8Array, U8Array]:
    """Reconcile the overlapping columns of a molecule's R1 and R2 consensus (1-D, aligned).

    Returns the shared ``(bases, quals)`` both records must carry there:

    * both called and equal: that base, with the larger quality (not the sum: the mates of one
      molecule share its PCR history, so they are not independent evidence);
    * one side had no raw coverage (depth 0): the other side's call;
    * anything else (disagreement, or an ``N`` that came from conflicting evidence): ``N``/2.

    >>> b, q = reconcile_overlap(encode_bases([b"ACGN"])[0], np.array([30, 30, 30, 2], np.uint8),
    ...                          np.array([3, 3, 3, 0], np.int32),
    ...                          encode_bases([b"ACTT"])[0], np.array([20, 40, 30, 30], np.uint8),
    ...                          np.array([3, 3, 3, 3], np.int32))
    >>> decode_bases(b), q.tolist()
    ('ACNT', [30, 40, 2, 30])
    """
    called1 = r1_bases < NO_CALL
    called2 = r2_bases < NO_CALL
    agree = called1 & called2 & (r1_bases == r2_bases)
    take1 = called1 & (r2_depths == 0)
    take2 = called2 & (r1_depths == 0)
    bases = np.full(r1_bases.shape, NO_CALL, dtype=np.uint8)
    quals = np.full(r1_bases.shape, NO_CALL_QUALITY, dtype=np.uint8)
    bases = np.where(agree | take1, r1_bases, bases)
    bases = np.where(take2 & ~agree, r2_bases, bases)
    quals = np.where(agree, np.maximum(r1_quals, r2_quals), quals)
    quals = np.where(take1 & ~agree, r1_quals, quals)
    quals = np.where(take2 & ~agree, r2_quals, quals)
    return bases.astype(np.uint8), quals.astype(np.uint8)
