"""Stage 1: group reads by molecule and write an ``MI`` tag (UMI-tools ``group`` semantics).

:func:`group_bam` streams a coordinate-sorted BAM twice and never makes a pysam object per read:
both passes run a compiled loop over the inflated binary records (:mod:`precise_mrd.io.bam`).

1. **Collect.** Each read that can be grouped (mapped, primary, not QC-failed, ``MAPQ >=
   min_mapq``, with a UMI) leaves a few integers in typed arrays: its own unclipped 5' end
   (contig, position, strand), its mate's (from the mate fields and the ``MC`` tag), a hash of its
   name and a UMI code. Everything else is counted by reason and dropped.
2. **Cluster.** Mates are joined by name into templates; a template takes the ends and UMI of its
   first record in the file. Templates are bundled by their ends, as UMI-tools does:
   single-end ``(contig, strand, unclipped 5' position)``; paired-end ``(R1's end and strand,
   R2's end and strand)``. For the duplex strategy ``paired`` the two ends are put in coordinate
   order, so the top-strand pair (R1 forward at the left end) and the bottom-strand pair (R1
   reverse at the right end) of one molecule share a bundle; the bottom strand's UMI ``B-A`` is
   swapped to ``A-B``; the directional rule clusters the swapped UMIs and the strands are labelled
   ``/A`` (R1 at the left end) and ``/B``. All UMI clustering is one call into
   :func:`precise_mrd.core.umi.cluster_bundles`; a UMI's count is its number of templates.
3. **Write.** A second pass over the file writes the kept records in their input order (still
   coordinate-sorted) with ``MI:Z:<int>`` (``<int>/A`` / ``<int>/B`` for ``paired``) to a
   temporary file, indexes it and renames both into place. Optionally a TSV with UMI-tools'
   ``--group-out`` columns is written.

UMI interning and the duplex swap tables are compiled loops too (hash tables whose hits are
checked byte for byte). :func:`prepare_grouping` runs passes 1-2 and hands back a
:class:`PreparedGrouping` whose :meth:`~PreparedGrouping.tagged_chunks` is pass 3 without a
file; :func:`precise_mrd.pipeline.consensus.group_and_call_consensus` takes the molecule ids as
arrays beside the untagged records instead (:meth:`~PreparedGrouping.molecule_chunks`: no copy
of the records to add the tag, no parse of it).

Measured on the standard benchmark sample (4,000,382 reads, duplex, 2 shared cores): passes 1-2
~2.8 s (earlier ~5 s, before ISA-L inflate and numpy hash tables); earlier the whole
``group_bam`` took ~13 s wall, about half of it writing the level-1 BGZF file and indexing it;
peak RSS ~900 MB. Earlier, on 1M reads: 3.2 s against 10.6 s for
``umi_tools group --paired --method=directional`` with the same partition. The optional
``--group-out`` TSV is written in a further, slower pysam pass.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numba
import numpy as np
import numpy.typing as npt
import pysam

from precise_mrd.core.errors import InputDataError
from precise_mrd.core.umi import (
    DUPLEX_SEPARATOR,
    STRATEGIES,
    canonical_duplex_umi,
    cluster_bundles,
    code_ranks,
    encode_umis,
    swap_duplex_umi,
)
from precise_mrd.io.bam import (
    MAX_UMI_LENGTH,
    STATUS_KEPT,
    STATUS_NAMES,
    BgzfWriter,
    bam_header_bytes,
    count_records,
    index_bam,
    iter_alignments,
    iter_record_chunks,
    not_sorted_error,
    open_bam,
    prefetch,
    require_umis,
    summarise_records,
    tag_records,
)
from precise_mrd.io.bam_parts import FilePart, iter_part_records

GROUP_STRATEGIES: Final[tuple[str, ...]] = (*STRATEGIES, "paired", "auto")
#: ``auto`` resolves to this for duplex UMIs (``A-B``) and to the other for single-strand ones
AUTO_STRATEGIES: Final[dict[bool, str]] = {True: "paired", False: "directional"}
GROUP_TSV_COLUMNS: Final[tuple[str, ...]] = (
    "read_id",
    "contig",
    "position",
    "gene",
    "umi",
    "umi_count",
    "final_umi",
    "final_umi_count",
    "unique_id",
)
# NB: the grouped BAM is an intermediate file. zlib level 1 deflates real reads ~6x faster than
# level 6 (214 vs 35 MB/s on UMI-tools' paired.bam) for a ~30% larger file.
GROUPED_BAM_COMPRESSION_LEVEL: Final[int] = 1
SKIP_REASONS: Final[tuple[str, ...]] = (
    "unmapped",
    "secondary",
    "supplementary",
    "qc_fail",
    "low_mapq",
    "no_umi",
)

_FLAG_REVERSE: Final[int] = 0x10
_FLAG_MATE_REVERSE: Final[int] = 0x20
_FLAG_READ2: Final[int] = 0x80

Int64Array = npt.NDArray[np.int64]
_I64: Any = np.int64  # NB: typed Any so that compiled integer maths type-checks as int


@dataclass(frozen=True)
class GroupStats:
    """What :func:`group_bam` did. Family sizes count templates (read pairs) per molecule."""

    n_reads_in: int
    n_reads_out: int
    n_reads_skipped_by_reason: dict[str, int] = field(default_factory=dict)
    n_bundles: int = 0
    n_molecules: int = 0
    family_size_histogram: dict[int, int] = field(default_factory=dict)
    strategy: str = ""  # the strategy used (``auto`` resolved)

    def __post_init__(self) -> None:
        if self.n_reads_in < 0 or self.n_reads_out < 0:
            raise ValueError(
                f"read counts must be >= 0; got in={self.n_reads_in}, out={self.n_reads_out}"
            )
        n_skipped = sum(self.n_reads_skipped_by_reason.values())
        if self.n_reads_out + n_skipped != self.n_reads_in:
            raise ValueError(
                f"n_reads_out ({self.n_reads_out}) + skipped ({n_skipped}) must equal "
                f"n_reads_in ({self.n_reads_in})"
            )
        if sum(self.family_size_histogram.values()) != self.n_molecules:
            raise ValueError("family_size_histogram must count every molecule exactly once")


@dataclass
class _Collected:
    """Pass-1 output: one row per kept read, plus the record -> row map (-1 = dropped)."""

    slot_of_record: npt.NDArray[np.int32]
    flags: npt.NDArray[np.int32]
    tid: npt.NDArray[np.int32]
    pos5: Int64Array
    mate_tid: npt.NDArray[np.int32]
    mate_pos5: Int64Array
    name_hash: Int64Array
    umi_code: npt.NDArray[np.int32]
    umis: list[str]
    skipped: dict[str, int]
    n_records: int


class _UmiInterner:
    """UMI bytes -> dense codes in first-seen order, in compiled code (a hash table whose hits
    are checked byte for byte against the stored UMI).

    NB: the hash table is two numpy arrays (open addressing, linear probing), not a numba typed
    dict: creating the first typed dict of a process compiles for ~0.4 s.
    """

    def __init__(self) -> None:
        self.slot_hashes = np.zeros(1 << 12, dtype=np.int64)
        self.slot_codes = np.full(1 << 12, -1, dtype=np.int64)
        self.table = np.zeros((1024, MAX_UMI_LENGTH), dtype=np.uint8)
        self.lengths = np.zeros(1024, dtype=np.int64)
        self.n_codes = 0
        self._umis: list[str] | None = None

    def reserve(self, n_more: int) -> None:
        if 2 * (self.n_codes + n_more) > len(self.slot_codes):
            size = len(self.slot_codes)
            while 2 * (self.n_codes + n_more) > size:
                size *= 2
            self.slot_hashes, self.slot_codes = _rehash(self.slot_hashes, self.slot_codes, size)
        if self.n_codes + n_more > len(self.lengths):
            size = max(2 * len(self.lengths), self.n_codes + n_more)
            table = np.zeros((size, MAX_UMI_LENGTH), dtype=np.uint8)
            table[: self.n_codes] = self.table[: self.n_codes]
            lengths = np.zeros(size, dtype=np.int64)
            lengths[: self.n_codes] = self.lengths[: self.n_codes]
            self.table, self.lengths = table, lengths

    @property
    def umis(self) -> list[str]:
        if self._umis is None:
            self._umis = [
                self.table[i, : self.lengths[i]].tobytes().decode("ascii", errors="replace")
                for i in range(self.n_codes)
            ]
        return self._umis

    def remap_duplicates(self, codes: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
        """Merge codes whose bytes decode to the same text (only non-ASCII UMIs can)."""
        if not (self.table[: self.n_codes] >= 128).any():
            return codes  # ASCII bytes decode one-to-one
        umis = self.umis
        first: dict[str, int] = {}
        mapping = np.array([first.setdefault(u, i) for i, u in enumerate(umis)], dtype=np.int64)
        if len(first) == len(umis):
            return codes
        dense = np.unique(mapping, return_inverse=True)[1].astype(np.int32)
        self._umis = list(first)
        return dense[codes]


@numba.njit(cache=True, nogil=True)
def _slot_of(key: int, mask: int) -> int:
    """First probe of ``key`` in a table of ``mask + 1`` slots (Fibonacci hashing)."""
    mixed = np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)
    slot: int = _I64((mixed >> np.uint64(32)) & np.uint64(mask))
    return slot


@numba.njit(cache=True, nogil=True)
def _rehash(
    slot_hashes: Int64Array, slot_codes: Int64Array, size: int
) -> tuple[Int64Array, Int64Array]:
    """The entries of a hash table in a new table of ``size`` (a power of two) slots."""
    new_hashes = np.zeros(size, dtype=np.int64)
    new_codes = np.full(size, -1, dtype=np.int64)
    mask = size - 1
    for i in range(len(slot_codes)):
        if slot_codes[i] >= 0:
            slot = _slot_of(slot_hashes[i], mask)
            while new_codes[slot] >= 0:
                slot = (slot + 1) & mask
            new_hashes[slot] = slot_hashes[i]
            new_codes[slot] = slot_codes[i]
    return new_hashes, new_codes


@numba.njit(cache=True, nogil=True)
def _intern_umis(
    umis: npt.NDArray[np.uint8],
    lengths: Int64Array,
    rows: Int64Array,
    slot_hashes: Int64Array,
    slot_codes: Int64Array,
    table: npt.NDArray[np.uint8],
    table_lengths: Int64Array,
    n_codes: int,
) -> tuple[npt.NDArray[np.int32], int, bool]:
    codes = np.empty(len(rows), dtype=np.int32)
    for k in range(len(rows)):
        i = rows[k]
        n = lengths[i]
        h = np.uint64(14695981039346656037)
        for j in range(n):
            h = (h ^ np.uint64(umis[i, j])) * np.uint64(1099511628211)
        key: int = _I64(h ^ np.uint64(n))
        mask = len(slot_codes) - 1
        slot = _slot_of(key, mask)
        while slot_codes[slot] >= 0 and slot_hashes[slot] != key:
            slot = (slot + 1) & mask
        if slot_codes[slot] >= 0:
            code = slot_codes[slot]
            if table_lengths[code] != n:
                return codes, n_codes, True
            for j in range(n):
                if table[code, j] != umis[i, j]:
                    return codes, n_codes, True
        else:
            code = n_codes
            slot_hashes[slot] = key
            slot_codes[slot] = code
            table[code, :n] = umis[i, :n]
            table_lengths[code] = n
            n_codes += 1
        codes[k] = code
    return codes, n_codes, False


def _records_of(path: Path, part: FilePart | None) -> Iterator[npt.NDArray[np.uint8]]:
    """The records of the whole file, or of one part of it, in chunks."""
    return iter_record_chunks(path) if part is None else iter_part_records(path, part)


def _collect(
    path: Path,
    *,
    umi_tag: str,
    umi_from_read_name: bool,
    umi_separator: str,
    min_mapq: int,
    part: FilePart | None = None,
) -> _Collected:
    """Pass 1 over the binary records (see :func:`precise_mrd.io.bam.summarise_records`), or
    over those of ``part``."""
    with open_bam(path, require_sorted=True) as bam:
        contigs = list(bam.references)
    tag = np.frombuffer(umi_tag.encode("ascii"), dtype=np.uint8)
    separator = ord(umi_separator)
    order_state = np.array([-1, -1, 0], dtype=np.int64)
    interner = _UmiInterner()
    skipped = dict.fromkeys(SKIP_REASONS, 0)
    parts: dict[str, list[Any]] = {
        key: [] for key in ("flags", "tid", "pos5", "mate_tid", "mate_pos5", "name_hash", "umi")
    }
    statuses: list[npt.NDArray[np.int8]] = []
    n_records = 0
    for chunk in prefetch(_records_of(path, part)):
        (
            status,
            flags,
            tids,
            pos5s,
            mate_tids,
            mate_pos5s,
            name_hashes,
            umi_bytes,
            umi_lengths,
            first_unsorted,
        ) = summarise_records(chunk, tag, umi_from_read_name, separator, min_mapq, order_state)
        if first_unsorted >= 0:
            tid = int(tids[first_unsorted])
            contig = contigs[tid] if 0 <= tid < len(contigs) else str(tid)
            raise not_sorted_error(path, n_records + first_unsorted + 1, contig)
        n_records += len(status)
        statuses.append(status)
        kept = status == STATUS_KEPT
        for code, count in zip(*np.unique(status, return_counts=True), strict=True):
            if code != STATUS_KEPT:
                skipped[STATUS_NAMES[int(code)]] += int(count)
        kept_rows = np.flatnonzero(kept)
        if len(kept_rows):
            interner.reserve(len(kept_rows))
            codes, interner.n_codes, collided = _intern_umis(
                umi_bytes,
                umi_lengths,
                kept_rows,
                interner.slot_hashes,
                interner.slot_codes,
                interner.table,
                interner.lengths,
                interner.n_codes,
            )
            if collided:  # NB: a 64-bit hash collision; astronomically rare, but stay exact
                raise RuntimeError("UMI hash collision; please report this input")
            parts["umi"].append(codes)
        for key, values, dtype in (
            ("flags", flags, np.int32),
            ("tid", tids, np.int32),
            ("pos5", pos5s, np.int64),
            ("mate_tid", mate_tids, np.int32),
            ("mate_pos5", mate_pos5s, np.int64),
            ("name_hash", name_hashes, np.int64),
        ):
            parts[key].append(values[kept].astype(dtype))

    def joined(key: str) -> Any:
        values = parts.pop(key)
        dtype = np.int64 if key in ("pos5", "mate_pos5", "name_hash") else np.int32
        return np.concatenate(values) if values else np.zeros(0, dtype=dtype)

    all_status = np.concatenate(statuses) if statuses else np.zeros(0, dtype=np.int8)
    del statuses
    kept_all = all_status == STATUS_KEPT
    slots = np.full(len(all_status), -1, dtype=np.int32)
    slots[kept_all] = np.arange(int(kept_all.sum()), dtype=np.int32)
    return _Collected(
        slot_of_record=slots,
        flags=joined("flags"),
        tid=joined("tid"),
        pos5=joined("pos5"),
        mate_tid=joined("mate_tid"),
        mate_pos5=joined("mate_pos5"),
        name_hash=joined("name_hash"),
        umi_code=interner.remap_duplicates(joined("umi")),
        umis=interner.umis,
        skipped=skipped,
        n_records=n_records,
    )


@dataclass
class _Grouping:
    """Per kept read: molecule id, strand label (0 none, 1 A, 2 B) and its template's node."""

    molecule_of_read: Int64Array
    strand_of_read: npt.NDArray[np.int8]
    node_of_read: Int64Array
    node_umi: npt.NDArray[np.integer[Any]]
    node_count: Int64Array
    cluster_of_node: Int64Array
    representative_umi: Int64Array
    cluster_total: Int64Array
    umis: list[str]
    n_bundles: int
    n_molecules: int
    family_sizes: Int64Array
    molecule_ends: Int64Array  # (n_molecules, 2): the two packed ends of each one's bundle


