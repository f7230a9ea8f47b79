"""Cluster the UMIs of one bundle of reads into molecules, with UMI-tools' semantics.

Reads that start at the same place (a *bundle*) and carry the same or nearly the same UMI are PCR
copies of one original molecule. Each distinct UMI of a bundle is a node with a count (reads or
templates carrying it); a *strategy* decides which nodes belong to one molecule:

``identity``
    every distinct UMI is its own molecule (UMI-tools' ``unique``).
``edit``
    single linkage: UMIs within ``max_edits`` mismatches are joined transitively (UMI-tools'
    ``cluster``); the most abundant UMI represents the molecule.
``adjacency``
    connected components of the ``max_edits`` graph, then split around the fewest most abundant
    UMIs whose neighbourhoods cover the component (UMI-tools' ``adjacency``).
``directional``
    a node *a* absorbs a neighbour *b* (within ``max_edits``) when ``count(a) >= 2 * count(b) - 1``;
    absorption is followed transitively from the most abundant node down (UMI-tools'
    ``directional``, Smith et al. 2017).

Ordering is part of the result and follows UMI-tools 1.1.x exactly: nodes are visited by count,
descending, with ties in *input order* (UMI-tools keeps a bundle's UMIs in the order their first
read was met); the representative of a molecule (first element of a cluster) is its most abundant
UMI, ties broken by the lexicographically smallest UMI (UMI-tools sorts each component).

Distances are Hamming distances between UMIs of equal length (UMIs of different length are never
neighbours). The graph kernels are compiled with numba and work on many bundles in one call
(:func:`cluster_bundles`), so a BAM with hundreds of thousands of bundles costs one call, not one
Python loop per bundle.

>>> umis = ["ACGT", "ACGA", "TTTT", "ACGG"]
>>> cluster_umis(umis, [10, 2, 4, 1], strategy="directional")
[[0, 1, 3], [2]]
>>> cluster_umis(umis, [10, 2, 4, 1], strategy="identity")
[[0], [1], [2], [3]]
>>> canonical_duplex_umi("TTAC-GGCA"), canonical_duplex_umi("GGCA-TTAC")
(('GGCA-TTAC', 'B'), ('GGCA-TTAC', 'A'))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numba
import numpy as np
import numpy.typing as npt

STRATEGIES: Final[tuple[str, ...]] = ("identity", "edit", "adjacency", "directional")
DUPLEX_SEPARATOR: Final[str] = "-"

_STRATEGY_CODES: Final[dict[str, int]] = {
    "identity": 0,
    "edit": 1,
    "adjacency": 2,
    "directional": 3,
}

IntArray = npt.NDArray[np.int64]


def strategy_code(strategy: str) -> int:
    """The kernel's integer code of a strategy name; raises ``ValueError`` for an unknown one."""
    try:
        return _STRATEGY_CODES[strategy]
    except KeyError:
        raise ValueError(
            f"strategy must be one of {', '.join(STRATEGIES)}; got {strategy!r}"
        ) from None


def canonical_duplex_umi(umi: str) -> tuple[str, str]:
    """Map a duplex UMI ``"A-B"`` and its swap ``"B-A"`` to one key, plus a strand label.

    The key is the lexicographically smaller of the two orientations; the label is ``"A"`` when
    ``umi`` already is the key and ``"B"`` when it was swapped (a palindromic ``"X-X"`` is ``"A"``).

    >>> canonical_duplex_umi("AAC-GTT")
    ('AAC-GTT', 'A')
    >>> canonical_duplex_umi("GTT-AAC")
    ('AAC-GTT', 'B')
    """
    first, sep, second = umi.partition(DUPLEX_SEPARATOR)
    if not sep or not first or not second or DUPLEX_SEPARATOR in second:
        raise ValueError(f"a duplex UMI must look like 'A-B' (two parts, one '-'); got {umi!r}")
    swapped = f"{second}{DUPLEX_SEPARATOR}{first}"
    return (umi, "A") if umi <= swapped else (swapped, "B")


def swap_duplex_umi(umi: str) -> str:
    """``"A-B"`` -> ``"B-A"``; a UMI without ``-`` is returned unchanged.

    >>> swap_duplex_umi("AAC-GTT"), swap_duplex_umi("AACGTT")
    ('GTT-AAC', 'AACGTT')
    """
    first, sep, second = umi.partition(DUPLEX_SEPARATOR)
    return f"{second}{sep}{first}" if sep else umi


