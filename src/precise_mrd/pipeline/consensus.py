"""Consensus stage: grouped BAM in, one consensus read (pair) per molecule out.

The input is the group stage's BAM (see ``docs/internals.md``): coordinate-sorted aligned reads,
each with an ``MI`` tag (``"7"``, or ``"7/A"``/``"7/B"`` for the two strands of duplex molecule 7)
and the UMI in ``RX``. The stage:

1. **streams** the BAM and buffers each molecule's reads until the stream has passed every read
   and mate position of the molecule (memory stays bounded by the reads of the current loci);
2. splits a finished molecule into the reads of each **end** of the original fragment: for a
   paired molecule the reads from the strand-A ``R1`` and strand-B ``R2`` cover the same end with
   the same orientation (fgbio's ``abR1s ++ baR2s``), likewise ``A/R2`` with ``B/R1``;
3. keeps, per end, only the reads with the most common alignment (start, CIGAR, strand), so that
   column ``i`` of every read is the same template base (fgbio's
   ``filterToMostCommonAlignment``);
4. drops molecules below ``params.min_reads`` (templates per strand; see
   :class:`~precise_mrd.core.consensus.ConsensusParams`);
5. calls single-strand consensus for every (molecule, end, strand) family of a batch in one
   vectorised call, combines the two strands of duplex ends, reconciles the overlap of R1 and R2
   (same base in both records, ``N`` where they conflict);
6. writes ``R1``/``R2`` consensus records (or one record per strand for single-end reads) with
   fgbio's tags ``MI RX cD cM cE`` and, for duplex-grouped molecules, ``aD bD aM bM aE bE``
   (``a`` is the ``/A`` strand when both were seen; with one strand seen it is that strand and
   ``bD == 0``); then sorts and indexes the output, writing to a temporary name first.

The consensus maths lives in :mod:`precise_mrd.core.consensus`; this module is only bookkeeping.

Edge cases, on purpose: a paired molecule with no usable read at one end (its mates were dropped
upstream) is counted in ``n_molecules_filtered_missing_end`` and not written; single-end reads of
the two strands of a duplex molecule cover opposite ends of the fragment, so each strand gives its
own unpaired single-strand record (no duplex combination is possible there).

Cost: per read, one pass of pysam attribute access into a compact tuple (the buffer holds only
the reads of molecules the stream has not yet passed); per batch of ~10,000 reads, a handful of
numpy passes (sorting, one ``bincount`` for all families, the posterior over 4 x width cells per
family); per consensus record, one SAM line parsed by htslib. Memory is bounded by the batch and
the depth of the current loci, not by the file.
"""

from __future__ import annotations

import heapq
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pysam

from precise_mrd.core.consensus import (
    ConsensusParams,
    FamilyConsensus,
    call_duplex,
    call_families,
    decode_ascii,
    encode_ascii,
    reconcile_overlap,
)
from precise_mrd.core.errors import InputDataError, InputFileError

__all__ = ["ConsensusStats", "call_consensus_bam"]

_SKIP_FLAGS = 0x4 | 0x100 | 0x800  # unmapped, secondary, supplementary
_MIN_BATCH_READS = 10_000  # finished molecules are processed together once this many reads wait
_CIGAR_QUERY_OPS = frozenset((0, 1, 4, 7, 8))  # M I S = X consume the read
_CIGAR_REF_OPS = frozenset((0, 2, 3, 7, 8))  # M D N = X consume the reference


