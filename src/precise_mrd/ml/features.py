"""Per-molecule observation features for the ML artefact filter, read from a consensus BAM.

An *observation* is one consensus molecule's confident base at one reference position (molecules,
not reads: read 1 and read 2 of a molecule covering the same position count once, and not at all
if they disagree, exactly as :mod:`precise_mrd.pipeline.evidence` counts). The features are the
ones a variant caller looks at when it decides whether an alt base is real
(:data:`FEATURE_NAMES`):

* ``base_quality``: consensus Phred score of the base;
* ``family_size`` (``cD``), ``min_strand_depth`` (``min(aD, bD)``, 0 for simplex molecules),
  ``is_duplex`` (``aD > 0`` and ``bD > 0``), ``consensus_error_rate`` (``cE``);
* ``read_end_distance``: bases to the nearer end of the consensus read;
* ``mapping_quality`` and ``fragment_length`` (``|TLEN|``);
* ``sbs96_class``, ``substitution`` (class // 16) and ``is_cpg`` from the reference trinucleotide
  and the alternate (:func:`precise_mrd.core.background.sbs96_index`);
* ``other_mismatches``: other confident mismatches against the reference in the same molecule;
* ``template_strand``: 0 when read 1 came from the + strand.

For the deep-learning scorer (:mod:`precise_mrd.ml.deep`) an observation also carries a
*sequence window* (:attr:`ObservationTable.windows`, only with ``with_windows=True``): the
molecule's consensus bases and qualities and the reference bases at the ``2 * WINDOW_FLANK + 1``
positions centred on the observation, on the reference's forward strand. The centre base is the
*scored* alternate (the variant's alt for every molecule at a variant, each possible alt for a
sampled reference observation), for the same reason the features use the scored class.

Nothing here may carry the answer: no read names, no UMI sequences, no truth file, no simulator
internals. ``tests/unit/test_ml_features.py`` pins :data:`FEATURE_NAMES`.

Which observations are extracted (:func:`extract_observations`): every informative molecule
(ref or alt) at each tracked variant; every background mismatch (a confident non-reference base at
a background position, defined as in the evidence stage: target positions with an ACGT
trinucleotide more than ``variant_exclusion_window`` bases from a tracked variant); and a seeded
random sample of background *reference* observations, used to measure how often an ordinary
molecule passes the filter (see :mod:`precise_mrd.ml.scoring`).

Reads are decoded from the raw BAM records of each region, found through the ``.bai`` or
``.csi`` (:mod:`precise_mrd.io.bam_regions`: ``IndexedRecordReader``, ``decode_aligned_bases``),
not one pysam object per read; the tests compare them with a reader of one pysam object per read
(``tests/pysam_reference.py``).

>>> len(FEATURE_NAMES), FEATURE_NAMES[0]
(13, 'base_quality')
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
import numpy.typing as npt
import pysam

from precise_mrd.core.background import sbs96_index
from precise_mrd.core.errors import InputFileError
from precise_mrd.core.records import Variant, merge_regions
from precise_mrd.io.bam_columns import STRAND_BOTH, strand_of_origin
from precise_mrd.io.bam_regions import (
    IndexedRecordReader,
    decode_aligned_bases,
    first_seen_codes,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

FEATURE_NAMES: tuple[str, ...] = (
    "base_quality",
    "family_size",
    "min_strand_depth",
    "is_duplex",
    "consensus_error_rate",
    "read_end_distance",
    "mapping_quality",
    "fragment_length",
    "sbs96_class",
    "substitution",
    "is_cpg",
    "other_mismatches",
    "template_strand",
)

#: Positions each side of the observation in a sequence window.
WINDOW_FLANK = 10
#: Rows of :attr:`ObservationTable.windows`: molecule base (0-3 ACGT, 4 not covered or N),
#: its consensus quality (0 when not covered) and the reference base (0-3; 4 outside the region
#: or without an ACGT trinucleotide).
WINDOW_ROWS: tuple[str, ...] = ("molecule_base", "base_quality", "reference_base")
MISSING_BASE = 4

#: Observation kinds in :attr:`ObservationTable.kind`.
KIND_VARIANT = 0  # an informative molecule at a tracked variant (ref or alt)
KIND_BACKGROUND_ERROR = 1  # a non-reference base at a background position
KIND_BACKGROUND_REF = 2  # a sampled reference base at a background position

_SKIP_FLAGS = 0x4 | 0x100 | 0x200 | 0x800
_CLASS_TABLE: dict[tuple[str, str], int] = {}


def class_of(context: str, alt: str) -> int:
    """SBS-96 class of ``context`` mutated to ``alt`` (cached; -1 if not ACGT).

    >>> class_of("ACG", "T")
    34
    """
    key = (context, alt)
    if key not in _CLASS_TABLE:
        try:
            _CLASS_TABLE[key] = sbs96_index(context, alt)
        except ValueError:
            _CLASS_TABLE[key] = -1
    return _CLASS_TABLE[key]


def class_features(classes: IntArray) -> tuple[IntArray, IntArray]:
    """``substitution`` (0..5: C>A C>G C>T T>A T>C T>G) and ``is_cpg`` of SBS-96 classes."""
    classes = np.asarray(classes, dtype=np.int64)
    substitution = classes // 16
    is_cpg = ((classes < 48) & (classes % 4 == 2)).astype(np.int64)
    return substitution, is_cpg


@dataclass(frozen=True, eq=False)
class ObservationTable:
    """Observations (rows) with their features and the bookkeeping the filter needs.

    ``features[i]`` follows :data:`FEATURE_NAMES`; ``kind[i]`` is a ``KIND_*`` constant;
    ``variant_index[i]`` the tracked variant (-1 for background rows); ``is_alt[i]`` whether the
    base is the variant's alt (variant rows) or a mismatch (background rows); ``is_ref[i]`` whether
    it is the reference base; ``duplex[i]``, ``template[i]``, ``read_end_distance[i]`` as counted
    by the evidence stage; ``sbs_class[i]`` the class the row is scored as (a reference row at a
    variant takes the variant's class; a sampled background reference row, each possible alt's).
    ``windows[i]`` (``(n, len(WINDOW_ROWS), 2 * WINDOW_FLANK + 1)`` uint8, or ``None`` when not
    extracted) is the observation's sequence window (module docstring).
    """

    features: FloatArray
    kind: IntArray
    variant_index: IntArray
    is_alt: BoolArray
    is_ref: BoolArray
    duplex: IntArray
    template: IntArray
    read_end_distance: IntArray
    sbs_class: IntArray
    windows: npt.NDArray[np.uint8] | None = None
    both_strands: IntArray | None = None  # 1: a molecule seen on both strands (``sO`` 3)

    def __post_init__(self) -> None:
        n = self.features.shape[0]
        if self.features.ndim != 2 or self.features.shape[1] != len(FEATURE_NAMES):
            raise ValueError(
                f"features must have shape (n, {len(FEATURE_NAMES)}); got {self.features.shape}"
            )
        for name in (
            "kind",
            "variant_index",
            "is_alt",
            "is_ref",
            "duplex",
            "template",
            "read_end_distance",
            "sbs_class",
        ):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} must have shape ({n},); got {getattr(self, name).shape}")
        shape = (n, len(WINDOW_ROWS), 2 * WINDOW_FLANK + 1)
        if self.windows is not None and self.windows.shape != shape:
            raise ValueError(f"windows must have shape {shape}; got {self.windows.shape}")

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def subset(self, mask: BoolArray | IntArray) -> ObservationTable:
        """The rows selected by a boolean mask or an index array."""
        return ObservationTable(
            features=self.features[mask],
            kind=self.kind[mask],
            variant_index=self.variant_index[mask],
            is_alt=self.is_alt[mask],
            is_ref=self.is_ref[mask],
            duplex=self.duplex[mask],
            template=self.template[mask],
            read_end_distance=self.read_end_distance[mask],
            sbs_class=self.sbs_class[mask],
            windows=None if self.windows is None else self.windows[mask],
            both_strands=None if self.both_strands is None else self.both_strands[mask],
        )

    @staticmethod
    def concatenate(tables: Sequence[ObservationTable]) -> ObservationTable:
        """Rows of several tables, in order."""
        if not tables:
            return _empty_table()
        windows = [t.windows for t in tables if t.windows is not None]
        return ObservationTable(
            features=np.concatenate([t.features for t in tables]),
            kind=np.concatenate([t.kind for t in tables]),
            variant_index=np.concatenate([t.variant_index for t in tables]),
            is_alt=np.concatenate([t.is_alt for t in tables]),
            is_ref=np.concatenate([t.is_ref for t in tables]),
            duplex=np.concatenate([t.duplex for t in tables]),
            template=np.concatenate([t.template for t in tables]),
            read_end_distance=np.concatenate([t.read_end_distance for t in tables]),
            sbs_class=np.concatenate([t.sbs_class for t in tables]),
            windows=np.concatenate(windows) if len(windows) == len(tables) else None,
            both_strands=np.concatenate(
                [
                    np.zeros(len(t), np.int64) if t.both_strands is None else t.both_strands
                    for t in tables
                ]
            ),
        )


def _empty_table(with_windows: bool = False) -> ObservationTable:
    e = np.zeros(0, dtype=np.int64)
    window_shape = (0, len(WINDOW_ROWS), 2 * WINDOW_FLANK + 1)
    return ObservationTable(
        windows=np.zeros(window_shape, dtype=np.uint8) if with_windows else None,
        features=np.zeros((0, len(FEATURE_NAMES))),
        kind=e,
        variant_index=e,
        is_alt=e.astype(bool),
        is_ref=e.astype(bool),
        duplex=e,
        template=e,
        read_end_distance=e,
        sbs_class=e,
    )


@dataclass
class _Reads:
    """Per-base columns of the reads of one window (one row per aligned confident base)."""

    pos: IntArray
    base: IntArray
    qual: IntArray
    dist: IntArray
    read: IntArray
    # per read
    mol: IntArray
    family_size: FloatArray
    min_strand: FloatArray
    duplex: IntArray
    error_rate: FloatArray
    mapq: FloatArray
    fragment: FloatArray
    template: IntArray  # the read-1 orientation: the ``template_strand`` feature, as trained
    strand: IntArray  # the strand of origin, as the evidence stage counts (``strand_of_origin``)
    both: IntArray  # 1: seen on both strands


_NUMERIC_TAGS = (b"cD", b"aD", b"bD", b"cE", b"sO")
_TAG_DEFAULTS = (1.0, 0.0, 0.0, 0.0, 0.0)


def _read_window(
    bam: pysam.AlignmentFile,
    records: IndexedRecordReader,
    chrom: str,
    start: int,
    end: int,
    min_base_quality: int,
    min_mapping_quality: int,
) -> _Reads | None:
    """The reads of ``[start, end)`` of ``chrom``, decoded from the raw records found through the
    BAM index (:class:`~precise_mrd.io.bam_regions.IndexedRecordReader`).

    ``None`` when no read has a confident base there. The tests check it against a reader of one
    pysam object per read (``tests/pysam_reference.py``, ~6x slower).
    """
    tid = bam.get_tid(chrom)
    if tid < 0:
        raise ValueError(f"invalid contig `{chrom}`")  # NB: what pysam's fetch raises
    aligned = decode_aligned_bases(
        records.region_records(tid, start, end),
        tid=tid,
        start=start,
        end=end,
        skip_flags=_SKIP_FLAGS,
        min_mapping_quality=min_mapping_quality,
        min_base_quality=min_base_quality,
        key_tag=b"MI",
        numeric_tags=_NUMERIC_TAGS,
        defaults=_TAG_DEFAULTS,
        source=str(records.bam_path),
    )
    if not aligned.record.size:
        return None
    tags = aligned.tag_values
    a_depth, b_depth = tags[:, 1], tags[:, 2]
    flags = aligned.flags
    read = aligned.record
    qpos = aligned.query_pos
    return _Reads(
        pos=aligned.ref_pos,
        base=aligned.bases,
        qual=aligned.quals,
        dist=np.minimum(qpos, aligned.lengths[read] - 1 - qpos),
        read=read,
        mol=first_seen_codes(aligned.key_text),
        family_size=tags[:, 0].copy(),
        min_strand=np.minimum(a_depth, b_depth),
        duplex=((a_depth > 0) & (b_depth > 0)).astype(np.int64),
        error_rate=tags[:, 3].copy(),
        mapq=aligned.mapqs.astype(np.float64),
        fragment=np.abs(aligned.template_lengths).astype(np.float64),
        template=((flags >> 4) ^ (flags >> 7)) & 1,
        strand=strand_of_origin(flags, tags[:, 4].astype(np.int64)),
        both=(tags[:, 4] == STRAND_BOTH).astype(np.int64),
    )


def _molecule_rows(reads: _Reads) -> IntArray:
    """Indices of one base row per (molecule, position); none where the molecule's reads disagree.

    Keeps the first read's row, as the evidence stage does; ordered by molecule, then position.
    """
    lo = int(reads.pos.min())
    return _molecule_rows_kernel(
        reads.mol[reads.read], reads.pos - lo, reads.base, int(reads.pos.max()) - lo + 1
    )


@numba.njit(cache=True, nogil=True)
def _molecule_rows_kernel(mol: IntArray, rel: IntArray, base: IntArray, span: int) -> IntArray:
    # rows grouped by molecule (counting sort, rows keep their order inside a molecule); each
    # molecule fills a buffer over the positions: the first row, or -2 where a base disagrees
    n_mol = 0
    for i in range(mol.size):
        n_mol = max(n_mol, mol[i] + 1)
    starts = np.zeros(n_mol + 1, dtype=np.int64)
    for i in range(mol.size):
        starts[mol[i] + 1] += 1
    for m in range(n_mol):
        starts[m + 1] += starts[m]
    fill = starts[:-1].copy()
    order = np.empty(mol.size, dtype=np.int64)
    for i in range(mol.size):
        order[fill[mol[i]]] = i
        fill[mol[i]] += 1
    first = np.full(span, -1, dtype=np.int64)
    out = np.empty(mol.size, dtype=np.int64)
    n_out = 0
    for m in range(n_mol):
        low = span
        high = 0
        for j in range(starts[m], starts[m + 1]):
            i = order[j]
            r = rel[i]
            if first[r] == -1:
                first[r] = i
                low = min(low, r)
                high = max(high, r + 1)
            elif first[r] >= 0 and base[first[r]] != base[i]:
                first[r] = -2
        for r in range(low, high):
            if first[r] >= 0:
                out[n_out] = first[r]
                n_out += 1
            first[r] = -1
    return out[:n_out]


def _window_contexts(fasta: pysam.FastaFile, chrom: str, start: int, end: int) -> list[str]:
    """Reference trinucleotide of each position in [start, end) ('' without a full context)."""
    length = fasta.get_reference_length(chrom)
    lo = max(0, start - 1)
    text = fasta.fetch(chrom, lo, min(length, end + 1)).upper()
    shift = start - 1 - lo  # -1 when start == 0
    out = []
    for i in range(end - start):
        j = i + shift
        tri = text[j : j + 3] if j >= 0 else ""
        out.append(tri if len(tri) == 3 and all(c in "ACGT" for c in tri) else "")
    return out


def extract_observations(
    consensus_bam_path: Path,
    reference_path: Path,
    variants: Sequence[Variant],
    rng: np.random.Generator,
    *,
    regions: Sequence[tuple[str, int, int]] | None = None,
    flank: int = 100,
    min_base_quality: int = 30,
    min_mapping_quality: int = 20,
    variant_exclusion_window: int = 5,
    n_reference_samples_per_region: int = 500,
    with_windows: bool = False,
) -> ObservationTable:
    """Observations at ``variants`` and background positions of an indexed consensus BAM.

    ``regions`` are 0-based half-open (default: each variant +/- ``flank``); thresholds mean what
    they mean in :func:`precise_mrd.pipeline.evidence.collect_evidence`.
    ``n_reference_samples_per_region`` reference observations per region are drawn with ``rng``;
    each is entered three times, once as each possible alternate's class. ``with_windows`` also
    fills :attr:`ObservationTable.windows`.
    """
    for path, what in ((consensus_bam_path, "consensus BAM"), (reference_path, "reference")):
        if not Path(path).is_file():
            raise InputFileError(str(path), f"{what} not found", "check the path")
    if regions is None:
        regions = [(v.chrom, max(0, v.start0 - flank), v.pos + flank) for v in variants]
    by_chrom: dict[str, list[tuple[int, Variant]]] = defaultdict(list)
    for i, v in enumerate(variants):
        by_chrom[v.chrom].append((i, v))
    tables: list[ObservationTable] = []
    with (
        pysam.AlignmentFile(str(consensus_bam_path), "rb") as bam,
        pysam.FastaFile(str(reference_path)) as fasta,
        contextlib.ExitStack() as stack,
    ):
        if not bam.has_index():
            raise InputFileError(str(consensus_bam_path), "has no index", "run `samtools index`")
        records = IndexedRecordReader.open(Path(consensus_bam_path))
        if records is None:
            raise InputFileError(
                str(consensus_bam_path), "has no .bai or .csi index", "run `samtools index`"
            )
        stack.enter_context(records)
        for chrom, start, end in merge_regions(
            [*regions, *((v.chrom, v.start0, v.pos) for v in variants)]
        ):
            length = fasta.get_reference_length(chrom)
            start, end = max(0, start), min(end, length)
            if end <= start:
                continue
            reads = _read_window(
                bam, records, chrom, start, end, min_base_quality, min_mapping_quality
            )
            if reads is None or not reads.pos.size:
                continue
            local = [(i, v) for i, v in by_chrom[chrom] if start <= v.start0 < end]
            tables.append(
                _window_table(
                    reads,
                    _window_contexts(fasta, chrom, start, end),
                    start,
                    local,
                    [v for _, v in by_chrom[chrom]],
                    variant_exclusion_window,
                    n_reference_samples_per_region,
                    rng,
                    with_windows,
                )
            )
    return ObservationTable.concatenate(tables) if tables else _empty_table(with_windows)


def _window_table(
    reads: _Reads,
    contexts: list[str],
    start: int,
    local_variants: list[tuple[int, Variant]],
    chrom_variants: list[Variant],
    exclusion: int,
    n_samples: int,
    rng: np.random.Generator,
    with_windows: bool,
) -> ObservationTable:
    rows = _molecule_rows(reads)
    pos, base, read = reads.pos[rows], reads.base[rows], reads.read[rows]
    rel = pos - start
    ref_code = np.array(["ACGT".find(t[1]) if t else -1 for t in contexts], dtype=np.int64)
    ref = ref_code[rel]
    mismatch = (ref >= 0) & (base != ref)
    mol = reads.mol[read]
    n_mm = np.bincount(mol, weights=mismatch, minlength=reads.mol.max() + 1)
    other = n_mm[mol] - mismatch
    excluded = np.zeros(len(contexts), dtype=bool)
    for v in chrom_variants:
        excluded[
            max(0, v.start0 - exclusion - start) : max(0, v.start0 + exclusion + 1 - start)
        ] = True
    background_pos = (ref_code >= 0) & ~excluded
    tracked = np.full(len(contexts), -1, dtype=np.int64)
    for i, v in local_variants:
        tracked[v.start0 - start] = i
    # variant rows: informative molecules at a tracked position
    v_index = tracked[rel]
    v_rows = np.flatnonzero(v_index >= 0)
    v_alt_code = np.array(["ACGT".index(v.alt) for _, v in local_variants] or [0], dtype=np.int64)
    v_ref_code = np.array(["ACGT".index(v.ref) for _, v in local_variants] or [0], dtype=np.int64)
    order_of = {i: k for k, (i, _) in enumerate(local_variants)}
    local_k = np.array([order_of[i] for i in v_index[v_rows]], dtype=np.int64)
    informative = (base[v_rows] == v_alt_code[local_k]) | (base[v_rows] == v_ref_code[local_k])
    v_rows, local_k = v_rows[informative], local_k[informative]
    v_class = np.array(
        [class_of(contexts[v.start0 - start], v.alt) for _, v in local_variants] or [0],
        dtype=np.int64,
    )[local_k]
    # background errors
    bg = background_pos[rel]
    e_rows = np.flatnonzero(bg & mismatch)
    e_class = np.array(
        [class_of(contexts[r], "ACGT"[b]) for r, b in zip(rel[e_rows], base[e_rows], strict=True)],
        dtype=np.int64,
    )
    # sampled background reference rows, each entered once per possible alternate
    ref_rows_all = np.flatnonzero(bg & ~mismatch)
    take = min(n_samples, ref_rows_all.size)
    s_rows = np.sort(rng.choice(ref_rows_all, size=take, replace=False)) if take else ref_rows_all
    s_rows = np.repeat(s_rows, 3)
    s_class = np.array(
        [
            class_of(contexts[r], alt)
            for r in rel[s_rows[::3]]
            for alt in "ACGT"
            if alt != contexts[r][1]
        ],
        dtype=np.int64,
    )
    all_rows = np.concatenate([v_rows, e_rows, s_rows])
    windows = None
    if with_windows:
        scored_alt = np.concatenate(
            [v_alt_code[local_k], base[e_rows], _OTHER_BASES[ref[s_rows[::3]]].ravel()]
        )
        windows = _sequence_windows(reads, rows, all_rows, ref_code, start, scored_alt)
    kind = np.concatenate(
        [
            np.full(v_rows.size, KIND_VARIANT),
            np.full(e_rows.size, KIND_BACKGROUND_ERROR),
            np.full(s_rows.size, KIND_BACKGROUND_REF),
        ]
    ).astype(np.int64)
    classes = np.concatenate([v_class, e_class, s_class]).astype(np.int64)
    is_alt = np.concatenate(
        [
            base[v_rows] == v_alt_code[local_k],
            np.ones(e_rows.size, dtype=bool),
            np.zeros(s_rows.size, dtype=bool),
        ]
    )
    is_mismatch = mismatch[all_rows]
    r_read = read[all_rows]
    substitution, is_cpg = class_features(classes)
    features = np.column_stack(
        [
            reads.qual[rows][all_rows],
            reads.family_size[r_read],
            reads.min_strand[r_read],
            reads.duplex[r_read],
            reads.error_rate[r_read],
            reads.dist[rows][all_rows],
            reads.mapq[r_read],
            reads.fragment[r_read],
            classes,
            substitution,
            is_cpg,
            other[all_rows],
            reads.template[r_read],
        ]
    ).astype(np.float64)
    return ObservationTable(
        features=features,
        kind=kind,
        variant_index=np.concatenate(
            [v_index[v_rows], np.full(e_rows.size + s_rows.size, -1)]
        ).astype(np.int64),
        is_alt=is_alt,
        is_ref=~is_mismatch,
        duplex=reads.duplex[r_read],
        template=reads.strand[r_read],
        read_end_distance=reads.dist[rows][all_rows],
        sbs_class=classes,
        windows=windows,
        both_strands=reads.both[r_read],
    )


_OTHER_BASES = np.array([[b for b in range(4) if b != r] for r in range(4)], dtype=np.int64)


def _sequence_windows(
    reads: _Reads,
    rows: IntArray,
    observed: IntArray,
    ref_code: IntArray,
    start: int,
    centre_base: IntArray,
) -> npt.NDArray[np.uint8]:
    """Sequence windows (:data:`WINDOW_ROWS`) of the molecule rows ``rows[observed]``.

    A window position is "not covered" where the molecule has no confident, concordant base (off
    its reads, below the quality threshold, or outside the extracted region).
    """
    span = ref_code.size
    mol, pos = reads.mol[reads.read[rows]], reads.pos[rows]
    key = mol * span + (pos - start)
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    rel = pos[observed][:, None] - start + np.arange(-WINDOW_FLANK, WINDOW_FLANK + 1)
    inside = (rel >= 0) & (rel < span)
    rel_in = np.clip(rel, 0, span - 1)
    wanted = mol[observed][:, None] * span + rel_in
    at = np.minimum(np.searchsorted(sorted_key, wanted), max(sorted_key.size - 1, 0))
    found = inside & (sorted_key[at] == wanted)
    hit = rows[order[at]]
    out = np.empty((observed.size, len(WINDOW_ROWS), rel.shape[1]), dtype=np.uint8)
    out[:, 0] = np.where(found, reads.base[hit], MISSING_BASE)
    out[:, 0, WINDOW_FLANK] = centre_base
    out[:, 1] = np.where(found, reads.qual[hit], 0)
    ref = ref_code[rel_in]
    out[:, 2] = np.where(inside & (ref >= 0), ref, MISSING_BASE)
    return out