def _template_of_reads(collected: _Collected) -> Int64Array:
    """The index of each kept read's template representative (its first mate in the file)."""
    n = len(collected.flags)
    template = np.arange(n, dtype=np.int64)
    has_mate = collected.mate_tid >= 0
    mated = np.flatnonzero(has_mate)
    if len(mated) == 0:
        return template
    # NB: numpy's default (SIMD) argsort is ~2x faster than a stable one on 4M hashes; the
    # earliest record of a name is then the smallest index of its run, not the first.
    order = mated[np.argsort(collected.name_hash[mated])]
    hashes = collected.name_hash[order]
    starts_run = np.ones(len(order), dtype=bool)
    starts_run[1:] = hashes[1:] != hashes[:-1]
    run_id = np.cumsum(starts_run) - 1
    first_of_run = np.minimum.reduceat(order, np.flatnonzero(starts_run))
    template[order] = first_of_run[run_id]
    return template


def _group(collected: _Collected, *, strategy: str, max_edits: int) -> _Grouping:
    is_duplex = strategy == "paired"
    umis = list(collected.umis)
    template_of_read = _template_of_reads(collected)
    reps = np.flatnonzero(template_of_read == np.arange(len(template_of_read)))
    flags = collected.flags[reps]
    own = (collected.tid[reps], collected.pos5[reps], (flags & _FLAG_REVERSE) > 0)
    mate = (collected.mate_tid[reps], collected.mate_pos5[reps], (flags & _FLAG_MATE_REVERSE) > 0)
    has_mate = mate[0] >= 0
    mate_rev = mate[2] & has_mate
    is_read2 = (flags & _FLAG_READ2) > 0
    umi_code = collected.umi_code[reps].copy()
    # NB: the per-read columns are not needed past this point: free them (peak RSS)
    for name in ("flags", "tid", "pos5", "mate_tid", "mate_pos5", "name_hash", "umi_code"):
        setattr(collected, name, np.zeros(0, dtype=getattr(collected, name).dtype))
    collected.umis = []
    strand = np.zeros(len(reps), dtype=np.int8)
    if is_duplex:
        own_first = _pack_end(own[0], own[1], own[2]) <= _pack_end(mate[0], mate[1], mate_rev)
        own_first |= ~has_mate
        swap = ~own_first
        # top strand (A): R1 is the left end
        r1_first = np.where(is_read2, ~own_first, own_first)
        swapped_code, lexical_label = _duplex_tables(umis)
        strand = np.where(r1_first, 1, 2).astype(np.int8)
        paired_bottom = has_mate & ~r1_first
        umi_code = np.where(paired_bottom, swapped_code[umi_code], umi_code)
        single = ~has_mate
        strand[single] = lexical_label[umi_code[single]]
        umi_code[single] = np.where(
            lexical_label[umi_code[single]] == 2, swapped_code[umi_code[single]], umi_code[single]
        )
    else:
        swap = is_read2 & has_mate
    # one int64 per end: contig, position (+2**32 so clipped ends below 0 stay ordered), strand
    own_end = _pack_end(own[0], own[1], own[2])
    mate_end = np.where(has_mate, _pack_end(mate[0], mate[1], mate_rev), -1)
    first_end = np.where(swap, mate_end, own_end)
    second_end = np.where(swap, own_end, mate_end)
    del own_end, mate_end
    first_seen = reps  # kept-read order is file order
    order = np.lexsort((first_seen, umi_code, second_end, first_end))
    sorted_first = first_end[order]
    sorted_second = second_end[order]
    sorted_umi = umi_code[order]
    del first_end, second_end
    n_templates = len(order)
    new_bundle = np.ones(n_templates, dtype=bool)
    if n_templates:
        new_bundle[1:] = (sorted_first[1:] != sorted_first[:-1]) | (
            sorted_second[1:] != sorted_second[:-1]
        )
    bundle_ends = np.stack((sorted_first[new_bundle], sorted_second[new_bundle]), axis=1)
    del sorted_first, sorted_second
    new_node = new_bundle.copy()
    if n_templates:
        new_node[1:] |= sorted_umi[1:] != sorted_umi[:-1]
    bundle_of_sorted = np.cumsum(new_bundle) - 1
    node_of_sorted = np.cumsum(new_node) - 1
    node_starts = np.flatnonzero(new_node)
    node_bundle = bundle_of_sorted[node_starts]
    node_umi = sorted_umi[node_starts]
    node_first = first_seen[order][node_starts]
    node_count = np.diff(np.append(node_starts, n_templates)).astype(np.int64)
    # within a bundle, nodes in first-seen order (UMI-tools' insertion order)
    node_order = np.lexsort((node_first, node_bundle))
    rank_of_node = np.empty_like(node_order)
    rank_of_node[node_order] = np.arange(len(node_order))
    n_bundles = int(bundle_of_sorted[-1]) + 1 if n_templates else 0
    bundle_starts = np.searchsorted(node_bundle[node_order], np.arange(n_bundles + 1))
    codes, lengths = (
        encode_umis(umis) if umis else (np.zeros((0, 0), np.uint8), np.zeros(0, np.int64))
    )
    ranks = code_ranks(codes)  # NB: lexicographic_ranks(umis) without sorting strings
    ordered_umi = node_umi[node_order]
    cluster_sorted, is_rep_sorted = cluster_bundles(
        codes[ordered_umi],
        lengths[ordered_umi],
        node_count[node_order],
        ranks[ordered_umi],
        bundle_starts.astype(np.int64),
        strategy="directional" if is_duplex else strategy,
        max_edits=max_edits,
    )
    cluster_of_node = cluster_sorted[rank_of_node]
    n_molecules = int(cluster_sorted.max()) + 1 if len(cluster_sorted) else 0
    bundle_of_molecule = np.zeros(n_molecules, dtype=np.int64)
    bundle_of_molecule[cluster_of_node] = node_bundle
    representative_umi = np.zeros(n_molecules, dtype=np.int64)
    representative_umi[cluster_sorted[is_rep_sorted]] = ordered_umi[is_rep_sorted]
    cluster_total = np.bincount(cluster_of_node, weights=node_count, minlength=n_molecules)
    node_of_template = np.empty(n_templates, dtype=np.int64)
    node_of_template[order] = node_of_sorted
    template_index = np.empty(len(template_of_read), dtype=np.int64)
    template_index[reps] = np.arange(len(reps))
    template_of_each = template_index[template_of_read]
    node_of_read = node_of_template[template_of_each]
    return _Grouping(
        molecule_of_read=cluster_of_node[node_of_read],
        strand_of_read=strand[template_of_each],
        node_of_read=node_of_read,
        node_umi=node_umi,
        node_count=node_count,
        cluster_of_node=cluster_of_node,
        representative_umi=representative_umi,
        cluster_total=cluster_total.astype(np.int64),
        umis=umis,
        n_bundles=n_bundles,
        n_molecules=n_molecules,
        family_sizes=np.bincount(cluster_of_node, weights=node_count).astype(np.int64),
        molecule_ends=bundle_ends[bundle_of_molecule],
    )