def encode_umis(umis: Sequence[str]) -> tuple[npt.NDArray[np.uint8], IntArray]:
    """UMIs as a zero-padded ``(n, max_len)`` uint8 matrix of ASCII bytes, and their lengths."""
    n = len(umis)
    lengths = np.fromiter((len(u) for u in umis), dtype=np.int64, count=n)
    width = int(lengths.max()) if n else 0
    if n and int(lengths.min()) == width:
        flat = np.frombuffer("".join(umis).encode("ascii"), dtype=np.uint8)
        return flat.reshape(n, width).copy(), lengths
    matrix = np.zeros((n, width), dtype=np.uint8)
    for row, umi in enumerate(umis):
        matrix[row, : len(umi)] = np.frombuffer(umi.encode("ascii"), dtype=np.uint8)
    return matrix, lengths


def lexicographic_ranks(umis: Sequence[str]) -> IntArray:
    """The rank of each UMI in sorted order (equal UMIs share a rank)."""
    order = sorted(range(len(umis)), key=umis.__getitem__)
    ranks = np.empty(len(umis), dtype=np.int64)
    rank = -1
    previous: str | None = None
    for index in order:
        if umis[index] != previous:
            rank += 1
            previous = umis[index]
        ranks[index] = rank
    return ranks


def code_ranks(codes: npt.NDArray[np.uint8]) -> IntArray:
    """:func:`lexicographic_ranks` of ASCII UMIs given as :func:`encode_umis`'s matrix.

    Each UMI is packed into one integer whose order is the text's (its bytes mapped to their
    rank among the bytes present, the padding ``0`` first), then ranked with one integer sort.

    >>> code_ranks(encode_umis(["CA", "AC", "A", "CA"])[0]).tolist()
    [2, 1, 0, 2]
    """
    n, width = codes.shape
    if n == 0 or width == 0:
        return np.zeros(n, dtype=np.int64)
    present = np.bincount(codes.ravel(), minlength=256) > 0
    present[0] = True  # the padding sorts before every byte
    symbol = (np.cumsum(present) - 1).astype(np.uint64)
    bits = max(1, int(present.sum() - 1).bit_length())
    if bits * width > 64:
        return _code_ranks_by_words(codes)
    key = np.zeros(n, dtype=np.uint64)
    for column in range(width):
        key = (key << np.uint64(bits)) | symbol[codes[:, column]]
    return np.asarray(np.unique(key, return_inverse=True)[1], dtype=np.int64).ravel()


def _code_ranks_by_words(codes: npt.NDArray[np.uint8]) -> IntArray:
    """:func:`code_ranks` for long UMIs: a sort on big-endian 64-bit words of the bytes."""
    n, width = codes.shape
    n_words = (width + 7) // 8
    padded = np.zeros((n, n_words * 8), dtype=np.uint8)
    padded[:, :width] = codes
    words = padded.view(">u8").astype(np.uint64)
    order = np.lexsort(words.T[::-1])
    sorted_words = words[order]
    new = np.ones(n, dtype=bool)
    new[1:] = (sorted_words[1:] != sorted_words[:-1]).any(axis=1)
    ranks = np.empty(n, dtype=np.int64)
    ranks[order] = np.cumsum(new) - 1
    return ranks


def hamming_neighbours(
    codes: npt.NDArray[np.uint8],
    lengths: IntArray,
    bundle_starts: IntArray,
    max_edits: int,
) -> tuple[IntArray, IntArray]:
    """Undirected neighbour lists (CSR ``ptr``, ``idx``) of UMIs within ``max_edits`` mismatches.

    Node ``i`` of rows ``bundle_starts[b]:bundle_starts[b+1]`` is compared with every other node of
    the same bundle only. ``idx[ptr[i]:ptr[i+1]]`` lists its neighbours in increasing order.
    """
    if max_edits < 0:
        raise ValueError(f"max_edits must be >= 0; got {max_edits}")
    return _neighbour_csr(
        np.ascontiguousarray(codes, dtype=np.uint8),
        np.ascontiguousarray(lengths, dtype=np.int64),
        np.ascontiguousarray(bundle_starts, dtype=np.int64),
        int(max_edits),
    )


