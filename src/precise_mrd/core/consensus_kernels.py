"""Compiled inner loop of the single-strand consensus caller (see :mod:`.consensus`).

:func:`family_likelihoods` does, per family and column, what the vectorised reference in
:func:`precise_mrd.core.consensus.call_families` did with one large ``numpy.bincount``: it sums
each candidate base's log-likelihood gain over the family's reads (in read order, so the float
sums are the same), splits the packed count off, picks the best candidate (first of equal maxima),
counts candidates tied with it, and returns the other three candidates' log-likelihoods relative
to the best. The ``exp``/``log10`` that follow stay in numpy on purpose: numpy's SIMD ``exp`` and
libm's (which compiled code calls) differ in the last bit for ~5% of inputs, and a consensus
quality is a ``floor`` of that result, so sharing the numpy calls keeps results bit-identical.

>>> import numpy as np
>>> table = np.zeros(256); table[30] = 2.0**20 + 6.5
>>> bases = np.array([[0, 1], [0, 1]], dtype=np.uint8)
>>> quals = np.full((2, 2), 30, dtype=np.uint8)
>>> counts, best, n_best, others = family_likelihoods(bases, quals, np.array([0, 2]), table)
>>> counts[0, :, 0].tolist(), best[0].tolist(), n_best[0].tolist(), others[0, :, 0].tolist()
([2, 0, 0, 0], [0, 1], [1, 1], [-13.0, -13.0, -13.0])
"""

from __future__ import annotations

import numba
import numpy as np
import numpy.typing as npt

__all__ = ["family_likelihoods"]

_COUNT_UNIT = float(2**20)


@numba.njit(cache=True, nogil=True)
def family_likelihoods(
    bases: npt.NDArray[np.uint8],
    quals: npt.NDArray[np.uint8],
    bounds: npt.NDArray[np.int64],
    weight_table: npt.NDArray[np.float64],
) -> tuple[
    npt.NDArray[np.int32],
    npt.NDArray[np.uint8],
    npt.NDArray[np.int8],
    npt.NDArray[np.float64],
]:
    """Per family ``f`` (rows ``bounds[f]:bounds[f + 1]``) and column: raw base counts
    ``(n, 4, width)``, best base, number of candidates within 1e-6 of the best, and the
    log-likelihoods of the other three candidates (in base order) minus the best's.

    ``weight_table[q]`` is ``2**20 + gain`` for a usable base of quality ``q`` (0 if unusable);
    bases coded 0..3 count, 4 (N, padding) does not.
    """
    n_families = len(bounds) - 1
    width = bases.shape[1]
    counts = np.zeros((n_families, 4, width), dtype=np.int32)
    best = np.zeros((n_families, width), dtype=np.uint8)
    n_best = np.zeros((n_families, width), dtype=np.int8)
    others = np.empty((n_families, 3, width), dtype=np.float64)
    total = np.zeros((4, width), dtype=np.float64)
    loglik = np.zeros(4, dtype=np.float64)
    inverse_unit = 1.0 / _COUNT_UNIT
    for f in range(n_families):
        total[:, :] = 0.0
        for r in range(bounds[f], bounds[f + 1]):
            for c in range(width):
                b = bases[r, c]
                if b < 4:
                    total[b, c] += weight_table[quals[r, c]]
        for c in range(width):
            for b in range(4):
                count = np.floor(total[b, c] * inverse_unit)
                counts[f, b, c] = np.int32(count)
                loglik[b] = total[b, c] - count * _COUNT_UNIT
            top = 0
            top_ll = loglik[0]
            for b in range(1, 4):
                if loglik[b] > top_ll:
                    top = b
                    top_ll = loglik[b]
            tied = 0
            k = 0
            for b in range(4):
                relative = loglik[b] - top_ll
                if relative >= -1e-6:
                    tied += 1
                if b != top:
                    others[f, k, c] = relative
                    k += 1
            best[f, c] = top
            n_best[f, c] = tied
    return counts, best, n_best, others