def _pack_end(
    tid: npt.NDArray[np.integer[Any]],
    pos: npt.NDArray[np.integer[Any]],
    reverse: npt.NDArray[np.bool_],
) -> Int64Array:
    """Contig, 5' position and strand of one read end as one sortable int64."""
    return (tid.astype(np.int64) << 34) | ((pos.astype(np.int64) + (1 << 32)) << 1) | reverse


def _duplex_tables(umis: list[str]) -> tuple[Int64Array, npt.NDArray[np.int8]]:
    """Per UMI code: the code of its swapped form (added to ``umis``) and its lexical label."""
    n_original = len(umis)
    if n_original == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int8)
    matrix, lengths = encode_umis(umis)
    swapped, label, added, bad, status = _duplex_kernel(matrix, lengths, ord(DUPLEX_SEPARATOR))
    if status == 1:
        raise InputDataError(
            "UMIs",
            f"UMI {umis[bad]!r} is not a duplex UMI 'A-B' but strategy 'paired' needs one",
            "use a single-strand strategy (e.g. --strategy directional, or umi.strategy: "
            "directional in a config), or --strategy auto to choose from the UMIs",
        )
    if status == 2:
        canonical_duplex_umi(umis[bad])  # raises the precise ValueError
    if status == 3:  # NB: a 64-bit hash collision; astronomically rare, but stay exact
        raise RuntimeError("UMI hash collision; please report this input")
    # the swapped forms that were not seen, in first-needed order
    for row in added.tolist():
        umis.append(swap_duplex_umi(umis[row]))
    return swapped, label