def cluster_bundles(
    codes: npt.NDArray[np.uint8],
    lengths: IntArray,
    counts: IntArray,
    lex_ranks: IntArray,
    bundle_starts: IntArray,
    *,
    strategy: str,
    max_edits: int = 1,
) -> tuple[IntArray, npt.NDArray[np.bool_]]:
    """Cluster the UMIs of many bundles at once.

    Rows ``bundle_starts[b]:bundle_starts[b+1]`` of ``codes`` (see :func:`encode_umis`) are the
    distinct UMIs of bundle ``b`` in first-seen order, with their ``counts`` and ``lex_ranks``
    (any order-preserving integer code of the UMI strings). Returns, per row, a cluster number
    (0, 1, ... in bundle order, then in the order UMI-tools creates clusters) and whether the row
    is its cluster's representative.
    """
    code = strategy_code(strategy)
    if max_edits < 0:
        raise ValueError(f"max_edits must be >= 0; got {max_edits}")
    n = len(counts)
    starts = np.ascontiguousarray(bundle_starts, dtype=np.int64)
    if len(starts) == 0 or starts[0] != 0 or starts[-1] != n or np.any(np.diff(starts) < 0):
        raise ValueError(f"bundle_starts must rise from 0 to {n}; got {len(starts)} entries")
    count_array = np.ascontiguousarray(counts, dtype=np.int64)
    if n and int(count_array.min()) < 1:
        raise ValueError("every UMI count must be >= 1")
    if code == 0:
        return np.arange(n, dtype=np.int64), np.ones(n, dtype=np.bool_)
    ptr, idx = hamming_neighbours(codes, lengths, starts, max_edits)
    cluster_of, is_representative = _cluster_kernel(
        starts,
        count_array,
        np.ascontiguousarray(lex_ranks, dtype=np.int64),
        ptr,
        idx,
        code,
    )
    return cluster_of, is_representative


def cluster_umis(
    umis: Sequence[str],
    counts: Sequence[int] | npt.NDArray[np.integer],
    *,
    strategy: str,
    max_edits: int = 1,
) -> list[list[int]]:
    """Cluster one bundle's distinct UMIs; each cluster lists indices into ``umis``.

    ``umis`` must be distinct and in first-seen order (ties in count are visited in this order).
    A cluster's first index is its representative ("final") UMI; the others follow by count,
    descending, then by UMI. Clusters come in the order UMI-tools creates them.

    >>> cluster_umis(["AAAA", "AAAT", "AATT"], [4, 2, 1], strategy="edit")
    [[0, 1, 2]]
    >>> cluster_umis(["AAAA", "AAAT", "AATT"], [4, 2, 1], strategy="adjacency")
    [[0], [1, 2]]
    """
    if len(set(umis)) != len(umis):
        raise ValueError("umis must be distinct")
    count_array = np.asarray(counts, dtype=np.int64)
    if count_array.shape != (len(umis),):
        raise ValueError(
            f"counts must have one entry per UMI ({len(umis)}); got {count_array.shape}"
        )
    if not umis:
        return []
    codes, lengths = encode_umis(umis)
    ranks = lexicographic_ranks(umis)
    cluster_of, is_rep = cluster_bundles(
        codes,
        lengths,
        count_array,
        ranks,
        np.array([0, len(umis)], dtype=np.int64),
        strategy=strategy,
        max_edits=max_edits,
    )
    n_clusters = int(cluster_of.max()) + 1
    members: list[list[int]] = [[] for _ in range(n_clusters)]
    order = np.lexsort((ranks, -count_array, ~is_rep))
    for index in order.tolist():
        members[int(cluster_of[index])].append(index)
    return members


@numba.njit(cache=True, nogil=True)
def _within(codes: npt.NDArray[np.uint8], i: int, j: int, length: int, max_edits: int) -> bool:
    mismatches = 0
    for position in range(length):
        if codes[i, position] != codes[j, position]:
            mismatches += 1
            if mismatches > max_edits:
                return False
    return True


