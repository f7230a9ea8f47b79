"""Alignment of a molecule's reads: the CIGAR table and fgbio's most-common-alignment filter.

fgbio (``UmiConsensusCaller.filterToMostCommonAlignment``) keeps, per molecule end, the reads
whose alignment is compatible with the most common one, so that column ``i`` of every kept read
is the same template base *in read orientation*:

* each CIGAR is **simplified**: soft and hard clips, ``=`` and ``X`` count as ``M`` and adjacent
  operations of one kind merge (``5S20M1D25M`` -> ``25M1D25M``), then taken in read orientation
  (reversed for a reverse-strand read);
* reads are visited longest first (ties in file order); a read joins every group whose founder's
  simplified CIGAR it is a **prefix** of (the same operations, the last one no longer than the
  founder's: ``25M1D20M`` is a prefix of ``25M1D25M``, ``25M2D25M`` is not) and founds a group of
  its own when it joins none;
* the largest group wins (ties: the group founded first, i.e. by the longer read).

Reads of one end share their unclipped 5' end (the group stage groups by it), so a shorter read
is the longer one cut at its 3' end. In reference orientation a reverse-strand read's 5' end is
on the right: :func:`align_read_rows` shifts such reads right so that their 5' ends line up
before the columns are called. The consensus of an end is as long as fgbio's
``consensusReadLength`` (the ``n``-th longest read, ``n`` the family's ``min_reads``; the shorter
strand for a duplex end); :func:`trim_consensus_rows` moves a reverse-strand consensus back to
column 0, and :func:`output_cigars` gives each record the founder's CIGAR cut to that length
(from the left for a reverse-strand end, which moves its start).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import numpy.typing as npt

I64Array = npt.NDArray[np.int64]

_CIGAR_QUERY_OPS = frozenset((0, 1, 4, 7, 8))  # M I S = X consume the read
_CIGAR_REF_OPS = frozenset((0, 2, 3, 7, 8))  # M D N = X consume the reference
_CIGAR_CODES = "MIDNSHP=X"
_AS_MATCH = frozenset((4, 5, 7, 8))  # S H = X simplify to M
_PAD_BASE, _PAD_QUAL = 4, 2  # what the record decoder pads rows with (N, Q2)


@dataclass(frozen=True)
class CigarArrays:
    """What :func:`process_batch` reads of a :class:`CigarTable`, as arrays fixed at one moment
    (the table keeps growing in the caller's thread while a batch is processed in the worker)."""

    query_lengths: I64Array
    ref_spans: I64Array
    flat_words: npt.NDArray[np.uint8]
    word_offsets: I64Array
    ref_flat: I64Array
    ref_bounds: I64Array
    simple_ops: I64Array
    simple_lengths: I64Array
    simple_bounds: I64Array
    left_clips: I64Array
    right_clips: I64Array


class CigarTable:
    """Interns CIGARs; caches query length, reference span, query->reference offsets and the
    binary words of each (``flat_words[offsets[c]:offsets[c + 1]]``, little-endian ``uint32``)."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.hash_ids: dict[int, int] = {}
        self.strings: list[str] = []
        self.query_lengths: list[int] = []
        self.ref_spans: list[int] = []
        self.ref_offsets: list[npt.NDArray[np.int64]] = []
        self.simple: list[list[tuple[int, int]]] = []
        self.left_clips: list[int] = []
        self.right_clips: list[int] = []
        self.flat_words = np.zeros(0, dtype=np.uint8)
        self._offsets = np.zeros(1, dtype=np.int64)
        self._ref_flat: npt.NDArray[np.int64] | None = None
        self._ref_bounds = np.zeros(1, dtype=np.int64)
        self._arrays: CigarArrays | None = None

    def arrays(self) -> CigarArrays:
        """The table's arrays as they are now (rebuilt only after a new CIGAR)."""
        if self._arrays is None:
            ref_flat, ref_bounds = self.flat_ref_offsets()
            self._arrays = CigarArrays(
                query_lengths=np.asarray(self.query_lengths, dtype=np.int64),
                ref_spans=np.asarray(self.ref_spans, dtype=np.int64),
                flat_words=self.flat_words,
                word_offsets=self._offsets,
                ref_flat=ref_flat,
                ref_bounds=ref_bounds,
                simple_ops=np.asarray([op for ops in self.simple for op, _ in ops], dtype=np.int64),
                simple_lengths=np.asarray(
                    [n for ops in self.simple for _, n in ops], dtype=np.int64
                ),
                simple_bounds=np.concatenate(
                    ([0], np.cumsum([len(ops) for ops in self.simple]))
                ).astype(np.int64),
                left_clips=np.asarray(self.left_clips, dtype=np.int64),
                right_clips=np.asarray(self.right_clips, dtype=np.int64),
            )
        return self._arrays

    def intern(self, cigar: str) -> int:
        """The id of a CIGAR string (``"10M2D5M"``)."""
        found = self.ids.get(cigar)
        if found is not None:
            return found
        return self._add(cigar, _parse_cigar(cigar))

    def intern_ops(self, ops: list[tuple[int, int]]) -> int:
        """The id of a CIGAR given as ``(operation code, length)`` pairs."""
        cigar = "".join(f"{length}{_CIGAR_CODES[op]}" for op, length in ops)
        found = self.ids.get(cigar)
        return self._add(cigar, ops) if found is None else found

    def intern_words(self, key: int, words: bytes) -> int:
        """The id of a binary CIGAR (``key`` is a hash of it, checked by the caller)."""
        found = self.hash_ids.get(key)
        if found is None:
            ops = [(w & 0xF, w >> 4) for w in np.frombuffer(words, dtype="<u4").tolist()]
            cigar = "".join(f"{length}{_CIGAR_CODES[op]}" for op, length in ops)
            found = self.ids.get(cigar)
            if found is None:
                found = self._add(cigar, ops)
            self.hash_ids[key] = found
        return found

    def word_offsets(self) -> npt.NDArray[np.int64]:
        return self._offsets

    def flat_ref_offsets(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Every CIGAR's query->reference offsets, concatenated, and the bounds of each."""
        if self._ref_flat is None or len(self._ref_bounds) != len(self.strings) + 1:
            lengths = [len(o) for o in self.ref_offsets]
            self._ref_bounds = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
            self._ref_flat = (
                np.concatenate(self.ref_offsets).astype(np.int64)
                if self.ref_offsets
                else np.zeros(0, dtype=np.int64)
            )
        return self._ref_flat, self._ref_bounds

    def _add(self, cigar: str, ops: list[tuple[int, int]]) -> int:
        offsets: list[int] = []
        ref = 0
        for op, length in ops:
            if op in (0, 7, 8):
                offsets.extend(range(ref, ref + length))
            elif op in (1, 4):
                offsets.extend([-1] * length)
            if op in _CIGAR_REF_OPS:
                ref += length
        new_id = len(self.strings)
        self._arrays = None
        self.ids[cigar] = new_id
        self.strings.append(cigar)
        self.query_lengths.append(sum(n for op, n in ops if op in _CIGAR_QUERY_OPS))
        self.ref_spans.append(ref)
        self.ref_offsets.append(np.asarray(offsets, dtype=np.int64))
        self.simple.append(simplify_cigar(ops))
        self.left_clips.append(_clipped_query(ops))
        self.right_clips.append(_clipped_query(ops[::-1]))
        words = np.asarray([(n << 4) | op for op, n in ops], dtype="<u4").view(np.uint8)
        self.flat_words = np.concatenate([self.flat_words, words])
        self._offsets = np.append(self._offsets, len(self.flat_words))
        return new_id


def _parse_cigar(cigar: str) -> list[tuple[int, int]]:
    codes = {letter: code for code, letter in enumerate(_CIGAR_CODES)}
    ops: list[tuple[int, int]] = []
    number = ""
    for char in cigar:
        if char.isdigit():
            number += char
        else:
            ops.append((codes[char], int(number)))
            number = ""
    return ops


def simplify_cigar(ops: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """fgbio's ``simplifyCigar``: clips, ``=`` and ``X`` as ``M``, adjacent operations merged.

    >>> simplify_cigar(_parse_cigar("5S20M1D20M5H"))
    [(0, 25), (2, 1), (0, 25)]
    """
    simple: list[tuple[int, int]] = []
    for op, length in ops:
        op = 0 if op in _AS_MATCH else op
        if simple and simple[-1][0] == op:
            simple[-1] = (op, simple[-1][1] + length)
        else:
            simple.append((op, length))
    return simple


def _clipped_query(ops: list[tuple[int, int]]) -> int:
    """Read bases before the first aligned base (soft clips and insertions at that end)."""
    clipped = 0
    for op, length in ops:
        if op in (0, 7, 8):
            break
        if op in _CIGAR_QUERY_OPS:
            clipped += length
    return clipped


@numba.njit(cache=True, nogil=True)
def _is_prefix(
    a: int,
    a_reverse: int,
    b: int,
    b_reverse: int,
    ops: I64Array,
    lengths: I64Array,
    bounds: I64Array,
) -> bool:
    """Whether simplified CIGAR ``a`` (read orientation) is a prefix of ``b`` (fgbio's
    ``Cigar.isPrefixOf``)."""
    if a_reverse != b_reverse:
        return False
    n_a = bounds[a + 1] - bounds[a]
    n_b = bounds[b + 1] - bounds[b]
    if n_a > n_b:
        return False
    for k in range(n_a):
        ia = bounds[a + 1] - 1 - k if a_reverse else bounds[a] + k
        ib = bounds[b + 1] - 1 - k if b_reverse else bounds[b] + k
        if ops[ia] != ops[ib]:
            return False
        if k < n_a - 1:
            if lengths[ia] != lengths[ib]:
                return False
        elif lengths[ia] > lengths[ib]:
            return False
    return True


@numba.njit(cache=True, nogil=True)
def _most_common_alignment(
    order: I64Array,
    bounds: I64Array,
    cigar_ids: I64Array,
    reverse: I64Array,
    read_lengths: I64Array,
    ops: I64Array,
    lengths: I64Array,
    simple_bounds: I64Array,
) -> tuple[npt.NDArray[np.bool_], I64Array]:
    """Per group of reads (``order[bounds[g]:bounds[g + 1]]``, longest first), the reads kept
    and the read whose CIGAR the winning alignment group's record takes."""
    keep = np.zeros(len(order), dtype=np.bool_)
    founders = np.empty(len(bounds) - 1, dtype=np.int64)
    for g in range(len(bounds) - 1):
        lo, hi = bounds[g], bounds[g + 1]
        first = order[lo]
        uniform = True
        for i in range(lo + 1, hi):
            r = order[i]
            if cigar_ids[r] != cigar_ids[first] or reverse[r] != reverse[first]:
                uniform = False
                break
        founders[g] = first
        if uniform:
            for i in range(lo, hi):
                keep[order[i]] = True
            continue
        n = hi - lo
        group_founder = np.empty(n, dtype=np.int64)
        member = np.zeros((n, n), dtype=np.bool_)
        sizes = np.zeros(n, dtype=np.int64)
        n_groups = 0
        for i in range(n):
            r = order[lo + i]
            found = False
            for k in range(n_groups):
                f = group_founder[k]
                if _is_prefix(
                    cigar_ids[r], reverse[r], cigar_ids[f], reverse[f], ops, lengths, simple_bounds
                ):
                    member[k, i] = True
                    sizes[k] += 1
                    found = True
            if not found:
                group_founder[n_groups] = r
                member[n_groups, i] = True
                sizes[n_groups] = 1
                n_groups += 1
        best = 0
        for k in range(1, n_groups):
            if sizes[k] > sizes[best]:
                best = k
        for i in range(n):
            if member[best, i]:
                keep[order[lo + i]] = True
        founders[g] = _representative(order[lo:hi], member[best], cigar_ids, read_lengths)
    return keep, founders


@numba.njit(cache=True, nogil=True)
def _representative(
    reads: I64Array, member: npt.NDArray[np.bool_], cigar_ids: I64Array, read_lengths: I64Array
) -> int:
    """The read whose CIGAR a group's record takes: of the group's longest reads (they come
    first), one with the CIGAR most of them share (ties: the first seen)."""
    longest = -1
    best, best_count = -1, 0
    for i in range(len(reads)):
        if not member[i]:
            continue
        r = reads[i]
        if longest < 0:
            longest = read_lengths[r]
        if read_lengths[r] != longest:
            break
        count = 0
        for j in range(i, len(reads)):
            if (
                member[j]
                and read_lengths[reads[j]] == longest
                and cigar_ids[reads[j]] == cigar_ids[r]
            ):
                count += 1
        if count > best_count:
            best, best_count = r, count
    return best


def most_common_alignment(
    group_key: I64Array,
    read_lengths: I64Array,
    cigar_ids: I64Array,
    is_reverse: I64Array,
    cigars: CigarArrays,
) -> tuple[npt.NDArray[np.bool_], I64Array, I64Array]:
    """fgbio's filter over every group of a batch at once (``group_key``: one value per
    molecule end). Returns the reads kept, and the group keys with the read whose CIGAR each
    group's record takes (see :func:`_representative`)."""
    order = np.lexsort((-read_lengths, group_key)).astype(np.int64)
    sorted_key = group_key[order]
    starts = np.flatnonzero(np.diff(sorted_key, prepend=-1) != 0)
    bounds = np.append(starts, len(order)).astype(np.int64)
    keep, founders = _most_common_alignment(
        order,
        bounds,
        np.ascontiguousarray(cigar_ids, dtype=np.int64),
        np.ascontiguousarray(is_reverse, dtype=np.int64),
        np.ascontiguousarray(read_lengths, dtype=np.int64),
        cigars.simple_ops,
        cigars.simple_lengths,
        cigars.simple_bounds,
    )
    return keep, sorted_key[starts], founders


def align_read_rows(
    bases: npt.NDArray[np.uint8],
    quals: npt.NDArray[np.uint8],
    rows: I64Array,
    shifts: I64Array,
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8], I64Array]:
    """``bases``/``quals`` with, for every read ``k`` with ``shifts[k] > 0``, a new row holding
    read ``k`` (row ``rows[k]``) moved right by ``shifts[k]`` columns (the gap padded as the
    decoder pads; the padding past each read's end moves with it); and the rows, the moved
    reads pointing at their new rows. Unchanged (no copy) when nothing moves."""
    moved = np.flatnonzero(shifts > 0)
    if len(moved) == 0:
        return bases, quals, rows
    width = bases.shape[1]
    new_bases = np.full((len(moved), width), _PAD_BASE, dtype=bases.dtype)
    new_quals = np.full((len(moved), width), _PAD_QUAL, dtype=quals.dtype)
    src = rows[moved]
    for shift in np.unique(shifts[moved]).tolist():
        which = np.flatnonzero(shifts[moved] == shift)
        new_bases[which, shift:] = bases[src[which], : width - shift]
        new_quals[which, shift:] = quals[src[which], : width - shift]
    new_rows = rows.copy()
    new_rows[moved] = bases.shape[0] + np.arange(len(moved), dtype=np.int64)
    return (
        np.concatenate([bases, new_bases]),
        np.concatenate([quals, new_quals]),
        new_rows,
    )


def trim_consensus_rows(arrays: list[npt.NDArray[np.generic]], shifts: I64Array) -> None:
    """Move row ``f`` of every array (the column axis last) left by ``shifts[f]`` columns, in
    place, padding the freed columns on the right with zeros."""
    moved = np.flatnonzero(shifts > 0)
    for shift in np.unique(shifts[moved]).tolist():
        which = moved[shifts[moved] == shift]
        for array in arrays:
            array[which, ..., :-shift] = array[which, ..., shift:]
            array[which, ..., -shift:] = 0


def consensus_lengths(
    family_of_read: I64Array, read_lengths: I64Array, n_families: int, n_th: I64Array
) -> I64Array:
    """fgbio's ``consensusReadLength`` of every family: the ``n_th[f]``-longest read of family
    ``f`` (the shortest one when the family has fewer reads)."""
    order = np.lexsort((-read_lengths, family_of_read))
    sizes = np.bincount(family_of_read, minlength=n_families)
    firsts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    pick = firsts + np.minimum(np.maximum(n_th, 1), sizes) - 1
    chosen: I64Array = read_lengths[order][pick]
    return chosen


def _truncated(ops: list[tuple[int, int]], keep: int) -> list[tuple[int, int]]:
    """The first ``keep`` read bases of a CIGAR; operations that consume no read base are kept
    only between kept bases."""
    out: list[tuple[int, int]] = []
    left = keep
    for op, length in ops:
        if left == 0:
            break
        if op in _CIGAR_QUERY_OPS:
            take = min(length, left)
            out.append((op, take))
            left -= take
        else:
            out.append((op, length))
    while out and out[-1][0] not in _CIGAR_QUERY_OPS:
        out.pop()
    return out


def output_cigars(
    cigars: CigarArrays, ids: I64Array, reverse: I64Array, lengths: I64Array
) -> tuple[CigarArrays, I64Array, I64Array]:
    """The CIGARs of records whose consensus is ``lengths`` long: CIGAR ``ids[i]`` cut to
    ``lengths[i]`` read bases at its 3' end (the left, in reference orientation, of a
    reverse-strand record). Returns the arrays the ids index (a batch-local table when any
    CIGAR was cut), the ids and how far each record's start moves right."""
    cut = lengths < cigars.query_lengths[ids]
    if not cut.any():
        return cigars, ids, np.zeros(len(ids), dtype=np.int64)
    table = CigarTable()
    new_ids = np.empty(len(ids), dtype=np.int64)
    moves = np.zeros(len(ids), dtype=np.int64)
    keys = np.stack([ids, reverse, np.where(cut, lengths, -1)], axis=1)
    unique, inverse = np.unique(keys, axis=0, return_inverse=True)
    for k, (cigar_id, is_reverse, length) in enumerate(unique.tolist()):
        words = cigars.flat_words[cigars.word_offsets[cigar_id] : cigars.word_offsets[cigar_id + 1]]
        ops = [(w & 0xF, w >> 4) for w in words.view("<u4").tolist()]
        if length >= 0:
            ops = _truncated(ops[::-1], length)[::-1] if is_reverse else _truncated(ops, length)
        local = table.intern_ops(ops)
        which = np.flatnonzero(inverse.ravel() == k)
        new_ids[which] = local
        if is_reverse:
            moves[which] = int(cigars.ref_spans[cigar_id]) - table.ref_spans[local]
    return table.arrays(), new_ids, moves