@numba.njit(cache=True, nogil=True)
def _duplex_kernel(
    matrix: npt.NDArray[np.uint8], lengths: Int64Array, separator: int
) -> tuple[Int64Array, npt.NDArray[np.int8], Int64Array, int, int]:
    """Swapped-form codes (new codes from ``n`` on for unseen forms), labels (1: the UMI sorts
    before its swap, or is a palindrome; 2: after), the source rows of the new codes, and
    (bad row, status): 1 no single separator, 2 an empty part."""
    n = len(lengths)
    width = matrix.shape[1]
    code_of_hash: dict[Any, int] = dict()
    hashes = np.empty(n, dtype=np.int64)
    for i in range(n):
        h = np.uint64(14695981039346656037)
        for j in range(lengths[i]):
            h = (h ^ np.uint64(matrix[i, j])) * np.uint64(1099511628211)
        hashes[i] = np.int64(h ^ np.uint64(lengths[i]))
        code_of_hash[hashes[i]] = i
    swapped = np.empty(n, dtype=np.int64)
    label = np.empty(n, dtype=np.int8)
    added = np.empty(n, dtype=np.int64)
    n_added = 0
    other = np.zeros(width, dtype=np.uint8)
    added_hashes: dict[Any, int] = dict()
    for i in range(n):
        length = lengths[i]
        where = -1
        count = 0
        for j in range(length):
            if matrix[i, j] == separator:
                count += 1
                if where < 0:
                    where = j
        if count != 1:
            return swapped, label, added[:n_added], i, 1
        if where == 0 or where == length - 1:
            return swapped, label, added[:n_added], i, 2
        # swapped form: second part, separator, first part
        second = length - where - 1
        for j in range(second):
            other[j] = matrix[i, where + 1 + j]
        other[second] = separator
        for j in range(where):
            other[second + 1 + j] = matrix[i, j]
        h = np.uint64(14695981039346656037)
        for j in range(length):
            h = (h ^ np.uint64(other[j])) * np.uint64(1099511628211)
        key = np.int64(h ^ np.uint64(length))
        code = -1
        if key in code_of_hash:
            code = code_of_hash[key]
            for j in range(length):
                if matrix[code, j] != other[j] or lengths[code] != length:
                    code = -2
                    break
        if code == -2:
            return swapped, label, added[:n_added], i, 3
        if code < 0:
            if key in added_hashes:
                code = added_hashes[key]
            else:
                code = n + n_added
                added_hashes[key] = code
                added[n_added] = i
                n_added += 1
        swapped[i] = code
        # label: 1 if umi <= swapped (byte order, equal lengths)
        cmp = 0
        for j in range(length):
            if matrix[i, j] != other[j]:
                cmp = -1 if matrix[i, j] < other[j] else 1
                break
        label[i] = 1 if cmp <= 0 else 2
    # codes of the added forms: their swap is the row they came from
    full_swapped = np.empty(n + n_added, dtype=np.int64)
    full_label = np.ones(n + n_added, dtype=np.int8)
    full_swapped[:n] = swapped
    full_label[:n] = label
    for k in range(n_added):
        full_swapped[n + k] = added[k]
    return full_swapped, full_label, added[:n_added], -1, 0


