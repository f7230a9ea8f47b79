"""Compiled inner loops of the single-strand consensus caller (see :mod:`.consensus`).

:func:`family_likelihoods` does, per family and column, what the vectorised reference in
:func:`precise_mrd.core.consensus.call_families` did with one large ``numpy.bincount``: it sums
each candidate base's log-likelihood gain over the family's reads (in read order, so the float
sums are the same), splits the packed count off, picks the best candidate (first of equal maxima),
counts candidates tied with it, and lists the other three candidates' log-likelihoods relative
to the best. The ``exp``/``log10`` that follow stay in numpy on purpose: numpy's SIMD ``exp`` and
libm's (which compiled code calls) differ in the last bit for ~5% of inputs, and a consensus
quality is a ``floor`` of that result, so sharing the numpy calls keeps results bit-identical.
Where the three are equal (every read agrees, the common case) the value is listed once and its
``exp`` reused: the same value gives the same ``exp``, so this only saves work.
:func:`posterior_errors` and :func:`finish_columns` are the arithmetic between and after.

>>> import numpy as np
>>> table = np.zeros(256); table[30] = 2.0**20 + 6.5
>>> bases = np.array([[0, 1], [0, 1]], dtype=np.uint8)
>>> quals = np.full((2, 2), 30, dtype=np.uint8)
>>> rows, bounds = np.array([0, 1]), np.array([0, 2])
>>> columns = family_likelihoods(bases, quals, rows, bounds, table, 2)
>>> counts, raw, n_best, depths, errors, values, n_values, first_value = columns
>>> counts[0, :, 0].tolist(), raw[0].tolist(), n_best[0].tolist(), depths[0].tolist()
([2, 0, 0, 0], [0, 1], [1, 1], [2, 2])
>>> values[:n_values].tolist(), first_value[0].tolist()
([-13.0, -13.0], [-1, -2])
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
import numpy.typing as npt

__all__ = [
    "depth_tags",
    "duplex_errors",
    "duplex_rows",
    "errors_against",
    "family_likelihoods",
    "finish_columns",
    "posterior_errors",
    "reconcile_pairs",
]

_COUNT_UNIT = float(2**20)
_I64: Any = np.int64  # NB: typed Any so that compiled integer maths type-checks as int
_U8: Any = np.uint8


@numba.njit(cache=True, nogil=True)
def family_likelihoods(
    bases: npt.NDArray[np.uint8],
    quals: npt.NDArray[np.uint8],
    rows: npt.NDArray[np.int64],
    bounds: npt.NDArray[np.int64],
    weight_table: npt.NDArray[np.float64],
    width: int,
) -> tuple[
    npt.NDArray[np.int32],
    npt.NDArray[np.uint8],
    npt.NDArray[np.int8],
    npt.NDArray[np.int32],
    npt.NDArray[np.int32],
    npt.NDArray[np.float64],
    int,
    npt.NDArray[np.int64],
]:
    """Per family ``f`` (reads ``bounds[f]:bounds[f + 1]``; read ``k`` is row ``rows[k]`` of
    ``bases``/``quals``) and column ``< width``: raw base counts ``(n, 4, width)``, the best
    base (``N`` without coverage), the number of candidates within 1e-6 of the best, the depth,
    the raw bases that differ from the best, and the log-likelihoods of the other three
    candidates (in base order) minus the best's: ``values[first_value[f, c]]`` and the next two,
    or that one value alone where ``first_value`` is negative (``-1 - index``: all three equal).
    ``values[:n_values]`` is filled.

    ``weight_table[q]`` is ``2**20 + gain`` for a usable base of quality ``q`` (0 if unusable);
    bases coded 0..3 count, 4 (N, padding) does not.
    """
    n_families = len(bounds) - 1
    counts = np.empty((n_families, 4, width), dtype=np.int32)
    raw = np.empty((n_families, width), dtype=np.uint8)
    n_best = np.empty((n_families, width), dtype=np.int8)
    depths = np.empty((n_families, width), dtype=np.int32)
    errors = np.empty((n_families, width), dtype=np.int32)
    values = np.empty(3 * n_families * width, dtype=np.float64)
    first_value = np.empty((n_families, width), dtype=np.int64)
    n_values = 0
    total = np.zeros((4, width), dtype=np.float64)
    weights = np.zeros(width, dtype=np.float64)
    inverse_unit = 1.0 / _COUNT_UNIT
    # NB: the loops run along the columns with selects instead of a scatter on the base, so that
    # they vectorise; adding 0.0 leaves a sum unchanged, so the sums are those of the scatter.
    t0, t1, t2, t3 = total[0], total[1], total[2], total[3]
    for f in range(n_families):
        total[:, :] = 0.0
        for k in range(bounds[f], bounds[f + 1]):
            row_bases = bases[rows[k]]
            row_quals = quals[rows[k]]
            for c in range(width):
                weights[c] = weight_table[row_quals[c]]
            for c in range(width):
                b = row_bases[c]
                w = weights[c]
                t0[c] += w if b == 0 else 0.0
                t1[c] += w if b == 1 else 0.0
                t2[c] += w if b == 2 else 0.0
                t3[c] += w if b == 3 else 0.0
        c0, c1, c2, c3 = counts[f, 0], counts[f, 1], counts[f, 2], counts[f, 3]
        for b in range(4):  # split the packed count off: total becomes the log-likelihood
            tb = total[b]
            family_counts = counts[f, b]
            for c in range(width):
                count = np.floor(tb[c] * inverse_unit)
                family_counts[c] = np.int32(count)
                tb[c] = tb[c] - count * _COUNT_UNIT
        for c in range(width):
            l0, l1, l2, l3 = t0[c], t1[c], t2[c], t3[c]
            top = 0
            top_ll = l0
            top_count = c0[c]
            if l1 > top_ll:
                top, top_ll, top_count = 1, l1, c1[c]
            if l2 > top_ll:
                top, top_ll, top_count = 2, l2, c2[c]
            if l3 > top_ll:
                top, top_ll, top_count = 3, l3, c3[c]
            r0, r1, r2, r3 = l0 - top_ll, l1 - top_ll, l2 - top_ll, l3 - top_ll
            n_best[f, c] = (r0 >= -1e-6) + (r1 >= -1e-6) + (r2 >= -1e-6) + (r3 >= -1e-6)
            depth = c0[c] + c1[c] + c2[c] + c3[c]
            depths[f, c] = depth
            raw[f, c] = top if depth > 0 else 4
            errors[f, c] = depth - top_count if depth > 0 else 0
            # the three candidates other than the best, in base order
            o0 = r0 if top > 0 else r1
            o1 = r1 if top > 1 else r2
            o2 = r2 if top > 2 else r3
            if o0 == o1 and o1 == o2:
                first_value[f, c] = -1 - n_values
                values[n_values] = o0
                n_values += 1
            else:
                first_value[f, c] = n_values
                values[n_values] = o0
                values[n_values + 1] = o1
                values[n_values + 2] = o2
                n_values += 3
    return counts, raw, n_best, depths, errors, values, n_values, first_value


@numba.njit(cache=True, nogil=True)
def posterior_errors(
    exp_values: npt.NDArray[np.float64], first_value: npt.NDArray[np.int64], p_pre_umi: float
) -> npt.NDArray[np.float64]:
    """Per family and column, from the ``exp`` of :func:`family_likelihoods`'s ``values``: the
    consensus error probability combined with the pre-UMI error ``p_pre_umi`` as two trials,
    floored at ``1e-300`` (ready for ``log10``). The arithmetic is numpy's, in numpy's order."""
    n, width = first_value.shape
    out = np.empty((n, width), dtype=np.float64)
    scaled = (4.0 / 3.0) * p_pre_umi
    for f in range(n):
        for c in range(width):
            i = first_value[f, c]
            if i < 0:
                e = exp_values[-1 - i]
                others = e + e
                others += e
            else:
                others = exp_values[i] + exp_values[i + 1]
                others += exp_values[i + 2]
            p = others / (1.0 + others)
            p = (p_pre_umi + p) - scaled * p
            out[f, c] = max(p, 1e-300)
    return out


@numba.njit(cache=True, nogil=True)
def finish_columns(
    log10_errors: npt.NDArray[np.float64],
    raw: npt.NDArray[np.uint8],
    n_best: npt.NDArray[np.int8],
    max_quality: int,
    min_quality: int,
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """Called bases and qualities (``N``/2 where masked: no coverage, a tie or a quality below
    ``min_quality``) from the ``log10`` of each column's error probability."""
    n, width = raw.shape
    bases = np.empty((n, width), dtype=np.uint8)
    quals = np.empty((n, width), dtype=np.uint8)
    for f in range(n):
        for c in range(width):
            phred = min(np.floor(-10.0 * log10_errors[f, c] + 1e-3), float(max_quality))
            quality = np.uint8(phred)
            is_call = raw[f, c] < 4 and n_best[f, c] == 1 and quality >= min_quality
            bases[f, c] = raw[f, c] if is_call else 4
            quals[f, c] = quality if is_call else 2
    return bases, quals


