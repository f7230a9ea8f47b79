"""Unit tests of the consensus quality model against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from precise_mrd.core.consensus import (
    NO_CALL,
    NO_CALL_QUALITY,
    NOT_ENOUGH_READS_QUALITY,
    ConsensusParams,
    call_duplex,
    call_families,
    combine_duplex,
    decode_bases,
    encode_bases,
    reconcile_overlap,
)


def _p(q: float) -> float:
    return 10.0 ** (-q / 10.0)


def _two_trials(p1: float, p2: float) -> float:
    return p1 + p2 - 4.0 / 3.0 * p1 * p2


def _expected_quality(
    observations: list[tuple[str, int]], truth: str, params: ConsensusParams
) -> int:
    """The fgbio model written out longhand for one column (no vectorisation)."""
    loglik = dict.fromkeys("ACGT", 0.0)
    for base, q in observations:
        if base == "N" or q < params.min_input_base_quality:
            continue
        e = _two_trials(_p(q), _p(params.error_rate_post_umi))
        for candidate in "ACGT":
            loglik[candidate] += math.log(1 - e) if candidate == base else math.log(e / 3)
    total = sum(math.exp(v) for v in loglik.values())
    p_error = 1.0 - math.exp(loglik[truth]) / total
    p_error = _two_trials(_p(params.error_rate_pre_umi), p_error)
    return min(params.max_consensus_quality, math.floor(-10 * math.log10(p_error) + 0.001))


def _family(seqs: list[bytes], quals: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    return encode_bases(seqs), np.array(quals, dtype=np.uint8)


def test_three_agreeing_q30_reads_are_capped_by_the_pre_umi_rate() -> None:
    params = ConsensusParams()
    bases, quals = _family([b"A", b"A", b"A"], [[30], [30], [30]])
    result = call_families(bases, quals, np.array([0]), params)
    expected = _expected_quality([("A", 30)] * 3, "A", params)
    assert expected == 45  # posterior error ~1.5e-10, then the Q45 pre-UMI error dominates
    assert decode_bases(result.bases[0]) == "A"
    assert result.quals[0, 0] == expected
    assert result.depths[0, 0] == 3 and result.errors[0, 0] == 0


def test_single_read_quality_is_bounded_by_post_and_pre_umi_rates() -> None:
    params = ConsensusParams()
    bases, quals = _family([b"C"], [[40]])
    result = call_families(bases, quals, np.array([0]), params)
    # Q40 read + Q40 post-UMI -> ~2.2e-4; + Q45 pre-UMI -> ~2.5e-4 -> Q36
    assert result.quals[0, 0] == _expected_quality([("C", 40)], "C", params) == 36


def test_one_disagreeing_read_lowers_the_quality_and_counts_as_an_error() -> None:
    params = ConsensusParams()
    bases, quals = _family([b"G", b"G", b"G", b"T"], [[30], [30], [30], [30]])
    result = call_families(bases, quals, np.array([0]), params)
    expected = _expected_quality([("G", 30)] * 3 + [("T", 30)], "G", params)
    assert decode_bases(result.bases[0]) == "G"
    assert result.quals[0, 0] == expected == 44  # net support of two Q30 reads
    assert result.errors[0, 0] == 1 and result.depths[0, 0] == 4


def test_higher_quality_minority_can_win_by_likelihood() -> None:
    params = ConsensusParams(error_rate_post_umi=93, error_rate_pre_umi=93)
    bases, quals = _family([b"A", b"A", b"C"], [[10], [10], [40]])
    result = call_families(bases, quals, np.array([0]), params)
    assert decode_bases(result.bases[0]) == "C"
    expected = _expected_quality([("A", 10), ("A", 10), ("C", 40)], "C", params)
    assert result.quals[0, 0] == expected


def test_a_tie_is_a_no_call() -> None:
    params = ConsensusParams()
    bases, quals = _family([b"A", b"C"], [[30], [30]])
    result = call_families(bases, quals, np.array([0]), params)
    assert result.bases[0, 0] == NO_CALL and result.quals[0, 0] == NO_CALL_QUALITY
    assert result.depths[0, 0] == 2


def test_low_quality_and_n_bases_are_ignored_and_no_coverage_is_n_q0() -> None:
    # NB: fgbio masks a column below min_reads (here no coverage) with NotEnoughReadsQual, 0
    params = ConsensusParams(min_input_base_quality=20)
    bases, quals = _family([b"AN", b"TN", b"AA"], [[30, 30], [19, 40], [30, 5]])
    result = call_families(bases, quals, np.array([0]), params)
    assert decode_bases(result.bases[0]) == "AN"
    assert result.depths[0].tolist() == [2, 0]
    assert result.quals[0, 0] == _expected_quality([("A", 30)] * 2, "A", params)
    assert result.quals[0, 1] == NOT_ENOUGH_READS_QUALITY
    assert result.errors[0].tolist() == [0, 0]


def test_post_umi_rate_caps_what_any_one_read_can_say() -> None:
    lenient = call_families(
        *_family([b"A"], [[60]]),
        np.array([0]),
        ConsensusParams(error_rate_post_umi=93, error_rate_pre_umi=93),
    )
    strict = call_families(
        *_family([b"A"], [[60]]),
        np.array([0]),
        ConsensusParams(error_rate_post_umi=20, error_rate_pre_umi=93),
    )
    assert lenient.quals[0, 0] == 59  # ~1e-6 + 5e-10 from the pre-UMI rate: just under Q60
    assert strict.quals[0, 0] == 20  # one read is at best as good as the post-UMI error rate


def test_max_consensus_quality_caps() -> None:
    params = ConsensusParams(
        error_rate_pre_umi=93, error_rate_post_umi=93, max_consensus_quality=60
    )
    result = call_families(*_family([b"A"] * 5, [[40]] * 5), np.array([0]), params)
    assert result.quals[0, 0] == 60


def test_min_consensus_base_quality_masks() -> None:
    params = ConsensusParams(min_consensus_base_quality=40)
    result = call_families(*_family([b"A"], [[30]]), np.array([0]), params)
    assert result.bases[0, 0] == NO_CALL and result.quals[0, 0] == NO_CALL_QUALITY


def test_many_families_at_once_match_families_one_by_one() -> None:
    rng = np.random.default_rng(11)
    params = ConsensusParams()
    sizes = [1, 3, 2, 5, 4]
    n = sum(sizes)
    bases = rng.integers(0, 5, size=(n, 12)).astype(np.uint8)
    quals = rng.integers(2, 41, size=(n, 12)).astype(np.uint8)
    offsets = np.cumsum([0, *sizes[:-1]])
    together = call_families(bases, quals, offsets, params)
    for f, (start, size) in enumerate(zip(offsets, sizes, strict=True)):
        alone = call_families(
            bases[start : start + size], quals[start : start + size], np.array([0]), params
        )
        assert np.array_equal(together.bases[f], alone.bases[0])
        assert np.array_equal(together.quals[f], alone.quals[0])
        assert np.array_equal(together.errors[f], alone.errors[0])
        assert np.array_equal(together.depths[f], alone.depths[0])


def test_vectorised_qualities_equal_the_longhand_model() -> None:
    rng = np.random.default_rng(5)
    params = ConsensusParams()
    bases = rng.choice(np.array([0, 0, 0, 1], dtype=np.uint8), size=(6, 40))
    quals = rng.integers(5, 41, size=(6, 40)).astype(np.uint8)
    result = call_families(bases, quals, np.array([0]), params)
    for column in range(40):
        observations = [
            ("ACGTN"[b], int(q)) for b, q in zip(bases[:, column], quals[:, column], strict=True)
        ]
        called = "ACGTN"[result.bases[0, column]]
        if called == "N":
            continue
        assert result.quals[0, column] == _expected_quality(observations, called, params)


def test_bad_offsets_are_rejected() -> None:
    bases, quals = _family([b"A", b"A"], [[30], [30]])
    with pytest.raises(ValueError, match="offsets"):
        call_families(bases, quals, np.array([0, 0]), ConsensusParams())


@pytest.mark.parametrize(
    ("a", "qa", "b", "qb", "base", "qual"),
    [
        ("A", 30, "A", 35, "A", 65),  # agree: qualities add
        ("A", 60, "A", 50, "A", 90),  # agree: capped
        ("A", 40, "C", 25, "A", 15),  # disagree: higher minus lower
        ("A", 20, "G", 33, "G", 13),
        ("A", 30, "T", 30, "N", 2),  # tie
        ("N", 2, "T", 40, "N", 2),  # one strand without a call
    ],
)
def test_duplex_combination(a: str, qa: int, b: str, qb: int, base: str, qual: int) -> None:
    bases, quals = combine_duplex(
        encode_bases([a.encode()]),
        np.array([[qa]], np.uint8),
        encode_bases([b.encode()]),
        np.array([[qb]], np.uint8),
        ConsensusParams(),
    )
    assert decode_bases(bases[0]) == base and quals[0, 0] == qual


def test_duplex_counts_errors_from_both_strands() -> None:
    params = ConsensusParams()
    a = call_families(*_family([b"AC"] * 3, [[30, 30]] * 3), np.array([0]), params)
    b = call_families(*_family([b"AG", b"AC"], [[30, 30]] * 2), np.array([0]), params)
    duplex = call_duplex(a, b, params)
    assert duplex.depths[0].tolist() == [5, 5]
    # column 1: A says C (Q45), B ties C/G -> N (Q2): duplex C with 45 - 2; G on B is one error
    assert decode_bases(duplex.bases[0]) == "AN"  # B's N masks the duplex column
    assert duplex.errors[0].tolist() == [0, 1]


def test_single_strand_artefact_cannot_pass_as_confident_duplex() -> None:
    params = ConsensusParams()
    # Strand A: every read carries a PCR artefact T (copied from its first copy); strand B: C.
    a = call_families(*_family([b"T"] * 5, [[35]] * 5), np.array([0]), params)
    b = call_families(*_family([b"C"] * 5, [[35]] * 5), np.array([0]), params)
    duplex = call_duplex(a, b, params)
    assert duplex.bases[0, 0] == NO_CALL  # equal evidence both ways: a tie
    b_small = call_families(*_family([b"C"] * 1, [[35]]), np.array([0]), params)
    weak = call_duplex(a, b_small, params)
    assert weak.quals[0, 0] <= 45 - 31  # whatever wins is far below either strand alone


@pytest.mark.parametrize(
    ("n_a", "n_b", "duplex", "min_reads", "ok"),
    [
        (1, 0, True, (1, 1, 0), True),
        (1, 0, True, (1, 1, 1), False),
        (2, 1, True, (3, 2, 1), True),
        (1, 2, True, (3, 2, 1), True),
        (1, 1, True, (3, 2, 1), False),
        (3, 0, False, (3, 3, 0), True),
        (2, 0, False, (3, 1, 0), False),
    ],
)
def test_min_reads(
    n_a: int, n_b: int, duplex: bool, min_reads: tuple[int, int, int], ok: bool
) -> None:
    params = ConsensusParams(min_reads=min_reads)
    passed = params.passes_min_reads(np.array([n_a]), np.array([n_b]), np.array([duplex]))
    assert bool(passed[0]) is ok


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"error_rate_pre_umi": 0}, "error_rate_pre_umi"),
        ({"error_rate_post_umi": 100}, "error_rate_post_umi"),
        ({"min_input_base_quality": -1}, "min_input_base_quality"),
        ({"max_consensus_quality": 2}, "max_consensus_quality"),
        ({"min_reads": (0, 0, 0)}, "total reads"),
        ({"min_reads": (2, 1)}, "three integers"),
        ({"min_reads": (2, 1, 2)}, "non-increasing"),
    ],
)
def test_params_are_validated(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ConsensusParams(**kwargs)  # type: ignore[arg-type]


def test_overlap_reconciliation_rules() -> None:
    r1 = encode_bases([b"ACGTN"])[0]
    r2 = encode_bases([b"ACTTA"])[0]
    bases, quals = reconcile_overlap(
        r1,
        np.array([30, 40, 30, 30, 2], np.uint8),
        np.array([3, 3, 3, 3, 0], np.int32),
        r2,
        np.array([35, 20, 30, 30, 25], np.uint8),
        np.array([2, 2, 2, 2, 2], np.int32),
    )
    assert decode_bases(bases) == "ACNTA"
    assert quals.tolist() == [35, 40, 2, 30, 25]
    # an N from conflicting evidence (depth > 0) is not overwritten by the mate
    bases, _ = reconcile_overlap(
        encode_bases([b"N"])[0],
        np.array([2], np.uint8),
        np.array([4], np.int32),
        encode_bases([b"A"])[0],
        np.array([40], np.uint8),
        np.array([4], np.int32),
    )
    assert decode_bases(bases) == "N"