def _temporary_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def group_bam(
    in_bam_path: Path,
    out_bam_path: Path,
    *,
    strategy: str = "directional",
    max_edits: int = 1,
    umi_tag: str = "RX",
    umi_from_read_name: bool = False,
    umi_separator: str = "_",
    group_out_path: Path | None = None,
    min_mapq: int = 0,
) -> GroupStats:
    """Group the reads of ``in_bam_path`` by molecule and write them with ``MI`` tags.

    See the module docstring for the rules. Raises :class:`InputFileError` for a missing,
    truncated, unsorted or UMI-less BAM and ``ValueError`` for an unknown strategy.
    """
    in_bam_path = Path(in_bam_path)
    out_bam_path = Path(out_bam_path)
    prepared = prepare_grouping(
        in_bam_path,
        strategy=strategy,
        max_edits=max_edits,
        umi_tag=umi_tag,
        umi_from_read_name=umi_from_read_name,
        umi_separator=umi_separator,
        min_mapq=min_mapq,
        keep_read_detail=group_out_path is not None,
    )
    n_out = _write(
        in_bam_path,
        out_bam_path,
        prepared,
        umi_tag=umi_tag,
        umi_from_read_name=umi_from_read_name,
        umi_separator=umi_separator,
        group_out_path=group_out_path,
    )
    return prepared.stats(n_out)