@numba.njit(cache=True, nogil=True)
def errors_against(
    counts: npt.NDArray[np.int32], depths: npt.NDArray[np.int32], reference: npt.NDArray[np.uint8]
) -> npt.NDArray[np.int32]:
    """Raw bases of each column that differ from ``reference`` (0 where it is ``N``)."""
    n, _, width = counts.shape
    out = np.zeros((n, width), dtype=np.int32)
    for f in range(n):
        for c in range(width):
            r = reference[f, c]
            if r < 4:
                out[f, c] = depths[f, c] - counts[f, r, c]
    return out


@numba.njit(cache=True, nogil=True)
def shared_columns(
    ref_offsets: npt.NDArray[np.int64],
    ref_bounds: npt.NDArray[np.int64],
    width: int,
    cigar1: int,
    start1: int,
    cigar2: int,
    start2: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The columns of two aligned reads (``i`` of the first, ``j`` of the second) that align to
    the same reference base; ``ref_offsets[ref_bounds[c]:ref_bounds[c + 1]]`` is CIGAR ``c``'s
    reference offset of each query column (-1: clipped or inserted); columns past ``width``
    are ignored."""
    lo1 = ref_bounds[cigar1]
    n1 = min(ref_bounds[cigar1 + 1] - lo1, width)
    lo2 = ref_bounds[cigar2]
    n2 = min(ref_bounds[cigar2 + 1] - lo2, width)
    out1 = np.empty(min(n1, n2), dtype=np.int64)
    out2 = np.empty(min(n1, n2), dtype=np.int64)
    k = 0
    j = 0
    for i in range(n1):
        off1 = ref_offsets[lo1 + i]
        if off1 < 0:
            continue
        ref = start1 + off1
        # NB: the second read's aligned columns increase with the column
        while j < n2 and (ref_offsets[lo2 + j] < 0 or start2 + ref_offsets[lo2 + j] < ref):
            j += 1
        if j >= n2:
            break
        if start2 + ref_offsets[lo2 + j] == ref:
            out1[k] = i
            out2[k] = j
            k += 1
    return out1[:k], out2[:k]


@numba.njit(cache=True, nogil=True)
def reconcile_pairs(
    pair_first: npt.NDArray[np.int64],
    starts: npt.NDArray[np.int64],
    cigar_ids: npt.NDArray[np.int64],
    ref_offsets: npt.NDArray[np.int64],
    ref_bounds: npt.NDArray[np.int64],
    bases: npt.NDArray[np.uint8],
    quals: npt.NDArray[np.uint8],
    depths: npt.NDArray[np.int32],
) -> None:
    """Make rows ``p`` and ``p + 1`` (``p`` in ``pair_first``) agree wherever both have a column
    aligned to the same reference position (in place; the rule of ``reconcile_overlap``).

    ``ref_offsets[ref_bounds[c]:ref_bounds[c + 1]]`` is CIGAR ``c``'s reference offset of each
    query column (-1: clipped or inserted); columns past the matrix width are ignored.
    """
    width = bases.shape[1]
    for p in range(len(pair_first)):
        r1 = pair_first[p]
        r2 = r1 + 1
        cols1, cols2 = shared_columns(
            ref_offsets, ref_bounds, width, cigar_ids[r1], starts[r1], cigar_ids[r2], starts[r2]
        )
        for k in range(len(cols1)):
            i = cols1[k]
            j = cols2[k]
            b1 = bases[r1, i]
            b2 = bases[r2, j]
            called1 = b1 < 4
            called2 = b2 < 4
            agree = called1 and called2 and b1 == b2
            take1 = called1 and depths[r2, j] == 0
            take2 = called2 and depths[r1, i] == 0
            base = 4
            qual = 2
            if agree:
                base = b1
                qual = max(quals[r1, i], quals[r2, j])
            elif take2:  # NB: where both sides could be taken, R2's wins (as in the numpy rule)
                base = b2
                qual = quals[r2, j]
            elif take1:
                base = b1
                qual = quals[r1, i]
            bases[r1, i] = base
            bases[r2, j] = base
            quals[r1, i] = qual
            quals[r2, j] = qual


@numba.njit(cache=True, nogil=True)
def reconcile_read_pairs(
    r1_rows: npt.NDArray[np.int64],
    r2_rows: npt.NDArray[np.int64],
    r1_starts: npt.NDArray[np.int64],
    r2_starts: npt.NDArray[np.int64],
    r1_cigars: npt.NDArray[np.int64],
    r2_cigars: npt.NDArray[np.int64],
    ref_offsets: npt.NDArray[np.int64],
    ref_bounds: npt.NDArray[np.int64],
    bases: npt.NDArray[np.uint8],
    quals: npt.NDArray[np.uint8],
    max_quality: int,
) -> int:
    """fgbio's ``OverlappingBasesConsensusCaller`` (agreement and disagreement strategy
    ``Consensus``) on raw read pairs, in place: where R1 (row ``r1_rows[p]``) and R2 align a base
    to the same reference position and neither is ``N``, agreeing bases keep the base with the
    sum of the qualities (at most ``max_quality``) in both reads; disagreeing bases become, in
    both, the better base with the difference of the qualities, or ``N`` at Q2 when the
    qualities are equal. Returns the number of overlapping bases seen."""
    width = bases.shape[1]
    n_overlap = 0
    for p in range(len(r1_rows)):
        row1 = r1_rows[p]
        row2 = r2_rows[p]
        cols1, cols2 = shared_columns(
            ref_offsets, ref_bounds, width, r1_cigars[p], r1_starts[p], r2_cigars[p], r2_starts[p]
        )
        for k in range(len(cols1)):
            i = cols1[k]
            j = cols2[k]
            b1 = bases[row1, i]
            b2 = bases[row2, j]
            if b1 >= 4 or b2 >= 4:
                continue
            n_overlap += 1
            q1 = _I64(quals[row1, i])
            q2 = _I64(quals[row2, j])
            base = b1
            qual = _I64(2)
            if b1 == b2:
                qual = min(q1 + q2, max_quality)
            elif q1 > q2:
                qual = q1 - q2
            elif q2 > q1:
                base = b2
                qual = q2 - q1
            else:
                base = _U8(4)
            bases[row1, i] = base
            bases[row2, j] = base
            quals[row1, i] = qual
            quals[row2, j] = qual
    return n_overlap


@numba.njit(cache=True, nogil=True)
def duplex_errors(
    counts: npt.NDArray[np.int32],
    depths: npt.NDArray[np.int32],
    a_rows: npt.NDArray[np.int64],
    b_rows: npt.NDArray[np.int64],
    reference: npt.NDArray[np.uint8],
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]]:
    """Depths and raw-base errors of duplex pairs (rows ``a_rows[i]`` and ``b_rows[i]`` of the
    single-strand arrays) against ``reference[i]``, without copying the per-base counts."""
    n = len(a_rows)
    width = depths.shape[1]
    out_depths = np.empty((n, width), dtype=np.int32)
    out_errors = np.zeros((n, width), dtype=np.int32)
    for i in range(n):
        a = a_rows[i]
        b = b_rows[i]
        for c in range(width):
            depth = depths[a, c] + depths[b, c]
            out_depths[i, c] = depth
            r = reference[i, c]
            if r < 4:
                out_errors[i, c] = depth - (counts[a, r, c] + counts[b, r, c])
    return out_depths, out_errors


@numba.njit(cache=True, nogil=True)
def duplex_rows(
    bases: npt.NDArray[np.uint8],
    quals: npt.NDArray[np.uint8],
    counts: npt.NDArray[np.int32],
    depths: npt.NDArray[np.int32],
    a_rows: npt.NDArray[np.int64],
    b_rows: npt.NDArray[np.int64],
    max_quality: int,
    min_quality: int,
) -> tuple[
    npt.NDArray[np.uint8],
    npt.NDArray[np.uint8],
    npt.NDArray[np.int32],
    npt.NDArray[np.int32],
]:
    """Duplex bases, qualities, depths and raw-base errors of single-strand rows ``a_rows[i]``
    and ``b_rows[i]`` (the rule of ``consensus.combine_duplex``; errors against the raw duplex
    base, before masking, over the reads of both strands)."""
    n = len(a_rows)
    width = bases.shape[1]
    out_bases = np.empty((n, width), dtype=np.uint8)
    out_quals = np.empty((n, width), dtype=np.uint8)
    out_depths = np.empty((n, width), dtype=np.int32)
    out_errors = np.zeros((n, width), dtype=np.int32)
    for i in range(n):
        a = a_rows[i]
        b = b_rows[i]
        for c in range(width):
            base_a = bases[a, c]
            base_b = bases[b, c]
            qa = _I64(quals[a, c])
            qb = _I64(quals[b, c])
            if base_a == base_b:
                raw = base_a
                quality = min(qa + qb, max_quality)
            else:
                raw = base_a if qa >= qb else base_b
                quality = abs(qa - qb)
            masked = base_a == 4 or base_b == 4 or quality <= 2 or quality < min_quality
            out_bases[i, c] = 4 if masked else raw
            out_quals[i, c] = 2 if masked else quality
            depth = depths[a, c] + depths[b, c]
            out_depths[i, c] = depth
            if raw < 4:
                out_errors[i, c] = depth - (counts[a, raw, c] + counts[b, raw, c])
    return out_bases, out_quals, out_depths, out_errors


@numba.njit(cache=True, nogil=True)
def depth_tags(
    depths: npt.NDArray[np.int32],
    errors: npt.NDArray[np.int32],
    rows: npt.NDArray[np.int64],
    lengths: npt.NDArray[np.int64],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Per record ``i``: max and min depth and errors / depth over the first ``lengths[i]``
    columns of row ``rows[i]`` (min is ``2**31 - 1`` and the rate 0 without columns)."""
    n = len(rows)
    width = depths.shape[1]
    max_depth = np.zeros(n, dtype=np.int64)
    min_depth = np.full(n, 2147483647, dtype=np.int64)
    rate = np.zeros(n, dtype=np.float64)
    for i in range(n):
        row = rows[i]
        total_depth = 0
        total_errors = 0
        for c in range(min(lengths[i], width)):
            d = depths[row, c]
            max_depth[i] = max(max_depth[i], d)
            min_depth[i] = min(min_depth[i], d)
            total_depth += d
            total_errors += errors[row, c]
        if total_depth > 0:
            rate[i] = total_errors / total_depth
    return max_depth, min_depth, rate
