"""The compiled paths of the consensus caller give the numpy reference's results exactly."""

from __future__ import annotations

import numpy as np

from precise_mrd.core.consensus import (
    ConsensusParams,
    _call_families_numpy,
    call_duplex,
    call_duplex_rows,
    call_families,
)


def _random_families(
    rng: np.random.Generator, n_families: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sizes = rng.integers(1, 6, size=n_families)
    n_reads = int(sizes.sum())
    truth = rng.integers(0, 4, size=(n_families, width))
    bases = np.repeat(truth, sizes, axis=0).astype(np.uint8)
    noise = rng.random(bases.shape) < 0.2
    bases[noise] = rng.integers(0, 5, size=int(noise.sum()))
    quals = rng.integers(0, 45, size=(n_reads, width)).astype(np.uint8)
    offsets = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)
    return bases, quals, offsets


def test_call_duplex_rows_equals_call_duplex_on_sliced_families() -> None:
    rng = np.random.default_rng(11)
    params = ConsensusParams()
    bases, quals, offsets = _random_families(rng, 400, 30)
    ss = call_families(bases, quals, offsets, params)
    a_rows = rng.integers(0, 400, size=300)
    b_rows = rng.integers(0, 400, size=300)
    fast = call_duplex_rows(ss, a_rows, b_rows, params)

    def rows(index: np.ndarray) -> object:
        return type(ss)(*(getattr(ss, name)[index] for name in ss.__dataclass_fields__))

    slow = call_duplex(rows(a_rows), rows(b_rows), params)  # type: ignore[arg-type]
    for name in ("bases", "quals", "depths", "errors"):
        assert np.array_equal(getattr(fast, name), getattr(slow, name)), name
    # the rows cover agreement, disagreement either way and masked columns
    assert (ss.quals[a_rows] < ss.quals[b_rows]).any() and (
        ss.quals[a_rows] > ss.quals[b_rows]
    ).any()


def test_call_families_with_rows_equals_the_gathered_matrices() -> None:
    rng = np.random.default_rng(12)
    params = ConsensusParams()
    bases, quals, offsets = _random_families(rng, 200, 40)
    permutation = rng.permutation(len(bases))
    store_bases = np.full((len(bases) + 5, 50), 4, dtype=np.uint8)
    store_quals = np.full((len(bases) + 5, 50), 2, dtype=np.uint8)
    store_bases[permutation, :40] = bases
    store_quals[permutation, :40] = quals
    fast = call_families(store_bases, store_quals, offsets, params, rows=permutation, width=40)
    slow = _call_families_numpy(bases, quals, offsets, params)
    for name in ("bases", "quals", "raw_bases", "counts", "depths", "errors"):
        assert np.array_equal(getattr(fast, name), getattr(slow, name)), name