@dataclass
class PreparedGrouping:
    """The outcome of the collect and cluster passes of :func:`group_bam`, before writing.

    :meth:`tagged_chunks` streams the kept records of the input with their ``MI`` tags (the
    grouped BAM's records, without the BGZF round trip); :meth:`stats` gives the
    :class:`GroupStats` once the number of records written is known. ``slots`` and ``grouping``
    (per-read detail for the ``--group-out`` TSV) are kept only when asked for.
    """

    in_bam_path: Path
    molecule_of_record: Int64Array  # -1: record dropped
    strand_of_record: npt.NDArray[np.int8]  # 0 none, 1 /A, 2 /B
    n_records: int
    skipped: dict[str, int]
    n_bundles: int
    n_molecules: int
    family_sizes: Int64Array
    molecule_ends: Int64Array  # (n_molecules, 2): the bundle's two packed ends, the id order
    slots: npt.NDArray[np.int32] | None = None
    grouping: _Grouping | None = None
    part: FilePart | None = None  # the records grouped: all of the file when None
    strategy: str = ""  # the strategy used (``auto`` resolved); "" for a part with no UMIs

    def with_molecule_ids(self, ids: Int64Array) -> PreparedGrouping:
        """The same grouping with molecule ``i`` numbered ``ids[i]`` (a part's molecules get the
        ids the whole file's grouping gives them: molecules are numbered in the order of their
        bundles' ends, see :attr:`molecule_ends`)."""
        kept = self.molecule_of_record >= 0
        renumbered = np.full(len(self.molecule_of_record), -1, dtype=np.int64)
        renumbered[kept] = ids[self.molecule_of_record[kept]]
        return dataclasses.replace(self, molecule_of_record=renumbered)

    def header(self) -> dict[str, Any]:
        """The input header with this stage's ``@PG`` line added."""
        return grouped_header(self.in_bam_path)

    def tagged_chunks(self, counter: list[int]) -> Iterator[npt.NDArray[np.uint8]]:
        """Chunks of binary records (input order) with ``MI``; adds the count to ``counter[0]``."""
        molecule_of_record = self.molecule_of_record
        strand_of_record = self.strand_of_record
        mi_tag = np.frombuffer(b"MI", dtype=np.uint8)
        n_done = 0
        for chunk in _records_of(self.in_bam_path, self.part):
            n_chunk = count_records(chunk)
            tagged, n_written = tag_records(
                chunk,
                molecule_of_record[n_done : n_done + n_chunk],
                strand_of_record[n_done : n_done + n_chunk],
                mi_tag,
            )
            n_done += n_chunk
            counter[0] += n_written
            yield tagged

    def molecule_chunks(
        self, counter: list[int]
    ) -> Iterator[tuple[npt.NDArray[np.uint8], Int64Array, npt.NDArray[np.int8]]]:
        """Chunks of binary records of the input, untagged, each with the molecule id (-1:
        record dropped) and ``MI`` strand (0 none, 1 ``/A``, 2 ``/B``) of its records: what
        :meth:`tagged_chunks` writes as tags, for a reader that takes them as arrays (see
        :func:`precise_mrd.io.bam_columns.decode_status`); adds the count of kept records to
        ``counter[0]``."""
        molecule_of_record = self.molecule_of_record
        strand_of_record = self.strand_of_record
        n_done = 0
        for chunk in _records_of(self.in_bam_path, self.part):
            n_chunk = count_records(chunk)
            molecules = molecule_of_record[n_done : n_done + n_chunk]
            n_done += n_chunk
            counter[0] += int(np.count_nonzero(molecules >= 0))
            yield chunk, molecules, strand_of_record[n_done - n_chunk : n_done]

    def stats(self, n_out: int) -> GroupStats:
        sizes, n_with_size = np.unique(self.family_sizes, return_counts=True)
        return GroupStats(
            n_reads_in=self.n_records,
            n_reads_out=n_out,
            n_reads_skipped_by_reason=dict(self.skipped),
            n_bundles=self.n_bundles,
            n_molecules=self.n_molecules,
            family_size_histogram={
                int(s): int(c) for s, c in zip(sizes.tolist(), n_with_size.tolist(), strict=True)
            },
            strategy=self.strategy,
        )


