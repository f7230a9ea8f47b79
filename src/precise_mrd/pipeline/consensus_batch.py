"""Consensus of a batch of finished molecules, vectorised across all of their families.

:func:`process_batch` is steps 3-6 of :mod:`precise_mrd.pipeline.consensus`: per molecule end,
the reads of the most common alignment; the ``min_reads`` filter (each end of a read pair on its
own); the single-strand consensus of every (molecule, end, strand) family in one call; the duplex
combination; the reconciliation of overlapping mates; and the binary consensus records with their
tags. :class:`Counters` and :class:`CigarArrays` are what it needs from the streaming caller.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np
import numpy.typing as npt

from precise_mrd.core.consensus import (
    ConsensusParams,
    call_duplex_rows,
    call_families,
)
from precise_mrd.core.consensus_kernels import depth_tags, reconcile_pairs
from precise_mrd.io.bam_columns import (
    STRAND_A,
    STRAND_B,
    STRAND_BOTH,
    ReadColumns,
    encode_consensus_records,
)

I64Array = npt.NDArray[np.int64]
BatchResult = tuple[I64Array, I64Array, npt.NDArray[np.uint8], I64Array] | None

_CIGAR_QUERY_OPS = frozenset((0, 1, 4, 7, 8))  # M I S = X consume the read
_CIGAR_REF_OPS = frozenset((0, 2, 3, 7, 8))  # M D N = X consume the reference
_CIGAR_CODES = "MIDNSHP=X"


@dataclass
class Counters:
    n_reads_in: int = 0
    n_reads_skipped: int = 0
    n_reads_filtered_alignment: int = 0
    n_molecules: int = 0
    n_duplex: int = 0
    n_simplex: int = 0
    n_filtered_min_reads: int = 0
    n_filtered_missing_end: int = 0
    n_records_out: int = 0
    family_sizes: Counter[int] = field(default_factory=Counter)
    duplex_sizes: Counter[tuple[int, int]] = field(default_factory=Counter)


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
            )
        return self._arrays

    def intern(self, cigar: str) -> int:
        """The id of a CIGAR string (``"10M2D5M"``)."""
        found = self.ids.get(cigar)
        if found is not None:
            return found
        return self._add(cigar, _parse_cigar(cigar))

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


def process_batch(
    reads: ReadColumns,
    matrix_rows: I64Array,
    mol: I64Array,
    params: ConsensusParams,
    cigars: CigarArrays,
    counters: Counters,
) -> BatchResult:
    """Consensus of a batch of finished molecules, vectorised across all of their families.

    ``reads`` holds the molecules' reads grouped by molecule (``mol`` = 0, 1, ...), each
    molecule's reads in file order, except ``bases``/``quals``, whose row for read ``i`` is
    ``matrix_rows[i]``. Returns the sort keys (position), the tie-breaking keys (the molecule's
    ``MI`` code), the bytes and the offsets of the records.
    """
    n_reads = len(reads)
    n_mol = int(mol[-1]) + 1
    mol_first = np.flatnonzero(np.diff(mol, prepend=-1) != 0)
    flag = reads.flags
    strand = reads.strand_b
    mapq = reads.mapqs
    cigar = reads.cigar_hashes  # interned ids (see _with_cigar_ids)
    start = reads.keys & 0xFFFFFFFF
    tid = reads.keys >> 32
    is_duplex_mol = reads.has_suffix[mol_first]
    is_paired = (flag & 0x1).astype(bool)
    is_reverse = ((flag >> 4) & 1).astype(np.int64)
    is_r2 = ((flag >> 7) & 1).astype(np.int64)
    # End 0 holds A/R1 + B/R2 (the same end of the fragment, same orientation); single-end reads
    # of the two strands cover opposite ends, so the strand is the end.
    end = np.where(is_paired, is_r2 ^ strand, strand)

    # 1. most common alignment per (molecule, end)
    order = np.lexsort((is_reverse, cigar, start, end, mol))
    group_key = mol[order] * 2 + end[order]
    align_change = np.ones(n_reads, dtype=bool)
    align_change[1:] = (
        (np.diff(group_key) != 0)
        | (np.diff(start[order]) != 0)
        | (np.diff(cigar[order]) != 0)
        | (np.diff(is_reverse[order]) != 0)
    )
    run_starts = np.flatnonzero(align_change)
    run_sizes = np.diff(np.append(run_starts, n_reads))
    run_group = group_key[run_starts]
    group_change = np.ones(len(run_starts), dtype=bool)
    group_change[1:] = np.diff(run_group) != 0
    group_first_run = np.flatnonzero(group_change)
    group_max = np.maximum.reduceat(run_sizes, group_first_run)
    run_group_index = np.cumsum(group_change) - 1
    is_max = run_sizes == group_max[run_group_index]
    # NB: ties go to the first run in sort order (smallest start), as deterministic as fgbio.
    best_run = np.zeros(len(run_starts), dtype=bool)
    _, first_max = np.unique(run_group_index[is_max], return_index=True)
    best_run[np.flatnonzero(is_max)[first_max]] = True
    keep_sorted = np.repeat(best_run, run_sizes)
    keep = np.zeros(n_reads, dtype=bool)
    keep[order[keep_sorted]] = True
    counters.n_reads_filtered_alignment += int(n_reads - keep.sum())

    # 2. families (molecule, end, strand) and the min_reads filter
    family_index = (mol[keep] * 2 + end[keep]) * 2 + strand[keep]
    fam_size = np.bincount(family_index, minlength=n_mol * 4).reshape(n_mol, 2, 2)
    per_strand = fam_size.max(axis=1)  # templates per strand = the better-covered end
    n_a, n_b = per_strand[:, 0], per_strand[:, 1]
    mol_paired = np.zeros(n_mol, dtype=bool)
    mol_paired[mol[is_paired]] = True
    has_end = fam_size.sum(axis=2) > 0
    complete = np.where(mol_paired, has_end.all(axis=1), has_end.any(axis=1))
    # NB: as fgbio, each end of a read pair (the R1 and the R2 consensus) must pass min_reads on
    # its own; single-end reads: the better-covered end (each strand is its own end)
    ends_pass = [
        params.passes_min_reads(fam_size[:, e, 0], fam_size[:, e, 1], is_duplex_mol)
        | ~has_end[:, e]
        for e in (0, 1)
    ]
    passes = np.where(
        mol_paired,
        ends_pass[0] & ends_pass[1] & has_end.any(axis=1),
        params.passes_min_reads(n_a, n_b, is_duplex_mol),
    )
    emit = passes & complete
    counters.n_molecules += n_mol
    counters.n_filtered_min_reads += int((~passes).sum())
    counters.n_filtered_missing_end += int((passes & ~complete).sum())
    both_strands = (n_a > 0) & (n_b > 0)
    counters.n_duplex += int((emit & is_duplex_mol & both_strands).sum())
    counters.n_simplex += int((emit & ~(is_duplex_mol & both_strands)).sum())
    _count_sizes(counters.family_sizes, n_a + n_b)
    if is_duplex_mol.any():
        pairs = n_a[is_duplex_mol] * (1 << 32) + n_b[is_duplex_mol]
        values, counts = np.unique(pairs, return_counts=True)
        for value, count in zip(values.tolist(), counts.tolist(), strict=True):
            counters.duplex_sizes[(value >> 32, value & 0xFFFFFFFF)] += count

    use = keep & emit[mol]
    idx = np.flatnonzero(use)
    if len(idx) == 0:
        return None
    fam_order = idx[np.lexsort((strand[idx], end[idx], mol[idx]))]
    fam_key = (mol[fam_order] * 2 + end[fam_order]) * 2 + strand[fam_order]
    fam_change = np.ones(len(fam_order), dtype=bool)
    fam_change[1:] = np.diff(fam_key) != 0
    offsets = np.flatnonzero(fam_change)
    first = fam_order[offsets]
    f_mol, f_end, f_strand = mol[first], end[first], strand[first]
    f_start, f_cigar, f_reverse, f_tid = start[first], cigar[first], is_reverse[first], tid[first]
    f_mapq = np.minimum.reduceat(mapq[fam_order], offsets)

    # 3. matrices of the family reads, padded with N, and the consensus of every family
    width = int(reads.lengths[fam_order].max())
    # NB: fgbio masks columns below min_reads in a simplex family; a duplex molecule's strands
    # are called with min_reads 1 (the duplex filter above applies to the molecule)
    min_depth = np.where(is_duplex_mol[f_mol], 1, params.min_reads[0])
    ss = call_families(
        reads.bases,
        reads.quals,
        offsets,
        params,
        rows=matrix_rows[fam_order],
        width=width,
        min_depth=min_depth,
    )

    # 4. one consensus per (molecule, end): duplex where both strands have a family
    end_key = f_mol * 2 + f_end
    end_change = np.ones(len(end_key), dtype=bool)
    end_change[1:] = np.diff(end_key) != 0
    end_first = np.flatnonzero(end_change)
    end_count = np.diff(np.append(end_first, len(end_key)))
    has_two = end_count == 2
    a_fam = end_first
    b_fam = np.where(has_two, end_first + 1, -1)
    bases = ss.bases[a_fam].copy()
    cons_quals = ss.quals[a_fam].copy()
    depths = ss.depths[a_fam].copy()
    errors = ss.errors[a_fam].copy()
    two = np.flatnonzero(has_two)
    if len(two):
        duplex = call_duplex_rows(ss, a_fam[two], b_fam[two], params)
        bases[two], cons_quals[two] = duplex.bases, duplex.quals
        depths[two], errors[two] = duplex.depths, duplex.errors
    e_mol = f_mol[a_fam]
    e_end = f_end[a_fam]
    e_start = f_start[a_fam]
    e_tid = f_tid[a_fam]
    e_cigar = f_cigar[a_fam]
    e_reverse = f_reverse[a_fam]
    e_length = cigars.query_lengths[e_cigar]
    e_span = cigars.ref_spans[e_cigar]
    e_mapq = f_mapq[a_fam].copy()
    e_mapq[two] = np.minimum(e_mapq[two], f_mapq[b_fam[two]])

    # 5. overlap of R1 and R2 consensus of paired molecules
    paired_end = mol_paired[e_mol]
    mate = np.full(len(e_mol), -1, dtype=np.int64)
    pair_first = np.flatnonzero(paired_end[:-1] & (e_mol[1:] == e_mol[:-1]))
    mate[pair_first] = pair_first + 1
    mate[pair_first + 1] = pair_first
    _reconcile_pairs(pair_first, e_start, e_cigar, e_length, cigars, bases, cons_quals, depths)

    # 6. per-record tags, vectorised, then the binary records
    n_e = len(e_mol)
    tags = list(depth_tags(depths, errors, np.arange(n_e, dtype=np.int64), e_length))
    a_tags = list(depth_tags(ss.depths, ss.errors, a_fam.astype(np.int64), e_length))
    b_tags: list[npt.NDArray[Any]] = [
        np.zeros(n_e, dtype=np.int64),
        np.zeros(n_e, dtype=np.int64),
        np.zeros(n_e),
    ]
    if len(two):
        b_part = depth_tags(ss.depths, ss.errors, b_fam[two].astype(np.int64), e_length[two])
        for k in range(3):
            b_tags[k][two] = b_part[k]
    umi_rows, umi_swap = _molecule_umi_rows(mol_first, n_reads, strand, reads.rx_hashes)
    umis, umi_lengths = _swap_duplex_umis(reads.rx_text, reads.rx_lengths, umi_rows, umi_swap)
    name_rows = mol_first[e_mol]
    n_records = len(e_mol)
    has_mate = paired_end & (mate >= 0)
    mate_index = np.where(has_mate, mate, np.arange(n_records))
    flags = np.where(e_reverse == 1, 0x10, 0)
    flags |= np.where(has_mate, 0x1 | 0x2, 0)
    flags |= np.where(has_mate & (e_end == 0), 0x40, 0)
    flags |= np.where(has_mate & (e_end == 1), 0x80, 0)
    flags |= np.where(has_mate & (e_reverse[mate_index] == 1), 0x20, 0)
    ref_end = e_start + e_span
    left = np.minimum(e_start, e_start[mate_index])
    right = np.maximum(ref_end, ref_end[mate_index])
    is_left = (e_start < e_start[mate_index]) | ((e_start == e_start[mate_index]) & (e_end == 0))
    tlen = np.where(has_mate, np.where(is_left, right - left, left - right), 0)
    data, record_offsets = encode_consensus_records(
        names=reads.mi_text[name_rows],
        name_lengths=reads.mi_lengths[name_rows],
        flags=flags,
        tids=e_tid,
        starts=e_start,
        mapqs=e_mapq,
        cigar_words=cigars.flat_words.view(np.uint32),
        cigar_offsets=cigars.word_offsets // 4,
        cigar_ids=e_cigar,
        ref_spans=cigars.ref_spans,
        mate_tids=np.where(has_mate, e_tid[mate_index], -1),
        mate_starts=np.where(has_mate, e_start[mate_index], -1),
        tlens=tlen,
        bases=bases,
        quals=cons_quals,
        lengths=e_length,
        umis=umis[e_mol],
        umi_lengths=umi_lengths[e_mol],
        int_tags=np.stack([tags[0], tags[1]], axis=1),
        float_tags=np.asarray(tags[2], dtype=np.float64)[:, None],
        duplex_int_tags=np.stack([a_tags[0], b_tags[0], a_tags[1], b_tags[1]], axis=1),
        duplex_float_tags=np.stack([a_tags[2], b_tags[2]], axis=1),
        is_duplex=is_duplex_mol[e_mol],
        origins=np.where(has_two, STRAND_BOTH, np.where(f_strand[a_fam] == 1, STRAND_B, STRAND_A)),
    )
    counters.n_records_out += n_records
    return (e_tid << 32) | e_start, reads.mi_codes[mol_first][e_mol], data, record_offsets


def _count_sizes(counter: Counter[int], sizes: I64Array) -> None:
    values, counts = np.unique(sizes, return_counts=True)
    for value, count in zip(values.tolist(), counts.tolist(), strict=True):
        counter[value] += count


@numba.njit(cache=True, nogil=True)
def _molecule_umi_rows(
    mol_first: I64Array, n_reads: int, strand_b: I64Array, rx_hashes: I64Array
) -> tuple[I64Array, npt.NDArray[np.bool_]]:
    """Per molecule, the read whose ``RX`` is the molecule's UMI: the most common ``RX`` of its
    strand-A reads (ties: the first seen), or of all reads when none is on A (then the UMI is
    written swapped, ``B-A`` -> ``A-B``)."""
    n_mol = len(mol_first)
    rows = np.empty(n_mol, dtype=np.int64)
    swap = np.zeros(n_mol, dtype=np.bool_)
    for m in range(n_mol):
        lo = mol_first[m]
        hi = mol_first[m + 1] if m + 1 < n_mol else n_reads
        any_a = False
        for i in range(lo, hi):
            if strand_b[i] == 0:
                any_a = True
                break
        best = -1
        best_count = 0
        for i in range(lo, hi):
            if any_a and strand_b[i] != 0:
                continue
            count = 0
            for j in range(lo, hi):
                if (not any_a or strand_b[j] == 0) and rx_hashes[j] == rx_hashes[i]:
                    count += 1
            if count > best_count:
                best = i
                best_count = count
        rows[m] = best
        swap[m] = not any_a
    return rows, swap


def _swap_duplex_umis(
    text: npt.NDArray[np.uint8],
    lengths: I64Array,
    rows: I64Array,
    swap: npt.NDArray[np.bool_],
) -> tuple[npt.NDArray[np.uint8], I64Array]:
    """The UMI text of ``rows``; where ``swap``, ``B-A`` written as ``A-B`` (first ``-``)."""
    umis = text[rows].copy()
    umi_lengths = lengths[rows].copy()
    for m in np.flatnonzero(swap).tolist():
        umi = umis[m, : umi_lengths[m]].tobytes().decode("ascii", errors="replace")
        left, dash, right = umi.partition("-")
        if dash:
            swapped = f"{right}-{left}".encode("ascii", errors="replace")
            umis[m, : len(swapped)] = np.frombuffer(swapped, dtype=np.uint8)
    return umis, umi_lengths


def _reconcile_pairs(
    pair_first: npt.NDArray[np.int64],
    e_start: npt.NDArray[np.int64],
    e_cigar: npt.NDArray[np.int64],
    e_length: npt.NDArray[np.int64],
    cigars: CigarArrays | CigarTable,
    bases: npt.NDArray[np.uint8],
    quals: npt.NDArray[np.uint8],
    depths: npt.NDArray[np.int32],
) -> None:
    """Make R1 and R2 agree where they cover the same reference base (edits in place)."""
    if len(pair_first) == 0:
        return
    if isinstance(cigars, CigarTable):
        cigars = cigars.arrays()
    ref_flat, ref_bounds = cigars.ref_flat, cigars.ref_bounds
    reconcile_pairs(
        np.asarray(pair_first, dtype=np.int64),
        np.asarray(e_start, dtype=np.int64),
        np.asarray(e_cigar, dtype=np.int64),
        ref_flat,
        ref_bounds,
        bases,
        quals,
        depths,
    )