@dataclass(frozen=True)
class ConsensusStats:
    """What the consensus stage did.

    ``family_size_histogram`` maps templates per molecule (both strands) to molecule counts over
    every molecule seen; ``duplex_family_size_histogram`` maps ``(reads on A, reads on B)`` to
    counts for duplex-grouped molecules (``B = 0``: one strand only). Filtered molecules are in
    the histograms but produce no output.
    """

    n_reads_in: int
    n_reads_skipped: int
    n_reads_filtered_alignment: int
    n_molecules: int
    n_duplex_molecules: int
    n_simplex_molecules: int
    n_molecules_filtered_min_reads: int
    n_molecules_filtered_missing_end: int
    n_consensus_reads_out: int
    family_size_histogram: dict[int, int] = field(default_factory=dict)
    duplex_family_size_histogram: dict[tuple[int, int], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        counts = {
            "n_reads_in": self.n_reads_in,
            "n_reads_skipped": self.n_reads_skipped,
            "n_molecules": self.n_molecules,
            "n_consensus_reads_out": self.n_consensus_reads_out,
        }
        for name, value in counts.items():
            if value < 0:
                raise ValueError(f"{name} must be >= 0; got {value}")
        emitted = self.n_duplex_molecules + self.n_simplex_molecules
        filtered = self.n_molecules_filtered_min_reads + self.n_molecules_filtered_missing_end
        if emitted + filtered != self.n_molecules:
            raise ValueError(
                f"emitted ({emitted}) + filtered ({filtered}) molecules must equal n_molecules "
                f"({self.n_molecules})"
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (tuple keys of the duplex histogram become ``"a/b"`` strings)."""
        out: dict[str, Any] = {
            name: getattr(self, name)
            for name in self.__dataclass_fields__
            if name not in ("family_size_histogram", "duplex_family_size_histogram")
        }
        out["family_size_histogram"] = {str(k): v for k, v in self.family_size_histogram.items()}
        out["duplex_family_size_histogram"] = {
            f"{a}/{b}": v for (a, b), v in self.duplex_family_size_histogram.items()
        }
        return out


@dataclass
class _Molecule:
    """Reads of one molecule waiting until the stream has passed all of them and their mates."""

    molecule_id: str
    is_duplex: bool
    needed_key: int
    reads: list[tuple[int, int, str, str, str]]
    # (packed: flag | is_strand_b << 12 | MAPQ << 13 | CIGAR id << 21,
    #  position key: tid << 32 | start, sequence, qualities as ASCII, RX)


@dataclass
class _Counters:
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


class _CigarTable:
    """Interns CIGAR strings; caches query length, reference span and query->reference offsets."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.strings: list[str] = []
        self.query_lengths: list[int] = []
        self.ref_spans: list[int] = []
        self.ref_offsets: list[npt.NDArray[np.int64]] = []

    def intern(self, cigar: str) -> int:
        found = self.ids.get(cigar)
        if found is not None:
            return found
        ops = _parse_cigar(cigar)
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
        self.ids[cigar] = new_id
        self.strings.append(cigar)
        self.query_lengths.append(sum(n for op, n in ops if op in _CIGAR_QUERY_OPS))
        self.ref_spans.append(ref)
        self.ref_offsets.append(np.asarray(offsets, dtype=np.int64))
        return new_id


def _parse_cigar(cigar: str) -> list[tuple[int, int]]:
    codes = {"M": 0, "I": 1, "D": 2, "N": 3, "S": 4, "H": 5, "P": 6, "=": 7, "X": 8}
    ops: list[tuple[int, int]] = []
    number = ""
    for char in cigar:
        if char.isdigit():
            number += char
        else:
            ops.append((codes[char], int(number)))
            number = ""
    return ops


def call_consensus_bam(
    grouped_bam_path: Path,
    out_bam_path: Path,
    *,
    params: ConsensusParams,
    threads: int = 1,
) -> ConsensusStats:
    """Call one consensus read (pair) per molecule of ``grouped_bam_path`` into ``out_bam_path``.

    The output is coordinate-sorted and indexed (``<out>.bai``); it appears only when complete.
    Raises :class:`InputFileError` if the input is missing, unreadable or not coordinate-sorted
    and :class:`InputDataError` if a read lacks its ``MI`` tag.
    """
    grouped_bam_path = Path(grouped_bam_path)
    out_bam_path = Path(out_bam_path)
    if threads < 1:
        raise ValueError(f"threads must be >= 1; got {threads}")
    source = str(grouped_bam_path)
    if not grouped_bam_path.is_file():
        raise InputFileError(source, "does not exist", "pass the grouped BAM written by `group`")
    try:
        bam = pysam.AlignmentFile(source, "rb", threads=threads)
    except (OSError, ValueError) as error:
        raise InputFileError(
            source, f"is not a readable BAM ({error})", "pass a BAM file"
        ) from None
    header = bam.header.to_dict()
    if header.get("HD", {}).get("SO") != "coordinate":
        bam.close()
        raise InputFileError(
            source, "is not coordinate-sorted (@HD SO is not 'coordinate')", "run `samtools sort`"
        )
    header["HD"] = {**header.get("HD", {"VN": "1.6"}), "SO": "unsorted"}
    header.setdefault("PG", []).append(
        {"ID": "precise_mrd.consensus", "PN": "precise_mrd", "CL": f"consensus {params}"}
    )

    out_bam_path.parent.mkdir(parents=True, exist_ok=True)
    unsorted_path = out_bam_path.with_name(f".{out_bam_path.name}.unsorted.tmp")
    sorted_path = out_bam_path.with_name(f".{out_bam_path.name}.sorted.tmp")
    index_path = out_bam_path.with_name(f".{out_bam_path.name}.bai.tmp")
    counters = _Counters()
    cigars = _CigarTable()
    try:
        with (
            bam,
            pysam.AlignmentFile(
                str(unsorted_path), "wbu", header=header, threads=threads
            ) as writer,
        ):
            for batch in _finished_molecules(bam, source, counters, cigars):
                _process_batch(batch, params, cigars, writer, counters)
        pysam.sort("-@", str(threads), "-o", str(sorted_path), str(unsorted_path))
        pysam.index(str(sorted_path), str(index_path))
        os.replace(sorted_path, out_bam_path)
        os.replace(index_path, Path(f"{out_bam_path}.bai"))
    finally:
        for path in (unsorted_path, sorted_path, index_path):
            path.unlink(missing_ok=True)
    return ConsensusStats(
        n_reads_in=counters.n_reads_in,
        n_reads_skipped=counters.n_reads_skipped,
        n_reads_filtered_alignment=counters.n_reads_filtered_alignment,
        n_molecules=counters.n_molecules,
        n_duplex_molecules=counters.n_duplex,
        n_simplex_molecules=counters.n_simplex,
        n_molecules_filtered_min_reads=counters.n_filtered_min_reads,
        n_molecules_filtered_missing_end=counters.n_filtered_missing_end,
        n_consensus_reads_out=counters.n_records_out,
        family_size_histogram=dict(sorted(counters.family_sizes.items())),
        duplex_family_size_histogram=dict(sorted(counters.duplex_sizes.items())),
    )


def _finished_molecules(
    bam: pysam.AlignmentFile, source: str, counters: _Counters, cigars: _CigarTable
) -> Iterator[list[_Molecule]]:
    """Stream ``bam``; yield batches of molecules whose reads and mates have all been seen.

    A molecule is finished once the stream is past the largest read or mate position of its
    reads (``needed_key``). A heap ordered by ``needed_key`` finds finished molecules without
    scanning the buffer; entries made stale by a later, larger ``needed_key`` are skipped.
    """
    pending: dict[str, _Molecule] = {}
    heap: list[tuple[int, str]] = []
    cigar_ids = cigars.ids
    finished: list[_Molecule] = []
    n_finished_reads = 0
    n_reads_in = n_reads_skipped = 0
    last_key = -1
    try:
        for read in bam.fetch(until_eof=True):
            n_reads_in += 1
            flag = read.flag
            if flag & _SKIP_FLAGS:
                n_reads_skipped += 1
                continue
            key = (read.reference_id << 32) | read.reference_start
            if key < last_key:
                raise InputFileError(
                    source,
                    f"is not coordinate-sorted (read {read.query_name} comes after a later "
                    "position)",
                    "run `samtools sort`",
                )
            last_key = key
            while heap and heap[0][0] < key:
                needed_key, finished_id = heapq.heappop(heap)
                molecule = pending.get(finished_id)
                if molecule is not None and molecule.needed_key == needed_key:
                    del pending[finished_id]
                    finished.append(molecule)
                    n_finished_reads += len(molecule.reads)
            if n_finished_reads >= _MIN_BATCH_READS:
                yield finished
                finished, n_finished_reads = [], 0
            try:
                mi = str(read.get_tag("MI"))
            except KeyError:
                raise InputDataError(
                    source,
                    f"read {read.query_name} has no MI tag",
                    "run the group stage first (every read needs an MI molecule id)",
                ) from None
            strand_b = 0
            is_duplex = len(mi) > 2 and mi[-2] == "/" and mi[-1] in "AB"
            if is_duplex:
                strand_b = int(mi[-1] == "B")
                mi = mi[:-2]
            needed = key
            if flag & 0x1 and not flag & 0x8:
                mate_key = (read.next_reference_id << 32) | read.next_reference_start
                if mate_key > key:
                    needed = mate_key
            molecule = pending.get(mi)
            if molecule is None:
                molecule = _Molecule(mi, is_duplex, needed, [])
                pending[mi] = molecule
                heapq.heappush(heap, (needed, mi))
            elif needed > molecule.needed_key:
                molecule.needed_key = needed
                heapq.heappush(heap, (needed, mi))
            try:
                rx = str(read.get_tag("RX"))
            except KeyError:
                rx = ""
            cigar = read.cigarstring or ""
            cigar_id = cigar_ids.get(cigar)
            if cigar_id is None:
                cigar_id = cigars.intern(cigar)
            packed = flag | (strand_b << 12) | (read.mapping_quality << 13) | (cigar_id << 21)
            molecule.reads.append(
                (packed, key, read.query_sequence or "", read.query_qualities_str or "", rx)
            )
    finally:
        counters.n_reads_in += n_reads_in
        counters.n_reads_skipped += n_reads_skipped
    finished.extend(pending.values())
    if finished:
        yield finished


def _process_batch(
    molecules: list[_Molecule],
    params: ConsensusParams,
    cigars: _CigarTable,
    writer: pysam.AlignmentFile,
    counters: _Counters,
) -> None:
    """Consensus of a batch of finished molecules, vectorised across all of their families."""
    rows = [r for m in molecules for r in m.reads]
    n_reads = len(rows)
    n_mol = len(molecules)
    per_molecule = np.fromiter((len(m.reads) for m in molecules), dtype=np.int64, count=n_mol)
    mol = np.repeat(np.arange(n_mol, dtype=np.int64), per_molecule)
    packed = np.fromiter((r[0] for r in rows), dtype=np.int64, count=n_reads)
    position_key = np.fromiter((r[1] for r in rows), dtype=np.int64, count=n_reads)
    flag = packed & 0xFFF
    strand = (packed >> 12) & 1
    mapq = (packed >> 13) & 0xFF
    cigar = packed >> 21
    start = position_key & 0xFFFFFFFF
    tid = position_key >> 32
    is_duplex_mol = np.fromiter((m.is_duplex for m in molecules), dtype=bool, count=n_mol)
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
    passes = params.passes_min_reads(n_a, n_b, is_duplex_mol)
    emit = passes & complete
    counters.n_molecules += n_mol
    counters.n_filtered_min_reads += int((~passes).sum())
    counters.n_filtered_missing_end += int((passes & ~complete).sum())
    both_strands = (n_a > 0) & (n_b > 0)
    counters.n_duplex += int((emit & is_duplex_mol & both_strands).sum())
    counters.n_simplex += int((emit & ~(is_duplex_mol & both_strands)).sum())
    counters.family_sizes.update((n_a + n_b).tolist())
    counters.duplex_sizes.update(
        zip(n_a[is_duplex_mol].tolist(), n_b[is_duplex_mol].tolist(), strict=True)
    )

    use = keep & emit[mol]
    idx = np.flatnonzero(use)
    if len(idx) == 0:
        return
    fam_order = idx[np.lexsort((strand[idx], end[idx], mol[idx]))]
    fam_key = (mol[fam_order] * 2 + end[fam_order]) * 2 + strand[fam_order]
    fam_change = np.ones(len(fam_order), dtype=bool)
    fam_change[1:] = np.diff(fam_key) != 0
    offsets = np.flatnonzero(fam_change)
    first = fam_order[offsets]
    f_mol, f_end = mol[first], end[first]
    f_start, f_cigar, f_reverse, f_tid = start[first], cigar[first], is_reverse[first], tid[first]
    f_mapq = np.minimum.reduceat(mapq[fam_order], offsets)

    # 3. matrices of the family reads, padded with N, and the consensus of every family
    read_order = fam_order.tolist()
    seqs = [rows[i][2] for i in read_order]
    quals = [rows[i][3] for i in read_order]
    width = max(map(len, seqs))
    base_matrix = _padded_matrix(seqs, width, "N")
    qual_matrix = _padded_matrix(quals, width, chr(33 + 2))
    base_codes = encode_ascii(base_matrix)
    ss = call_families(base_codes, qual_matrix - np.uint8(33), offsets, params)

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
        duplex = call_duplex(_take(ss, a_fam[two]), _take(ss, b_fam[two]), params)
        bases[two], cons_quals[two] = duplex.bases, duplex.quals
        depths[two], errors[two] = duplex.depths, duplex.errors
    e_mol = f_mol[a_fam]
    e_end = f_end[a_fam]
    e_start = f_start[a_fam]
    e_tid = f_tid[a_fam]
    e_cigar = f_cigar[a_fam]
    e_reverse = f_reverse[a_fam]
    e_length = np.asarray(cigars.query_lengths, dtype=np.int64)[e_cigar]
    e_span = np.asarray(cigars.ref_spans, dtype=np.int64)[e_cigar]
    e_mapq = f_mapq[a_fam].copy()
    e_mapq[two] = np.minimum(e_mapq[two], f_mapq[b_fam[two]])

    # 5. overlap of R1 and R2 consensus of paired molecules
    paired_end = mol_paired[e_mol]
    mate = np.full(len(e_mol), -1, dtype=np.int64)
    pair_first = np.flatnonzero(paired_end[:-1] & (e_mol[1:] == e_mol[:-1]))
    mate[pair_first] = pair_first + 1
    mate[pair_first + 1] = pair_first
    _reconcile_pairs(pair_first, e_start, e_cigar, e_length, cigars, bases, cons_quals, depths)

    # 6. per-record tags, vectorised, then the records
    column = np.arange(width)[None, :]
    inside = column < e_length[:, None]
    tags = _depth_tags(depths, errors, inside)
    a_tags = _depth_tags(ss.depths[a_fam], ss.errors[a_fam], inside)
    b_tags = [np.zeros(len(e_mol), dtype=np.int64)] * 2 + [np.zeros(len(e_mol))]
    if len(two):
        b_inside = inside[two]
        b_part = _depth_tags(ss.depths[b_fam[two]], ss.errors[b_fam[two]], b_inside)
        b_tags = [b_tags[0].copy(), b_tags[1].copy(), b_tags[2].copy()]
        for k in range(3):
            b_tags[k][two] = b_part[k]
    seq_ascii = decode_ascii(bases)
    umis = [_molecule_umi(m) for m in molecules]
    _write_records(
        writer,
        molecules,
        umis,
        e_mol,
        e_end,
        e_start,
        e_tid,
        e_cigar,
        e_reverse,
        e_length,
        e_span,
        e_mapq,
        mate,
        paired_end,
        seq_ascii,
        cons_quals,
        tags,
        a_tags,
        b_tags,
        cigars,
        counters,
    )


def _padded_matrix(strings: list[str], width: int, fill: str) -> npt.NDArray[np.uint8]:
    """A ``(len(strings), width)`` ``uint8`` matrix of ASCII strings, right-padded with ``fill``.

    >>> _padded_matrix(["ACG", "A"], 3, "N").tobytes()
    b'ACGANN'
    """
    # NB: str.ljust in C beats numpy fancy-index scattering of ragged rows by ~10x.
    flat = "".join([text.ljust(width, fill) for text in strings]).encode("ascii")
    return np.frombuffer(flat, dtype=np.uint8).reshape(len(strings), width)


def _take(ss: FamilyConsensus, index: npt.NDArray[np.int64]) -> FamilyConsensus:
    return FamilyConsensus(
        ss.bases[index],
        ss.quals[index],
        ss.raw_bases[index],
        ss.counts[index],
        ss.depths[index],
        ss.errors[index],
    )


def _reconcile_pairs(
    pair_first: npt.NDArray[np.int64],
    e_start: npt.NDArray[np.int64],
    e_cigar: npt.NDArray[np.int64],
    e_length: npt.NDArray[np.int64],
    cigars: _CigarTable,
    bases: npt.NDArray[np.uint8],
    quals: npt.NDArray[np.uint8],
    depths: npt.NDArray[np.int32],
) -> None:
    """Make R1 and R2 agree where they cover the same reference base (edits in place)."""
    if len(pair_first) == 0:
        return
    width = bases.shape[1]
    # Reference position of every query column (-1: soft clip, insertion or padding).
    offset_rows = np.full((len(cigars.strings), width), -1, dtype=np.int64)
    for cigar_id, offsets in enumerate(cigars.ref_offsets):
        n = min(len(offsets), width)
        offset_rows[cigar_id, :n] = offsets[:n]

    def ref_positions(records: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        rel = offset_rows[e_cigar[records]]
        return np.where(rel >= 0, rel + e_start[records][:, None], -1)

    ref1 = ref_positions(pair_first)
    ref2 = ref_positions(pair_first + 1)
    # NB: key = pair * BIG + ref position; within a pair the aligned columns increase with the
    # reference position, so one searchsorted finds every shared position of every pair.
    big = np.int64(1) << 40
    pair_index = np.arange(len(pair_first), dtype=np.int64)[:, None]
    valid1 = ref1 >= 0
    valid2 = ref2 >= 0
    key1 = (pair_index * big + ref1)[valid1]
    key2 = (pair_index * big + ref2)[valid2]
    hit = np.searchsorted(key2, key1)
    hit_clipped = np.minimum(hit, len(key2) - 1)
    shared = (hit < len(key2)) & (key2[hit_clipped] == key1)
    if not shared.any():
        return
    rows1, cols1 = np.nonzero(valid1)
    rows2, cols2 = np.nonzero(valid2)
    r1_row = pair_first[rows1[shared]]
    r1_col = cols1[shared]
    r2_row = pair_first[rows2[hit_clipped[shared]]] + 1
    r2_col = cols2[hit_clipped[shared]]
    new_bases, new_quals = reconcile_overlap(
        bases[r1_row, r1_col],
        quals[r1_row, r1_col],
        depths[r1_row, r1_col],
        bases[r2_row, r2_col],
        quals[r2_row, r2_col],
        depths[r2_row, r2_col],
    )
    bases[r1_row, r1_col] = new_bases
    bases[r2_row, r2_col] = new_bases
    quals[r1_row, r1_col] = new_quals
    quals[r2_row, r2_col] = new_quals


def _depth_tags(
    depths: npt.NDArray[np.int32], errors: npt.NDArray[np.int32], inside: npt.NDArray[np.bool_]
) -> list[npt.NDArray[Any]]:
    """Per record: max depth, min depth and raw error rate (errors / depth) over its columns."""
    max_depth = np.where(inside, depths, 0).max(axis=1).astype(np.int64)
    min_depth = np.where(inside, depths, np.iinfo(np.int32).max).min(axis=1).astype(np.int64)
    total_depth = np.where(inside, depths, 0).sum(axis=1)
    total_errors = np.where(inside, errors, 0).sum(axis=1)
    rate = np.divide(
        total_errors,
        total_depth,
        out=np.zeros(len(total_depth), dtype=np.float64),
        where=total_depth > 0,
    )
    return [max_depth, min_depth, rate]


def _molecule_umi(molecule: _Molecule) -> str:
    """Most common ``RX`` of the molecule, written as seen on strand A (``B-A`` swapped)."""
    a_umis = [r[4] for r in molecule.reads if not r[0] & (1 << 12)]
    if a_umis:
        return a_umis[0] if len(set(a_umis)) == 1 else Counter(a_umis).most_common(1)[0][0]
    umi = Counter(r[4] for r in molecule.reads).most_common(1)[0][0]
    left, dash, right = umi.partition("-")
    return f"{right}-{left}" if dash else umi


def _write_records(
    writer: pysam.AlignmentFile,
    molecules: list[_Molecule],
    umis: list[str],
    e_mol: npt.NDArray[np.int64],
    e_end: npt.NDArray[np.int64],
    e_start: npt.NDArray[np.int64],
    e_tid: npt.NDArray[np.int64],
    e_cigar: npt.NDArray[np.int64],
    e_reverse: npt.NDArray[np.int64],
    e_length: npt.NDArray[np.int64],
    e_span: npt.NDArray[np.int64],
    e_mapq: npt.NDArray[np.int64],
    mate: npt.NDArray[np.int64],
    paired_end: npt.NDArray[np.bool_],
    seq_ascii: npt.NDArray[np.uint8],
    quals: npt.NDArray[np.uint8],
    tags: list[npt.NDArray[Any]],
    a_tags: list[npt.NDArray[Any]],
    b_tags: list[npt.NDArray[Any]],
    cigars: _CigarTable,
    counters: _Counters,
) -> None:
    header = writer.header  # NB: the output header is the input's, so read tids carry over
    contig_names = list(header.references)
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
    mate_start = np.where(has_mate, e_start[mate_index] + 1, 0)
    mate_tid = e_tid[mate_index]
    qual_ascii = quals + np.uint8(33)
    # NB: formatting SAM text and parsing it in htslib is ~5x faster than setting fields and
    # tags one by one on a pysam.AlignedSegment.
    for i in range(n_records):
        m = int(e_mol[i])
        molecule = molecules[m]
        n = int(e_length[i])
        name = molecule.molecule_id
        tid = int(e_tid[i])
        if has_mate[i]:
            mate_name = "=" if mate_tid[i] == tid else contig_names[int(mate_tid[i])]
        else:
            mate_name = "*"
        line = (
            f"{name}\t{flags[i]}\t{contig_names[tid]}\t{e_start[i] + 1}\t{e_mapq[i]}\t"
            f"{cigars.strings[int(e_cigar[i])]}\t{mate_name}\t{mate_start[i]}\t{tlen[i]}\t"
            f"{seq_ascii[i, :n].tobytes().decode('ascii')}\t"
            f"{qual_ascii[i, :n].tobytes().decode('ascii')}\t"
            f"MI:Z:{name}\tRX:Z:{umis[m]}\tcD:i:{tags[0][i]}\tcM:i:{tags[1][i]}\t"
            f"cE:f:{tags[2][i]:.6g}"
        )
        if molecule.is_duplex:
            line += (
                f"\taD:i:{a_tags[0][i]}\tbD:i:{b_tags[0][i]}\taM:i:{a_tags[1][i]}"
                f"\tbM:i:{b_tags[1][i]}\taE:f:{a_tags[2][i]:.6g}\tbE:f:{b_tags[2][i]:.6g}"
            )
        writer.write(pysam.AlignedSegment.fromstring(line, header))
    counters.n_records_out += n_records