def grouped_header(in_bam_path: Path) -> dict[str, Any]:
    """The header of ``in_bam_path`` with the group stage's ``@PG`` line added."""
    with open_bam(in_bam_path, require_sorted=True) as bam:
        header: dict[str, Any] = bam.header.to_dict()
    programs = header.setdefault("PG", [])
    ids = {entry.get("ID") for entry in programs}
    program_id = "precise-mrd.group"
    while program_id in ids:
        program_id += "'"
    programs.append({"ID": program_id, "PN": "precise-mrd", "CL": "precise-mrd group"})
    return header


def prepare_grouping(
    in_bam_path: Path,
    *,
    strategy: str = "directional",
    max_edits: int = 1,
    umi_tag: str = "RX",
    umi_from_read_name: bool = False,
    umi_separator: str = "_",
    min_mapq: int = 0,
    keep_read_detail: bool = False,
    part: FilePart | None = None,
) -> PreparedGrouping:
    """Validate the options and the input, collect every read and cluster the UMIs (passes 1
    and 2 of :func:`group_bam`); the records are written by the caller. ``keep_read_detail``
    keeps what the ``--group-out`` TSV needs. With ``part`` (see
    :func:`precise_mrd.io.bam_parts.plan_parts`) only its records are grouped and its molecules
    are numbered from 0."""
    if strategy not in GROUP_STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(GROUP_STRATEGIES)}; got {strategy!r}")
    if max_edits < 0:
        raise ValueError(f"max_edits must be >= 0; got {max_edits}")
    if min_mapq < 0:
        raise ValueError(f"min_mapq must be >= 0; got {min_mapq}")
    if len(umi_separator) != 1 or not umi_separator.isascii():
        raise ValueError(f"umi_separator must be one ASCII character; got {umi_separator!r}")
    if len(umi_tag) != 2:
        raise ValueError(f"umi_tag must be a two-character SAM tag; got {umi_tag!r}")
    in_bam_path = Path(in_bam_path)
    require_umis(
        in_bam_path,
        umi_tag=umi_tag,
        from_read_name=umi_from_read_name,
        separator=umi_separator,
    )
    collected = _collect(
        in_bam_path,
        umi_tag=umi_tag,
        umi_from_read_name=umi_from_read_name,
        umi_separator=umi_separator,
        min_mapq=min_mapq,
        part=part,
    )
    if strategy == "auto":
        strategy = strategy_of_umis(collected.umis, in_bam_path)
    grouping = _group(collected, strategy=strategy or "directional", max_edits=max_edits)
    slots = collected.slot_of_record
    n_records = collected.n_records
    skipped = dict(collected.skipped)
    del collected  # NB: frees the per-read columns before the write pass
    kept = slots >= 0
    molecule_of_record = np.full(len(slots), -1, dtype=np.int64)
    molecule_of_record[kept] = grouping.molecule_of_read[slots[kept]]
    strand_of_record = np.zeros(len(slots), dtype=np.int8)
    if strategy == "paired":
        strand_of_record[kept] = grouping.strand_of_read[slots[kept]]
    return PreparedGrouping(
        in_bam_path=in_bam_path,
        molecule_of_record=molecule_of_record,
        strand_of_record=strand_of_record,
        n_records=n_records,
        skipped=skipped,
        n_bundles=grouping.n_bundles,
        n_molecules=grouping.n_molecules,
        family_sizes=grouping.family_sizes,
        molecule_ends=grouping.molecule_ends,
        slots=slots if keep_read_detail else None,
        grouping=grouping if keep_read_detail else None,
        part=part,
        strategy=strategy,
    )


