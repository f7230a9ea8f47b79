"""Evidence stage: molecule counts at tracked variants and background counts from ``consensus.bam``.

Input contract (docs/internals.md): a coordinate-sorted, indexed consensus BAM with one record per
consensus read, ``MI`` the molecule id shared by read 1 and read 2, duplex molecules with ``aD`` and
``bD`` both > 0, overlapping mates reconciled (same base or N in both).

What is counted, per target window:

* every aligned base (``M``/``=``/``X`` CIGAR blocks) of a primary, mapped, non-QC-fail record with
  mapping quality >= ``min_mapping_quality`` and base quality >= ``min_base_quality`` (N never
  counts);
* **molecules, not reads**: a position covered by both mates of a molecule counts once; if the two
  mates disagree there (should not happen after reconciliation) the molecule is dropped there;
* at a tracked variant: informative molecules (ref or alt) and alt molecules, simplex and duplex,
  by template orientation (the strand read 1 came from; read 2 is flipped so mates agree), the
  alt base's distance from the nearest end of its read, and molecules lost to low mapping quality;
* background: every other target position with an ACGT reference trinucleotide that is more than
  ``variant_exclusion_window`` bases from every tracked variant (tracked positions are never used):
  opportunities per pyrimidine context and errors per SBS-96 class, by molecule type and by template
  orientation of the pyrimidine (see :mod:`precise_mrd.core.background`), plus per-position totals
  for the locus-dispersion estimate.

Reading is compiled, not one pysam object per read: the raw records of each window (``_WINDOW``
bp) are found through the ``.bai`` or ``.csi`` and decoded in numba
(:mod:`precise_mrd.io.bam_regions`: ``IndexedRecordReader``, ``decode_aligned_bases``,
``decode_record_status``); dedup and class counts are numba/numpy over the window, so memory is
bounded by the depth of one window, not by the BAM. The tests compare every window with a reader
of one pysam object per read (``tests/pysam_reference.py``).
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from functools import partial
from itertools import pairwise
from pathlib import Path

import numba
import numpy as np
import numpy.typing as npt
import pysam

from precise_mrd.core.background import N_CLASSES, BackgroundCounts
from precise_mrd.core.calling import Evidence, VariantCounts
from precise_mrd.core.errors import InputDataError, InputFileError
from precise_mrd.core.records import Variant, merge_regions
from precise_mrd.io.bam_columns import STRAND_BOTH, strand_of_origin
from precise_mrd.io.bam_regions import (
    RECORD_LOW_MAPQ,
    RECORD_NO_DATA,
    RECORD_NO_KEY,
    IndexedRecordReader,
    decode_aligned_bases,
    decode_record_status,
    first_seen_codes,
)

IntArray = npt.NDArray[np.int64]
_WINDOW = 5000
_BASE_CODE = np.full(256, 4, dtype=np.int8)
for _i, _b in enumerate("ACGT"):
    _BASE_CODE[ord(_b)] = _i
    _BASE_CODE[ord(_b.lower())] = _i
_COMPLEMENT_CODE = np.array([3, 2, 1, 0, 4], dtype=np.int8)
# substitution index by (centre is T, pyrimidine-oriented alt base); -1 impossible
_SUB_LUT = np.array([[0, -1, 1, 2], [3, 4, 5, -1]], dtype=np.int64)
_SKIP_FLAGS = 0x4 | 0x100 | 0x200 | 0x800  # unmapped, secondary, QC fail, supplementary


@dataclass
class _Accumulator:
    errors: IntArray = field(default_factory=lambda: np.zeros(2 * 2 * N_CLASSES, dtype=np.int64))
    opportunities: IntArray = field(default_factory=lambda: np.zeros(2 * 2 * 32, dtype=np.int64))
    position_context: list[IntArray] = field(default_factory=list)
    position_errors: list[IntArray] = field(default_factory=list)
    position_opportunities: list[IntArray] = field(default_factory=list)
    variant_counts: dict[int, VariantCounts] = field(default_factory=dict)
    n_records: int = 0
    n_skipped: int = 0


@dataclass
class _RawReader:
    """Raw records of the BAM through its ``.bai``, and output rows reused from window to window.

    NB: fresh output arrays of a few MB per window cost more in page faults than filling them;
    the :class:`_Window` arrays of the raw path are views of ``rows``, valid until the next window.
    """

    records: IndexedRecordReader
    rows: IntArray = field(default_factory=lambda: np.zeros((4, 0), dtype=np.int64))

    def rows_for(self, n: int) -> IntArray:
        """Output rows (rel, base, read, distance) for at least ``n`` observations."""
        if self.rows.shape[1] < n:
            self.rows = np.empty((4, max(n, 2 * self.rows.shape[1])), dtype=np.int64)
        return self.rows


@dataclass
class _Window:
    """Aligned, deduplicated molecule observations of one window."""

    rel: IntArray  # position - window start
    base: IntArray
    duplex: IntArray
    template: IntArray  # 0: the molecule's top strand (see _orientation)
    distance: IntArray
    # records dropped for mapping quality: molecule (code per distinct MI), start, reference end
    low_mapq_molecule: IntArray
    low_mapq_start: IntArray
    low_mapq_end: IntArray
    both_strands: IntArray  # 1: a duplex molecule (seen on both strands)


def _read_window(
    bam: pysam.AlignmentFile,
    reader: _RawReader,
    chrom: str,
    start: int,
    end: int,
    min_base_quality: int,
    min_mapping_quality: int,
    acc: _Accumulator,
    first_window: bool,
) -> _Window:
    """The deduplicated molecule observations of ``[start, end)``, decoded from the raw records
    found through the BAM index; adds the window's record counts to ``acc``.

    The tests check it against a reader of one pysam object per read
    (``tests/pysam_reference.py``).
    """
    tid = bam.get_tid(chrom)
    if tid < 0:
        raise ValueError(f"invalid contig `{chrom}`")  # NB: what pysam's fetch raises
    raw = reader.records.region_records(tid, start, end)
    source = str(reader.records.bam_path)
    region = {"tid": tid, "start": start, "end": end, "skip_flags": _SKIP_FLAGS}
    status = decode_record_status(
        raw, **region, min_mapping_quality=min_mapping_quality, key_tag=b"MI", source=source
    )
    aligned = decode_aligned_bases(
        raw,
        **region,
        min_mapping_quality=min_mapping_quality,
        min_base_quality=min_base_quality,
        key_tag=b"MI",
        numeric_tags=(b"aD", b"bD", b"sO"),
        defaults=(0.0, 0.0, 0.0),
        source=source,
    )
    # NB: a read is seen by every window it spans; count it in the first one only
    counted = (status.starts >= start) | first_window
    acc.n_records += int(counted.sum())
    no_read = (status.status == RECORD_NO_KEY) | (status.status == RECORD_NO_DATA)
    acc.n_skipped += int((counted & no_read).sum())
    low = np.flatnonzero(status.status == RECORD_LOW_MAPQ)
    low_molecule = first_seen_codes(status.key_text[low])
    low_start, low_end = status.starts[low], status.ends[low]
    empty = np.zeros(0, dtype=np.int64)
    n_rows = aligned.record.size
    if not n_rows:
        return _Window(empty, empty, empty, empty, empty, low_molecule, low_start, low_end, empty)
    molecules = first_seen_codes(aligned.key_text)
    rows = reader.rows_for(n_rows)
    n_out = _molecule_observations_of_rows(
        rows,
        aligned.record,
        aligned.ref_pos,
        aligned.query_pos,
        aligned.bases,
        molecules,
        aligned.lengths,
        start,
        end,
    )
    tags = aligned.tag_values
    flags = aligned.flags
    duplex = ((tags[:, 0] > 0) & (tags[:, 1] > 0)).astype(np.int64)
    origin = tags[:, 2].astype(np.int64)
    template = strand_of_origin(flags, origin)
    read_idx = rows[2, :n_out]
    return _Window(
        rel=rows[0, :n_out],
        base=rows[1, :n_out],
        duplex=duplex[read_idx],
        template=template[read_idx],
        distance=rows[3, :n_out],
        low_mapq_molecule=low_molecule,
        low_mapq_start=low_start,
        low_mapq_end=low_end,
        both_strands=(origin == STRAND_BOTH).astype(np.int64)[read_idx],
    )


@numba.njit(cache=True, nogil=True)
def _molecule_observations_of_rows(
    out: IntArray,
    row_read: IntArray,
    row_ref: IntArray,
    row_query: IntArray,
    row_base: IntArray,
    read_mol: IntArray,
    read_qlen: IntArray,
    win_start: int,
    win_end: int,
) -> int:
    """One observation per (molecule, window position) with a confident base, from confident
    base rows already cut to the window (``decode_aligned_bases``: rows in read order, then
    CIGAR order), written to the columns of ``out`` (rel, base, read, distance; at least as many
    as rows); returns how many.

    The reads are grouped by molecule (counting sort) and each read's rows walked in order; each
    molecule fills a small buffer over the window: a position seen by two reads of the molecule
    keeps the first read's observation, or none if the bases disagree.
    """
    n_read = read_mol.shape[0]
    n_rows = row_read.shape[0]
    read_lo = np.zeros(n_read + 1, dtype=np.int64)  # rows of read r: read_lo[r]..read_lo[r + 1]
    for i in range(n_rows):
        read_lo[row_read[i] + 1] += 1
    for r in range(n_read):
        read_lo[r + 1] += read_lo[r]
    n_mol = 0
    for r in range(n_read):
        n_mol = max(n_mol, read_mol[r] + 1)
    per_mol = np.zeros(n_mol + 1, dtype=np.int64)
    for r in range(n_read):
        per_mol[read_mol[r] + 1] += 1
    for m in range(n_mol):
        per_mol[m + 1] += per_mol[m]
    fill = per_mol[:-1].copy()
    order = np.empty(n_read, dtype=np.int64)
    for r in range(n_read):
        m = read_mol[r]
        order[fill[m]] = r
        fill[m] += 1
    span = win_end - win_start
    buf_base = np.full(span, -1, dtype=np.int64)
    buf_read = np.zeros(span, dtype=np.int64)
    buf_dist = np.zeros(span, dtype=np.int64)
    n_out = 0
    for m in range(n_mol):
        lo = span
        hi = 0
        for j in range(per_mol[m], per_mol[m + 1]):
            r = order[j]
            qlen = read_qlen[r]
            for i in range(read_lo[r], read_lo[r + 1]):
                rel = row_ref[i] - win_start
                b = row_base[i]
                cur = buf_base[rel]
                if cur == -1:
                    buf_base[rel] = b
                    buf_read[rel] = r
                    qpos = row_query[i]
                    buf_dist[rel] = min(qpos, qlen - 1 - qpos)
                    lo = min(lo, rel)
                    hi = max(hi, rel + 1)
                elif cur >= 0 and cur != b:
                    buf_base[rel] = -2  # mates disagree: drop the molecule here
        for rel in range(lo, hi):
            if buf_base[rel] >= 0:
                out[0, n_out] = rel
                out[1, n_out] = buf_base[rel]
                out[2, n_out] = buf_read[rel]
                out[3, n_out] = buf_dist[rel]
                n_out += 1
            buf_base[rel] = -1
    return n_out


@numba.njit(cache=True, nogil=True)
def _count_background(
    rel: IntArray,
    base: IntArray,
    duplex: IntArray,
    template: IntArray,
    index_of: IntArray,
    ctx: IntArray,
    flipped: IntArray,
    centre: IntArray,
    opportunities: IntArray,
    errors: IntArray,
    pos_opp: IntArray,
    pos_err: IntArray,
) -> None:
    """Add one window's molecule observations to the background counts (in place).

    ``index_of[rel]`` is the background position index or -1 (excluded / no context);
    ``opportunities`` is flat (molecule type, orientation, context), ``errors`` flat (molecule
    type, orientation, class); orientation = pyrimidine-flipped XOR template orientation.
    """
    for i in range(rel.shape[0]):
        r = rel[i]
        j = index_of[r]
        if j < 0:
            continue
        m = duplex[i]
        c = ctx[r]
        f = flipped[r]
        o = f ^ template[i]
        opportunities[m * 64 + o * 32 + c] += 1
        pos_opp[m, j] += 1
        b = base[i]
        if b != centre[r]:
            alt_py = 3 - b if f == 1 else b  # complement in ACGT order
            sub = _SUB_LUT[1 if c >= 16 else 0, alt_py]
            errors[m * 2 * 96 + o * 96 + 16 * sub + c % 16] += 1
            pos_err[m, j] += 1


def _reference_window(
    fasta: pysam.FastaFile, chrom: str, start: int, end: int
) -> tuple[IntArray, IntArray, IntArray]:
    """Codes of the reference at start-1..end+1 and per-position context index / flipped."""
    length = fasta.get_reference_length(chrom)
    lo, hi = max(0, start - 1), min(length, end + 1)
    raw = fasta.fetch(chrom, lo, hi).upper()
    codes = np.full(end - start + 2, 4, dtype=np.int64)
    codes[lo - (start - 1) : lo - (start - 1) + len(raw)] = _BASE_CODE[
        np.frombuffer(raw.encode("ascii"), dtype=np.uint8)
    ]
    left, centre, right = codes[:-2], codes[1:-1], codes[2:]
    valid = (left < 4) & (centre < 4) & (right < 4)
    flipped = (centre == 0) | (centre == 2)
    comp = _COMPLEMENT_CODE.astype(np.int64)
    c_py = np.where(flipped, comp[np.minimum(centre, 4)], centre)
    five = np.where(flipped, comp[np.minimum(right, 4)], left)
    three = np.where(flipped, comp[np.minimum(left, 4)], right)
    ctx = 16 * (c_py == 3) + 4 * five + three
    ctx = np.where(valid, ctx, -1)
    return centre, ctx, flipped.astype(np.int64)


def _check_inputs(
    bam_path: Path, reference_path: Path, fasta: pysam.FastaFile, variants: Sequence[Variant]
) -> None:
    keys = [v.key for v in variants]
    if len(set(keys)) != len(keys):
        duplicated = sorted({k for k in keys if keys.count(k) > 1})
        raise InputDataError(
            "variants",
            f"variants listed more than once: {', '.join(duplicated[:3])}",
            "list each tracked variant once",
        )
    for variant in variants:
        if variant.chrom not in fasta.references:
            raise InputDataError(
                str(reference_path),
                f"variant {variant.key} is on contig {variant.chrom!r}, absent from the reference",
                "use the reference the variants were called against",
            )
        if not 0 < variant.start0 < fasta.get_reference_length(variant.chrom) - 1:
            raise InputDataError(
                str(reference_path),
                f"variant {variant.key} is at a contig end and has no trinucleotide context",
                "remove it from the tracked variants",
            )
        ref = fasta.fetch(variant.chrom, variant.start0, variant.pos).upper()
        if ref != variant.ref:
            raise InputDataError(
                str(reference_path),
                f"variant {variant.key} has REF {variant.ref} but the reference has {ref!r}",
                "check the genome build of the variant file and the reference",
            )


def collect_evidence(
    consensus_bam_path: Path,
    reference_path: Path,
    variants: Sequence[Variant],
    *,
    regions: Sequence[tuple[str, int, int]] | None = None,
    min_base_quality: int = 30,
    min_mapping_quality: int = 20,
    variant_exclusion_window: int = 5,
    flank: int = 100,
    pool: Executor | None = None,
    n_parts: int = 1,
) -> Evidence:
    """Count molecules at ``variants`` and background errors in ``regions`` (0-based half-open;
    default each variant +/- ``flank``) of an indexed consensus BAM.

    With a process ``pool`` and ``n_parts`` > 1 the windows are counted in ``n_parts`` runs of
    consecutive windows, one task each, and the counts added up in window order: the same
    evidence as one run (each window is counted on its own)."""
    if not variants:
        raise InputDataError("variants", "no variants to track", "supply at least one variant")
    for path, kind in ((consensus_bam_path, "consensus BAM"), (reference_path, "reference FASTA")):
        if not Path(path).is_file():
            raise InputFileError(str(path), f"{kind} not found", "check the path")
    try:
        fasta = pysam.FastaFile(str(reference_path))
    except (OSError, ValueError) as exc:
        raise InputFileError(
            str(reference_path), f"cannot open as indexed FASTA ({exc})", "run `samtools faidx`"
        ) from exc
    try:
        bam = pysam.AlignmentFile(str(consensus_bam_path), "rb")
    except (OSError, ValueError) as exc:
        raise InputFileError(
            str(consensus_bam_path), f"cannot open as BAM ({exc})", "supply a BAM file"
        ) from exc
    with fasta, bam:
        if not bam.has_index():
            raise InputFileError(
                str(consensus_bam_path), "has no index", "run `samtools index` on it"
            )
        _check_inputs(consensus_bam_path, reference_path, fasta, variants)
        if regions is None:
            regions = [(v.chrom, max(0, v.start0 - flank), v.pos + flank) for v in variants]
        lengths = dict(zip(fasta.references, fasta.lengths, strict=True))
        clipped = [
            (c, max(0, s), min(e, lengths.get(c, e)))
            for c, s, e in regions
            if c in lengths and min(e, lengths[c]) > max(0, s)
        ]
        missing = [v.key for v in variants if v.chrom not in set(bam.references)]
        if missing:
            raise InputDataError(
                str(consensus_bam_path),
                f"contig of variants {', '.join(missing[:3])} is absent from the BAM header",
                "align the reads to the same reference as the variants",
            )
    windows: list[_WindowSpec] = []
    for chrom, s, e in merge_regions(clipped):
        windows += [(chrom, w, min(e, w + _WINDOW), w == s) for w in range(s, e, _WINDOW)]
    # variant positions outside every region still need their counts
    for v in variants:
        if not any(c == v.chrom and s <= v.start0 < e for c, s, e, _ in windows):
            windows.append((v.chrom, v.start0, v.pos, True))
    count = partial(
        _count_windows,
        Path(consensus_bam_path),
        Path(reference_path),
        tuple(variants),
        min_base_quality=min_base_quality,
        min_mapping_quality=min_mapping_quality,
        exclusion=variant_exclusion_window,
    )
    n_parts = max(1, min(n_parts, len(windows)))
    if pool is None or n_parts == 1:
        acc = count(windows)
    else:
        bounds = [round(k * len(windows) / n_parts) for k in range(n_parts + 1)]
        futures = [pool.submit(count, windows[lo:hi]) for lo, hi in pairwise(bounds)]
        acc = _Accumulator()
        for future in futures:
            _add_into(acc, future.result())
    return _evidence_of(acc, len(variants))


_WindowSpec = tuple[str, int, int, bool]  # contig, start, end, first window of its region


def _count_windows(
    consensus_bam_path: Path,
    reference_path: Path,
    variants: tuple[Variant, ...],
    windows: Sequence[_WindowSpec],
    *,
    min_base_quality: int,
    min_mapping_quality: int,
    exclusion: int,
) -> _Accumulator:
    """The counts of ``windows``, in order (a top-level function: a process pool runs it)."""
    acc = _Accumulator()
    by_chrom: dict[str, list[Variant]] = defaultdict(list)
    for v in variants:
        by_chrom[v.chrom].append(v)
    variant_index = {v: i for i, v in enumerate(variants)}
    with (
        pysam.FastaFile(str(reference_path)) as fasta,
        pysam.AlignmentFile(str(consensus_bam_path), "rb") as bam,
        contextlib.ExitStack() as stack,
    ):
        records = IndexedRecordReader.open(consensus_bam_path)
        if records is None:
            raise InputFileError(
                str(consensus_bam_path), "has no .bai or .csi index", "run `samtools index` on it"
            )
        reader = _RawReader(stack.enter_context(records))
        for chrom, start, end, first_window in windows:
            _count_window(
                bam,
                reader,
                fasta,
                chrom,
                start,
                end,
                by_chrom[chrom],
                variant_index,
                min_base_quality,
                min_mapping_quality,
                exclusion,
                acc,
                first_window,
            )
    return acc


def _add_into(total: _Accumulator, part: _Accumulator) -> None:
    """Add the counts of a later run of windows to ``total``."""
    total.errors += part.errors
    total.opportunities += part.opportunities
    total.position_context += part.position_context
    total.position_errors += part.position_errors
    total.position_opportunities += part.position_opportunities
    total.variant_counts.update(part.variant_counts)
    total.n_records += part.n_records
    total.n_skipped += part.n_skipped


def _evidence_of(acc: _Accumulator, n_variants: int) -> Evidence:
    background = BackgroundCounts(
        errors=acc.errors.reshape(2, 2, N_CLASSES),
        opportunities=acc.opportunities.reshape(2, 2, 32),
        position_context=np.concatenate(acc.position_context or [np.zeros(0, np.int64)]),
        position_errors=np.concatenate(acc.position_errors or [np.zeros((2, 0), np.int64)], axis=1),
        position_opportunities=np.concatenate(
            acc.position_opportunities or [np.zeros((2, 0), np.int64)], axis=1
        ),
    )
    counts = tuple(acc.variant_counts[i] for i in range(n_variants))
    return Evidence(
        variants=counts,
        background=background,
        n_records=acc.n_records,
        n_records_skipped=acc.n_skipped,
    )


def _count_window(
    bam: pysam.AlignmentFile,
    reader: _RawReader,
    fasta: pysam.FastaFile,
    chrom: str,
    start: int,
    end: int,
    chrom_variants: Sequence[Variant],
    variant_index: dict[Variant, int],
    min_base_quality: int,
    min_mapping_quality: int,
    exclusion: int,
    acc: _Accumulator,
    first_window: bool,
) -> None:
    span = end - start
    win = _read_window(
        bam, reader, chrom, start, end, min_base_quality, min_mapping_quality, acc, first_window
    )
    centre, ctx, flipped = _reference_window(fasta, chrom, start, end)
    excluded = np.zeros(span, dtype=bool)
    for v in chrom_variants:
        lo, hi = max(0, v.start0 - exclusion - start), min(span, v.start0 + exclusion + 1 - start)
        if lo < hi:
            excluded[lo:hi] = True
        v_rel = v.start0 - start
        if not 0 <= v_rel < span:
            continue
        at = win.rel == v_rel
        base, duplex, template = win.base[at], win.duplex[at], win.template[at]
        # NB: a molecule seen on both strands is evidence on each of them
        both = win.both_strands[at] == 1
        top, bottom = (template == 0) | both, (template == 1) | both
        ref_code, alt_code = "ACGT".index(v.ref), "ACGT".index(v.alt)
        informative = (base == ref_code) | (base == alt_code)
        is_alt = base == alt_code
        covering = (win.low_mapq_start <= v.start0) & (v.start0 < win.low_mapq_end)
        n_low = np.unique(win.low_mapq_molecule[covering]).size
        ctx_str = fasta.fetch(chrom, v.start0 - 1, v.start0 + 2).upper()
        acc.variant_counts[variant_index[v]] = VariantCounts(
            variant=v,
            ref_context=ctx_str,
            n_simplex=int((informative & (duplex == 0)).sum()),
            alt_simplex=int((is_alt & (duplex == 0)).sum()),
            n_duplex=int((informative & (duplex == 1)).sum()),
            alt_duplex=int((is_alt & (duplex == 1)).sum()),
            n_forward=int((informative & top).sum()),
            n_reverse=int((informative & bottom).sum()),
            alt_forward=int((is_alt & top).sum()),
            alt_reverse=int((is_alt & bottom).sum()),
            alt_read_end_distances=tuple(int(d) for d in win.distance[at][is_alt]),
            n_low_mapq=n_low,
        )
    usable = (ctx >= 0) & ~excluded
    positions = np.flatnonzero(usable)
    index_of = np.full(span, -1, dtype=np.int64)
    index_of[positions] = np.arange(positions.size)
    pos_opp = np.zeros((2, positions.size), dtype=np.int64)
    pos_err = np.zeros((2, positions.size), dtype=np.int64)
    _count_background(
        win.rel,
        win.base,
        win.duplex,
        win.template,
        index_of,
        ctx,
        flipped,
        centre,
        acc.opportunities,
        acc.errors,
        pos_opp,
        pos_err,
    )
    acc.position_context.append(ctx[positions])
    acc.position_errors.append(pos_err)
    acc.position_opportunities.append(pos_opp)
