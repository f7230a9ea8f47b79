"""UMI clustering: each strategy on hand-made UMI sets, with UMI-tools 1.1.x's expected groups."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from precise_mrd.core.umi import (
    canonical_duplex_umi,
    cluster_bundles,
    cluster_umis,
    encode_umis,
    hamming_neighbours,
    lexicographic_ranks,
    swap_duplex_umi,
)


def as_sets(umis: list[str], clusters: list[list[int]]) -> list[list[str]]:
    return [[umis[i] for i in cluster] for cluster in clusters]


# (umis, counts, strategy, max_edits, expected clusters as UMI lists, representative first)
CASES = [
    # directional: 10 >= 2*2-1 absorbs ACGA; ACGA(2) >= 2*1-1 absorbs ACGG transitively
    (
        ["ACGT", "ACGA", "TTTT", "ACGG"],
        [10, 2, 4, 1],
        "directional",
        1,
        [["ACGT", "ACGA", "ACGG"], ["TTTT"]],
    ),
    # directional: equal counts > 1 never absorb each other
    (["AAAA", "AAAT"], [3, 3], "directional", 1, [["AAAA"], ["AAAT"]]),
    # directional: count 1 and 1 do (1 >= 2*1-1); representative is the smaller UMI
    (["AAAT", "AAAA"], [1, 1], "directional", 1, [["AAAA", "AAAT"]]),
    # directional: 5 vs 3: 5 >= 5 absorbs; 5 vs 4: 5 < 7 does not
    (
        ["CCCC", "CCCA", "GGGG", "GGGA"],
        [5, 3, 5, 4],
        "directional",
        1,
        [["CCCC", "CCCA"], ["GGGG"], ["GGGA"]],
    ),
    # directional tie: two parents reach one child; the first-seen parent (input order) takes it
    (["AAAA", "CCAA", "ACAA"], [3, 3, 2], "directional", 1, [["AAAA", "ACAA"], ["CCAA"]]),
    (["CCAA", "AAAA", "ACAA"], [3, 3, 2], "directional", 1, [["CCAA", "ACAA"], ["AAAA"]]),
    # edit: single linkage through a chain, even 2 mismatches apart end to end
    (["AAAA", "AAAT", "AATT"], [4, 2, 1], "edit", 1, [["AAAA", "AAAT", "AATT"]]),
    (["AAAA", "TTTT"], [1, 9], "edit", 1, [["TTTT"], ["AAAA"]]),
    (["AAAA", "AATT"], [5, 1], "edit", 2, [["AAAA", "AATT"]]),
    # adjacency: AAAA covers only AAAT, so AAAT leads a second group that takes AATT
    (["AAAA", "AAAT", "AATT"], [4, 2, 1], "adjacency", 1, [["AAAA"], ["AAAT", "AATT"]]),
    # adjacency: a hub covers everything
    (
        ["AAAA", "AAAT", "AAAC", "AAAG"],
        [9, 1, 1, 1],
        "adjacency",
        1,
        [["AAAA", "AAAC", "AAAG", "AAAT"]],
    ),
    # identity: nothing merges, input order kept
    (["AAAA", "AAAT", "TTTT"], [4, 2, 1], "identity", 1, [["AAAA"], ["AAAT"], ["TTTT"]]),
    # UMIs of different length are never neighbours
    (["AAAA", "AAAAT"], [5, 1], "directional", 1, [["AAAA"], ["AAAAT"]]),
]


@pytest.mark.parametrize(("umis", "counts", "strategy", "max_edits", "expected"), CASES)
def test_strategy_on_hand_made_sets(
    umis: list[str], counts: list[int], strategy: str, max_edits: int, expected: list[list[str]]
) -> None:
    clusters = cluster_umis(umis, counts, strategy=strategy, max_edits=max_edits)
    assert as_sets(umis, clusters) == expected


def test_every_index_appears_once() -> None:
    rng = np.random.default_rng(3)
    umis = list(dict.fromkeys("".join(rng.choice(list("ACGT"), 4)) for _ in range(200)))
    counts = rng.integers(1, 20, len(umis))
    for strategy in ("identity", "edit", "adjacency", "directional"):
        clusters = cluster_umis(umis, counts, strategy=strategy)
        flat = sorted(itertools.chain.from_iterable(clusters))
        assert flat == list(range(len(umis)))


def test_directional_matches_a_plain_python_reading_of_the_rule() -> None:
    """A slow, literal implementation of UMI-tools' directional groups on random bundles."""
    rng = np.random.default_rng(11)
    for _ in range(200):
        umis = list(dict.fromkeys("".join(rng.choice(list("ACG"), 3)) for _ in range(12)))
        counts = [int(c) for c in rng.choice([1, 1, 2, 3, 5, 9], len(umis))]
        ours = cluster_umis(umis, counts, strategy="directional")

        def dist(a: str, b: str) -> int:
            return sum(x != y for x, y in zip(a, b, strict=True))

        edges = {
            u: [
                v
                for v in umis
                if v != u
                and dist(u, v) <= 1
                and counts[umis.index(u)] >= 2 * counts[umis.index(v)] - 1
            ]
            for u in umis
        }
        observed: set[str] = set()
        expected: list[set[str]] = []
        for start in sorted(umis, key=lambda u: counts[umis.index(u)], reverse=True):
            if start in observed:
                continue
            reached, frontier = {start}, [start]
            while frontier:
                node = frontier.pop()
                for nxt in edges[node]:
                    if nxt not in reached:
                        reached.add(nxt)
                        frontier.append(nxt)
            expected.append(reached - observed)
            observed |= reached
        assert [set(group) for group in as_sets(umis, ours)] == expected


