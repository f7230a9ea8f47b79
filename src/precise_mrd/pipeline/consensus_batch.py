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
    MAX_PHRED,
    ConsensusParams,
    call_duplex_rows,
    call_families,
)
from precise_mrd.core.consensus_kernels import (
    depth_tags,
    reconcile_pairs,
    reconcile_read_pairs,
)
from precise_mrd.io.bam_columns import (
    STRAND_A,
    STRAND_B,
    STRAND_BOTH,
    ReadColumns,
    encode_consensus_records,
)
from precise_mrd.pipeline.consensus_alignment import (
    CigarArrays,
    CigarTable,
    align_read_rows,
    consensus_lengths,
    most_common_alignment,
    output_cigars,
    trim_consensus_rows,
)

I64Array = npt.NDArray[np.int64]
BatchResult = tuple[I64Array, I64Array, npt.NDArray[np.uint8], I64Array] | None


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

    # 1. per (molecule, end), the reads compatible with the most common alignment (fgbio)
    read_lengths = reads.lengths.astype(np.int64)
    keep, founder_keys, founder_reads = most_common_alignment(
        mol * 2 + end, read_lengths, cigar, is_reverse, cigars
    )
    end_founder = np.full(n_mol * 2, -1, dtype=np.int64)
    end_founder[founder_keys] = founder_reads
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
    f_founder = end_founder[f_mol * 2 + f_end]
    f_reverse, f_tid = is_reverse[f_founder], tid[first]
    f_mapq = np.minimum.reduceat(mapq[fam_order], offsets)

    # 3. matrices of the family reads, 5' ends in one column, and the consensus of every family
    width = int(read_lengths[fam_order].max())
    fam_of_read = np.repeat(np.arange(len(offsets)), np.diff(np.append(offsets, len(fam_order))))
    founder_length = read_lengths[f_founder]
    shifts = np.where(
        f_reverse[fam_of_read] == 1, founder_length[fam_of_read] - read_lengths[fam_order], 0
    )
    bases_in, quals_in, rows_in = reads.bases, reads.quals, matrix_rows[fam_order]
    if params.overlap == "per_read_pair":
        bases_in, quals_in, rows_in = _reconcile_raw_pairs(
            reads, fam_order, rows_in, mol, start, cigars, params
        )
    bases_in, quals_in, rows_in = align_read_rows(bases_in, quals_in, rows_in, shifts)
    # NB: fgbio masks columns below min_reads in a simplex family; a duplex molecule's strands
    # are called with min_reads 1 (the duplex filter above applies to the molecule)
    min_depth = np.where(is_duplex_mol[f_mol], 1, params.min_reads[0])
    ss = call_families(
        bases_in, quals_in, offsets, params, rows=rows_in, width=width, min_depth=min_depth
    )
    fam_length = consensus_lengths(fam_of_read, read_lengths[fam_order], len(offsets), min_depth)

    # 4. one consensus per (molecule, end): duplex where both strands have a family
    end_key = f_mol * 2 + f_end
    end_change = np.ones(len(end_key), dtype=bool)
    end_change[1:] = np.diff(end_key) != 0
    end_first = np.flatnonzero(end_change)
    end_count = np.diff(np.append(end_first, len(end_key)))
    has_two = end_count == 2
    a_fam = end_first
    b_fam = np.where(has_two, end_first + 1, -1)
    # fgbio's consensus length: the family's; a duplex end's, the shorter strand's; never cut
    # before the founder's first aligned base (a record needs one)
    e_founder = f_founder[a_fam]
    e_reverse = is_reverse[e_founder]
    e_ids = cigar[e_founder]
    clip = np.where(e_reverse == 1, cigars.right_clips[e_ids], cigars.left_clips[e_ids])
    e_length = fam_length[a_fam].copy()
    e_length[has_two] = np.minimum(e_length[has_two], fam_length[b_fam[has_two]])
    e_length = np.clip(e_length, clip + 1, read_lengths[e_founder])
    fam_end = np.repeat(np.arange(len(end_first)), end_count)
    trim_consensus_rows(
        [ss.bases, ss.quals, ss.raw_bases, ss.counts, ss.depths, ss.errors],
        np.where(f_reverse == 1, founder_length - e_length[fam_end], 0),
    )
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
    e_tid = f_tid[a_fam]
    cigars, e_cigar, start_moves = output_cigars(cigars, e_ids, e_reverse, e_length)
    e_start = start[e_founder] + start_moves
    e_span = cigars.ref_spans[e_cigar]
    e_mapq = f_mapq[a_fam].copy()
    e_mapq[two] = np.minimum(e_mapq[two], f_mapq[b_fam[two]])

    # 5. overlap of R1 and R2 consensus of paired molecules
    paired_end = mol_paired[e_mol]
    mate = np.full(len(e_mol), -1, dtype=np.int64)
    pair_first = np.flatnonzero(paired_end[:-1] & (e_mol[1:] == e_mol[:-1]))
    mate[pair_first] = pair_first + 1
    mate[pair_first + 1] = pair_first
    if params.overlap == "per_consensus":
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


def _reconcile_raw_pairs(
    reads: ReadColumns,
    used: I64Array,
    rows: I64Array,
    mol: I64Array,
    start: I64Array,
    cigars: CigarArrays,
    params: ConsensusParams,
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8], I64Array]:
    """fgbio's per-read-pair overlap consensus on the raw reads ``used`` (row ``rows[k]`` for
    read ``used[k]``): the mates of one template (same molecule and read name) that overlap are
    reconciled on copies of their rows. Returns the matrices and the rows to use."""
    flags = reads.flags[used]
    paired = np.flatnonzero((flags & 0x1) != 0)
    if len(paired) < 2:
        return reads.bases, reads.quals, rows
    used_mol, used_name = mol[used], reads.name_hashes[used]
    is_r2 = (flags >> 7) & 1
    order = paired[np.lexsort((is_r2[paired], used_name[paired], used_mol[paired]))]
    same = (used_mol[order[1:]] == used_mol[order[:-1]]) & (
        used_name[order[1:]] == used_name[order[:-1]]
    )
    pair = np.flatnonzero(same & (is_r2[order[:-1]] == 0) & (is_r2[order[1:]] == 1))
    first, second = order[pair], order[pair + 1]
    read1, read2 = used[first], used[second]
    cigar1, cigar2 = reads.cigar_hashes[read1], reads.cigar_hashes[read2]
    start1, start2 = start[read1], start[read2]
    overlaps = (start2 < start1 + cigars.ref_spans[cigar1]) & (
        start1 < start2 + cigars.ref_spans[cigar2]
    )
    first, second = first[overlaps], second[overlaps]
    if len(first) == 0:
        return reads.bases, reads.quals, rows
    # NB: on copies: the decoded matrices are the stream's, not this batch's to change
    copied = np.concatenate([first, second])
    bases = np.concatenate([reads.bases, reads.bases[rows[copied]]])
    quals = np.concatenate([reads.quals, reads.quals[rows[copied]]])
    rows = rows.copy()
    rows[copied] = reads.bases.shape[0] + np.arange(len(copied), dtype=np.int64)
    reconcile_read_pairs(
        rows[first],
        rows[second],
        start1[overlaps],
        start2[overlaps],
        cigar1[overlaps],
        cigar2[overlaps],
        cigars.ref_flat,
        cigars.ref_bounds,
        bases,
        quals,
        MAX_PHRED,
    )
    return bases, quals, rows


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
