"""code_ranks (integer sort of encoded UMIs) equals lexicographic_ranks (string sort)."""

from __future__ import annotations

import numpy as np
import pytest

from precise_mrd.core.umi import code_ranks, encode_umis, lexicographic_ranks


@pytest.mark.parametrize(("alphabet", "max_length"), [("ACGT-", 17), ("ACGTN", 6), ("ACGTN-", 30)])
def test_code_ranks_equal_lexicographic_ranks(alphabet: str, max_length: int) -> None:
    rng = np.random.default_rng(max_length)
    umis = [
        "".join(rng.choice(list(alphabet), size=int(rng.integers(1, max_length + 1))))
        for _ in range(3000)
    ]
    umis += umis[:500]  # repeats share a rank
    codes, _ = encode_umis(umis)
    ranks = code_ranks(codes)
    assert np.array_equal(ranks, lexicographic_ranks(umis))
    assert len(np.unique(ranks)) == len(set(umis))


def test_code_ranks_of_no_umis() -> None:
    assert code_ranks(np.zeros((0, 0), dtype=np.uint8)).tolist() == []