def test_large_bundle_is_fast_and_complete() -> None:
    rng = np.random.default_rng(5)
    umis = list(dict.fromkeys("".join(rng.choice(list("ACGT"), 10)) for _ in range(5000)))
    counts = rng.integers(1, 50, len(umis))
    clusters = cluster_umis(umis, counts, strategy="directional")
    assert sum(len(c) for c in clusters) == len(umis)


def test_cluster_bundles_keeps_bundles_apart() -> None:
    umis = ["AAAA", "AAAT", "AAAT", "AAAA"]  # two bundles holding the same two UMIs
    codes, lengths = encode_umis(umis)
    cluster_of, is_rep = cluster_bundles(
        codes,
        lengths,
        np.array([5, 1, 5, 1]),
        lexicographic_ranks(umis),
        np.array([0, 2, 4]),
        strategy="directional",
    )
    assert cluster_of.tolist() == [0, 0, 1, 1]
    assert is_rep.tolist() == [True, False, True, False]


def test_hamming_neighbours_lists_pairs_within_bundle() -> None:
    codes, lengths = encode_umis(["AAAA", "AATA", "TTTT", "AAAA"])
    ptr, idx = hamming_neighbours(codes, lengths, np.array([0, 3, 4]), 1)
    assert [idx[ptr[i] : ptr[i + 1]].tolist() for i in range(4)] == [[1], [0], [], []]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: cluster_umis(["AA"], [1], strategy="unique"), "strategy must be one of"),
        (lambda: cluster_umis(["AA", "AA"], [1, 1], strategy="edit"), "distinct"),
        (lambda: cluster_umis(["AA"], [1, 2], strategy="edit"), "one entry per UMI"),
        (lambda: cluster_umis(["AA"], [0], strategy="edit"), "count must be >= 1"),
        (lambda: cluster_umis(["AA"], [1], strategy="edit", max_edits=-1), "max_edits"),
    ],
)
def test_bad_arguments_are_refused(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]


def test_empty_bundle() -> None:
    assert cluster_umis([], [], strategy="directional") == []


def test_canonical_duplex_umi_maps_both_orientations_to_one_key() -> None:
    assert canonical_duplex_umi("ACGT-TTGA") == ("ACGT-TTGA", "A")
    assert canonical_duplex_umi("TTGA-ACGT") == ("ACGT-TTGA", "B")
    assert canonical_duplex_umi("ACGT-ACGT") == ("ACGT-ACGT", "A")
    assert swap_duplex_umi("ACGT-TTGA") == "TTGA-ACGT"


@pytest.mark.parametrize("umi", ["ACGTTTGA", "A-B-C", "-ACGT", "ACGT-"])
def test_canonical_duplex_umi_refuses_non_duplex(umi: str) -> None:
    with pytest.raises(ValueError, match="duplex UMI"):
        canonical_duplex_umi(umi)