def is_duplex_umi(umi: str) -> bool:
    """Whether ``umi`` is a duplex UMI ``A-B`` (two non-empty halves).

    >>> is_duplex_umi("ACG-TTA"), is_duplex_umi("ACGTTA"), is_duplex_umi("ACG-")
    (True, False, False)
    """
    first, separator, second = umi.partition(DUPLEX_SEPARATOR)
    return bool(separator and first and second and DUPLEX_SEPARATOR not in second)


def strategy_of_umis(umis: list[str], path: Path) -> str:
    """``auto``: ``paired`` when every distinct UMI of the reads is duplex (``A-B``),
    ``directional`` when none is ("" when there are none); a mixture is an error."""
    n_duplex = sum(map(is_duplex_umi, umis))
    if n_duplex and n_duplex < len(umis):
        duplex = next(u for u in umis if is_duplex_umi(u))
        single = next(u for u in umis if not is_duplex_umi(u))
        raise InputDataError(
            str(path),
            f"mixes duplex UMIs ('A-B', e.g. {duplex!r}) and single-strand UMIs (e.g. "
            f"{single!r}): {n_duplex:,} of {len(umis):,} distinct UMIs are duplex, so the UMI "
            "strategy cannot be chosen from the reads",
            "tag every read's UMI the same way, or choose the strategy: --strategy paired "
            "(duplex) or --strategy directional (umi.strategy in a config)",
        )
    if not umis:
        return ""
    return AUTO_STRATEGIES[n_duplex > 0]


def _write(
    in_bam_path: Path,
    out_bam_path: Path,
    prepared: PreparedGrouping,
    *,
    umi_tag: str,
    umi_from_read_name: bool,
    umi_separator: str,
    group_out_path: Path | None,
) -> int:
    """Pass 3: the kept records, in input order, with ``MI``; then the index and the TSV."""
    header = prepared.header()
    tmp_bam = _temporary_path(out_bam_path)
    tmp_bai = Path(str(tmp_bam) + ".bai")
    tmp_tsv = _temporary_path(group_out_path) if group_out_path is not None else None
    counter = [0]
    try:
        with BgzfWriter(tmp_bam, level=GROUPED_BAM_COMPRESSION_LEVEL) as writer:
            writer.write(bam_header_bytes(header, out_bam_path.parent))
            for tagged in prefetch(prepared.tagged_chunks(counter)):
                writer.write(tagged)
        index_bam(tmp_bam, tmp_bai)
        if tmp_tsv is not None and group_out_path is not None:
            assert prepared.slots is not None and prepared.grouping is not None
            _write_group_tsv(
                in_bam_path,
                tmp_tsv,
                prepared.slots,
                prepared.grouping,
                umi_tag=umi_tag,
                umi_from_read_name=umi_from_read_name,
                umi_separator=umi_separator,
            )
        os.replace(tmp_bam, out_bam_path)
        os.replace(tmp_bai, str(out_bam_path) + ".bai")
        if tmp_tsv is not None and group_out_path is not None:
            os.replace(tmp_tsv, group_out_path)
    finally:
        for leftover in (tmp_bam, tmp_bai, tmp_tsv):
            if leftover is not None and leftover.exists():
                leftover.unlink()
    return counter[0]


def _write_group_tsv(
    in_bam_path: Path,
    tsv_path: Path,
    slots: npt.NDArray[np.int32],
    grouping: _Grouping,
    *,
    umi_tag: str,
    umi_from_read_name: bool,
    umi_separator: str,
) -> None:
    """UMI-tools' ``--group-out`` table, one row per grouped read, in input order."""
    slot_of_record = slots.tolist()
    with (
        open_bam(in_bam_path, require_sorted=True) as bam,
        open(tsv_path, "w", encoding="ascii") as tsv,
    ):
        tsv.write("\t".join(GROUP_TSV_COLUMNS) + "\n")
        for record, read in enumerate(iter_alignments(bam, in_bam_path)):
            slot = slot_of_record[record]
            if slot >= 0:
                tsv.write(
                    _tsv_row(read, slot, grouping, umi_tag, umi_from_read_name, umi_separator)
                )


def _tsv_row(
    read: pysam.AlignedSegment,
    slot: int,
    grouping: _Grouping,
    umi_tag: str,
    umi_from_read_name: bool,
    umi_separator: str,
) -> str:
    node = int(grouping.node_of_read[slot])
    cluster = int(grouping.cluster_of_node[node])
    name = read.query_name or ""
    umi = name.rpartition(umi_separator)[2] if umi_from_read_name else str(read.get_tag(umi_tag))
    if read.is_reverse:
        cigar = read.cigartuples or []
        position = read.reference_end or 0
        if cigar and cigar[-1][0] == pysam.CSOFT_CLIP:
            position += cigar[-1][1]
    else:
        cigar = read.cigartuples or []
        position = read.reference_start
        if cigar and cigar[0][0] == pysam.CSOFT_CLIP:
            position -= cigar[0][1]
    return (
        f"{name}\t{read.reference_name}\t{position}\tNA\t{umi}\t"
        f"{int(grouping.node_count[node])}\t"
        f"{grouping.umis[int(grouping.representative_umi[cluster])]}\t"
        f"{int(grouping.cluster_total[cluster])}\t{cluster}\n"
    )