@numba.njit(cache=True, nogil=True)
def _neighbour_csr(
    codes: npt.NDArray[np.uint8], lengths: IntArray, starts: IntArray, max_edits: int
) -> tuple[IntArray, IntArray]:
    n = codes.shape[0]
    degree = np.zeros(n + 1, dtype=np.int64)
    for b in range(len(starts) - 1):
        lo, hi = starts[b], starts[b + 1]
        for i in range(lo, hi):
            for j in range(i + 1, hi):
                if lengths[i] == lengths[j] and _within(codes, i, j, lengths[i], max_edits):
                    degree[i + 1] += 1
                    degree[j + 1] += 1
    ptr = np.cumsum(degree)
    idx = np.empty(ptr[n], dtype=np.int64)
    fill = ptr[:n].copy()
    for b in range(len(starts) - 1):
        lo, hi = starts[b], starts[b + 1]
        for i in range(lo, hi):
            for j in range(i + 1, hi):
                if lengths[i] == lengths[j] and _within(codes, i, j, lengths[i], max_edits):
                    idx[fill[i]] = j
                    fill[i] += 1
                    idx[fill[j]] = i
                    fill[j] += 1
    # NB: neighbours of i are appended in increasing j for j > i but i's smaller neighbours were
    # written first in increasing order too, so every list is already sorted.
    return ptr, idx


@numba.njit(cache=True, nogil=True)
def _cluster_kernel(
    starts: IntArray,
    counts: IntArray,
    ranks: IntArray,
    ptr: IntArray,
    idx: IntArray,
    code: int,
) -> tuple[IntArray, npt.NDArray[np.bool_]]:
    n = len(counts)
    cluster_of = np.full(n, -1, dtype=np.int64)
    is_rep = np.zeros(n, dtype=np.bool_)
    stamp = np.full(n, -1, dtype=np.int64)  # BFS visit marker: the id of the search that saw it
    covered = np.full(n, -1, dtype=np.int64)
    stack = np.empty(max(n, 1), dtype=np.int64)
    members = np.empty(max(n, 1), dtype=np.int64)
    next_cluster = 0
    search = 0
    rank_span = (ranks.max() + 1) if n else 1
    for b in range(len(starts) - 1):
        lo, hi = starts[b], starts[b + 1]
        if hi == lo:
            continue
        # visit order: count descending, ties in input (first-seen) order
        order = lo + np.argsort(-counts[lo:hi], kind="mergesort")
        for s in order:
            if cluster_of[s] != -1:
                continue
            # breadth-first search from s (directed for directional); collect the unassigned
            search += 1
            stamp[s] = search
            top = 0
            stack[top] = s
            top += 1
            n_members = 0
            while top > 0:
                top -= 1
                u = stack[top]
                if cluster_of[u] == -1:
                    members[n_members] = u
                    n_members += 1
                for k in range(ptr[u], ptr[u + 1]):
                    v = idx[k]
                    if stamp[v] == search:
                        continue
                    if code == 3 and counts[u] < 2 * counts[v] - 1:
                        continue
                    stamp[v] = search
                    stack[top] = v
                    top += 1
            if code == 3 or code == 1 or n_members == 1:
                # one cluster; representative: highest count, then smallest UMI
                best = members[0]
                for m in range(n_members):
                    u = members[m]
                    cluster_of[u] = next_cluster
                    if counts[u] > counts[best] or (
                        counts[u] == counts[best] and ranks[u] < ranks[best]
                    ):
                        best = u
                is_rep[best] = True
                next_cluster += 1
                continue
            # adjacency: fewest top nodes (count desc, then UMI) whose neighbourhoods cover it
            component = members[:n_members].copy()
            sort_key = -counts[component] * rank_span + ranks[component]
            sort_order = np.argsort(sort_key, kind="mergesort")
            ranked = component[sort_order]
            n_covered = 0
            n_leads = 0
            for i in range(n_members):
                u = ranked[i]
                n_leads += 1
                if covered[u] != search:
                    covered[u] = search
                    n_covered += 1
                for k in range(ptr[u], ptr[u + 1]):
                    v = idx[k]
                    if covered[v] != search:
                        covered[v] = search
                        n_covered += 1
                if n_covered == n_members:
                    break
            # observed starts as the leads; each lead takes its not-yet-observed neighbours
            search += 1
            for i in range(n_leads):
                stamp[ranked[i]] = search
            for i in range(n_leads):
                lead = ranked[i]
                cluster_of[lead] = next_cluster
                is_rep[lead] = True
                for k in range(ptr[lead], ptr[lead + 1]):
                    v = idx[k]
                    if stamp[v] != search:
                        stamp[v] = search
                        cluster_of[v] = next_cluster
                next_cluster += 1
    return cluster_of, is_rep
