"""Consensus stage: grouped BAM in, one consensus read (pair) per molecule out.

The input is the group stage's BAM (see ``docs/internals.md``): coordinate-sorted aligned reads,
each with an ``MI`` tag (``"7"``, or ``"7/A"``/``"7/B"`` for the two strands of duplex molecule 7)
and the UMI in ``RX``. The stage:

1. **streams** the BAM as raw binary records, decoded into numpy columns by a compiled loop
   (:mod:`precise_mrd.io.bam_columns`: no pysam object per read), and buffers each molecule's
   reads until the stream has passed every read and mate position of the molecule (memory stays
   bounded by the reads of the current loci); a later read with the same ``MI`` starts a new
   molecule;
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
   ``bD == 0``) as binary BAM records, each one written as soon as no unfinished molecule can
   produce a record that sorts before it, so the output is coordinate-sorted without a sort
   pass; then indexes it, writing to a temporary name first.

:func:`group_and_call_consensus` runs the group stage and this one without the grouped BAM in
between: the group stage's molecule ids go to the record decoder as arrays beside the input's
records (no ``MI`` tag is written or parsed; the records decode as the tagged ones would).

The consensus maths lives in :mod:`precise_mrd.core.consensus`; this module is only bookkeeping.

Edge cases, on purpose: a paired molecule with no usable read at one end (its mates were dropped
upstream) is counted in ``n_molecules_filtered_missing_end`` and not written; single-end reads of
the two strands of a duplex molecule cover opposite ends of the fragment, so each strand gives its
own unpaired single-strand record (no duplex combination is possible there).

Threads: the records are inflated and decoded in a producer thread; each batch
of finished molecules (~10,000 reads) is called in a one-thread worker while this thread
assembles the next one. Records are flushed with the emission bound of their own batch, so the
output is the same, byte for byte, as without the worker.

Cost (standard benchmark sample, 4.0M reads -> 399k consensus records, 2 shared cores): the
fused :func:`group_and_call_consensus` ~8.7 s wall (group passes 1-2 ~2.8 s; the write pass
with consensus ~5.8 s, both cores busy: the compiled family-likelihood loop, the record decoder,
inflating, and the numpy passes of each batch are of similar size). Records are identical to
those of the earlier pysam/SAM-text implementation. Memory is bounded by the batch and the depth
of the current loci, not by the file.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numba
import numpy as np
import numpy.typing as npt
import pysam

from precise_mrd.core.consensus import (
    ConsensusParams,
    call_duplex_rows,
    call_families,
)
from precise_mrd.core.consensus_kernels import depth_tags, reconcile_pairs
from precise_mrd.core.errors import InputDataError, InputFileError
from precise_mrd.io.bam import (
    BgzfWriter,
    RecordRange,
    bam_header_bytes,
    index_bam,
    iter_record_chunks,
    prefetch,
)
from precise_mrd.io.bam_columns import (
    STATUS_ABSENT,
    STATUS_NO_MI,
    STATUS_SKIPPED,
    ReadColumns,
    decode_status,
    encode_consensus_records,
    gather_records,
)
from precise_mrd.io.bam_parts import consensus_sort_keys
from precise_mrd.pipeline.group import GroupStats, PreparedGrouping, prepare_grouping

__all__ = [
    "ConsensusStats",
    "call_consensus_bam",
    "call_consensus_part",
    "group_and_call_consensus",
    "join_consensus_parts",
]

I64Array = npt.NDArray[np.int64]
_I64: Any = np.int64  # NB: typed Any so that compiled integer maths type-checks as int
_BatchResult = tuple[I64Array, I64Array, npt.NDArray[np.uint8], I64Array] | None
_DecodedChunk = tuple[npt.NDArray[np.uint8], tuple[npt.NDArray[np.int8], ReadColumns]]

_MIN_BATCH_READS = 10_000  # finished molecules are processed together once this many reads wait
_CIGAR_QUERY_OPS = frozenset((0, 1, 4, 7, 8))  # M I S = X consume the read
_CIGAR_REF_OPS = frozenset((0, 2, 3, 7, 8))  # M D N = X consume the reference
_CIGAR_CODES = "MIDNSHP=X"
# NB: the consensus BAM is written once and read once by the evidence stage; zlib level 1 is
# ~6x faster than level 6 for a file ~25% larger.
CONSENSUS_BAM_COMPRESSION_LEVEL: Final[int] = 1


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


@dataclass(frozen=True)
class _CigarArrays:
    """What :func:`_process_batch` reads of a :class:`_CigarTable`, as arrays fixed at one moment
    (the table keeps growing in the caller's thread while a batch is processed in the worker)."""

    query_lengths: I64Array
    ref_spans: I64Array
    flat_words: npt.NDArray[np.uint8]
    word_offsets: I64Array
    ref_flat: I64Array
    ref_bounds: I64Array


class _CigarTable:
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
        self._arrays: _CigarArrays | None = None

    def arrays(self) -> _CigarArrays:
        """The table's arrays as they are now (rebuilt only after a new CIGAR)."""
        if self._arrays is None:
            ref_flat, ref_bounds = self.flat_ref_offsets()
            self._arrays = _CigarArrays(
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
        with pysam.AlignmentFile(source, "rb", check_sq=False) as bam:
            header = bam.header.to_dict()
    except (OSError, ValueError) as error:
        raise InputFileError(
            source, f"is not a readable BAM ({error})", "pass a BAM file"
        ) from None
    if header.get("HD", {}).get("SO") != "coordinate":
        raise InputFileError(
            source, "is not coordinate-sorted (@HD SO is not 'coordinate')", "run `samtools sort`"
        )
    return _write_consensus(
        _decoded(iter_record_chunks(grouped_bam_path)),
        header,
        out_bam_path,
        params=params,
        source=source,
        threads=threads,
    )


def group_and_call_consensus(
    in_bam_path: Path,
    consensus_bam_path: Path,
    *,
    params: ConsensusParams,
    strategy: str = "directional",
    max_edits: int = 1,
    umi_tag: str = "RX",
    umi_from_read_name: bool = False,
    umi_separator: str = "_",
    min_mapq: int = 0,
    threads: int = 1,
) -> tuple[GroupStats, ConsensusStats]:
    """:func:`~precise_mrd.pipeline.group.group_bam` then :func:`call_consensus_bam` without the
    grouped BAM in between: the group stage's molecule ids go straight into the consensus
    caller's decoder beside the input records (no intermediate file, no ``MI`` tag written).

    Same options, checks, errors and results as the two stages run one after the other.
    """
    in_bam_path = Path(in_bam_path)
    consensus_bam_path = Path(consensus_bam_path)
    if threads < 1:
        raise ValueError(f"threads must be >= 1; got {threads}")
    prepared = prepare_grouping(
        in_bam_path,
        strategy=strategy,
        max_edits=max_edits,
        umi_tag=umi_tag,
        umi_from_read_name=umi_from_read_name,
        umi_separator=umi_separator,
        min_mapq=min_mapq,
    )
    return call_consensus_part(
        prepared, consensus_bam_path, params=params, threads=threads, records_only=False
    )


def call_consensus_part(
    prepared: PreparedGrouping,
    out_path: Path,
    *,
    params: ConsensusParams,
    threads: int = 1,
    records_only: bool = True,
) -> tuple[GroupStats, ConsensusStats]:
    """The consensus records of one part of a grouped file (``prepared.part``) into
    ``out_path`` as BGZF blocks of records only (no header, no end-of-file block, no index):
    :func:`join_consensus_parts` puts the parts of a file together. With ``records_only=False``
    a whole, indexed consensus BAM (of the whole file when ``prepared.part`` is None)."""
    counter = [0]
    consensus_stats = _write_consensus(
        _decoded_molecules(prepared, counter),
        prepared.header(),
        out_path,
        params=params,
        source=str(prepared.in_bam_path),
        threads=threads,
        records_only=records_only,
    )
    return prepared.stats(counter[0]), consensus_stats


def join_consensus_parts(
    header: dict[str, Any],
    part_paths: Sequence[Path],
    out_bam_path: Path,
    *,
    params: ConsensusParams,
    part_starts: Sequence[int],
    overruns: Sequence[bool],
) -> None:
    """The consensus BAM of a file from the records of its parts (written by
    :func:`call_consensus_part`, in file order; ``part_starts`` the position key of each part's
    first input record): the header, the parts, the end-of-file block; indexed.

    BGZF blocks stand alone, so a part is copied as it is, except where records of earlier parts
    must be merged into it, or where its own records run past the next part's start
    (``overruns``: it read distant mates, see :mod:`precise_mrd.io.bam_parts`). Those records
    are carried forward and merged where they belong, in the order the serial stage writes
    (position, then molecule id)."""
    out_bam_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = out_bam_path.with_name(f".{out_bam_path.name}.{os.getpid()}.tmp")
    index_path = out_bam_path.with_name(f".{out_bam_path.name}.{os.getpid()}.bai.tmp")
    carry = _SortedRecords.empty()
    try:
        with BgzfWriter(tmp_path, level=CONSENSUS_BAM_COMPRESSION_LEVEL) as writer:
            writer.write(bam_header_bytes(_consensus_header(header, params), out_bam_path.parent))
            for k, part_path in enumerate(part_paths):
                if not carry.n and not overruns[k]:
                    writer.append_blocks(part_path)
                    continue
                records = carry.merged(_SortedRecords.read(part_path))
                stop = part_starts[k + 1] if k + 1 < len(part_paths) else None
                ready, carry = records.split(stop)
                writer.write(ready)
            writer.write(carry.split(None)[0])
        index_bam(tmp_path, index_path)
        os.replace(tmp_path, out_bam_path)
        os.replace(index_path, Path(f"{out_bam_path}.bai"))
    finally:
        for path in (tmp_path, index_path):
            path.unlink(missing_ok=True)


@dataclass(frozen=True)
class _SortedRecords:
    """Consensus records in output order, with their position keys and molecule ids."""

    data: npt.NDArray[np.uint8]
    keys: I64Array
    ties: I64Array
    offsets: I64Array

    @property
    def n(self) -> int:
        return len(self.keys)

    @classmethod
    def empty(cls) -> _SortedRecords:
        none = np.zeros(0, dtype=np.int64)
        return cls(np.zeros(0, dtype=np.uint8), none, none, np.zeros(1, dtype=np.int64))

    @classmethod
    def read(cls, path: Path) -> _SortedRecords:
        """The records of a part's file (sorted as written)."""
        chunks = list(iter_record_chunks(path, RecordRange(0, 0, None)))
        data = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.uint8)
        keys, ties, offsets = consensus_sort_keys(data)
        return cls(data, keys, ties, offsets)

    def merged(self, later: _SortedRecords) -> _SortedRecords:
        """These records and ``later``'s in output order (these first among equals)."""
        if not self.n:
            return later
        data = np.concatenate((self.data, later.data))
        offsets = np.concatenate((self.offsets[:-1], later.offsets + len(self.data)))
        keys = np.concatenate((self.keys, later.keys))
        ties = np.concatenate((self.ties, later.ties))
        order = np.lexsort((ties, keys))  # NB: stable
        return _SortedRecords(
            gather_records(data, offsets, order),
            keys[order],
            ties[order],
            np.concatenate(([0], np.cumsum(np.diff(offsets)[order]))).astype(np.int64),
        )

    def split(self, stop: int | None) -> tuple[npt.NDArray[np.uint8], _SortedRecords]:
        """The bytes of the records before position key ``stop`` (all if None), and the rest."""
        n_ready = self.n if stop is None else int(np.searchsorted(self.keys, stop))
        cut = int(self.offsets[n_ready])
        rest = _SortedRecords(
            self.data[cut:].copy(),
            self.keys[n_ready:],
            self.ties[n_ready:],
            self.offsets[n_ready:] - cut,
        )
        return self.data[:cut], rest


def _decoded_molecules(prepared: PreparedGrouping, counter: list[int]) -> Iterator[_DecodedChunk]:
    # NB: the molecule ids go to the decoder as arrays: tagging the records (a copy of the whole
    # input) and parsing the tags back cost ~1.5 s of CPU on the standard sample
    for chunk, molecules, strands in prepared.molecule_chunks(counter):
        yield chunk, decode_status(chunk, molecules=molecules, strands=strands)


def _consensus_header(header: dict[str, Any], params: ConsensusParams) -> dict[str, Any]:
    header = dict(header)
    header["HD"] = {**header.get("HD", {"VN": "1.6"}), "SO": "coordinate"}
    header["PG"] = [
        *header.get("PG", []),
        {"ID": "precise_mrd.consensus", "PN": "precise_mrd", "CL": f"consensus {params}"},
    ]
    return header


def _write_consensus(
    decoded_chunks: Iterator[_DecodedChunk],
    header: dict[str, Any],
    out_bam_path: Path,
    *,
    params: ConsensusParams,
    source: str,
    threads: int,
    records_only: bool = False,
) -> ConsensusStats:
    """Consensus records of the grouped records into a sorted, indexed BAM (``decoded_chunks``:
    each chunk of records with its :func:`decode_status`; a lazy iterator, run in a producer
    thread); with ``records_only`` the BGZF blocks of the records alone (a part of a file)."""
    contig_names = [entry["SN"] for entry in header.get("SQ", [])]
    out_bam_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = out_bam_path.with_name(f".{out_bam_path.name}.{os.getpid()}.tmp")
    index_path = out_bam_path.with_name(f".{out_bam_path.name}.{os.getpid()}.bai.tmp")
    try:
        with (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="consensus") as worker,
            BgzfWriter(
                tmp_path,
                level=CONSENSUS_BAM_COMPRESSION_LEVEL,
                threads=max(2, threads),
                eof=not records_only,
            ) as writer,
        ):
            caller = _StreamingCaller(params, source, contig_names, worker=worker)
            if not records_only:
                header_bytes = bam_header_bytes(_consensus_header(header, params), tmp_path.parent)
                writer.write(header_bytes)
            # NB: the records are decoded in the producer thread, beside the inflate and the
            # tagging: the compiled decoder releases the GIL and the caller's thread is the
            # bottleneck of the stage.
            for chunk, decoded in prefetch(decoded_chunks):
                for records in caller.add_decoded(chunk, *decoded):
                    writer.write(records)
            for records in caller.finish():
                writer.write(records)
        if not records_only:
            index_bam(tmp_path, index_path)
            os.replace(index_path, Path(f"{out_bam_path}.bai"))
        os.replace(tmp_path, out_bam_path)
    finally:
        for path in (tmp_path, index_path):
            path.unlink(missing_ok=True)
    return caller.stats()


def _decoded(chunks: Iterable[npt.NDArray[np.uint8]]) -> Iterator[_DecodedChunk]:
    for chunk in chunks:
        yield chunk, decode_status(chunk)


class _StreamingCaller:
    """Assembles molecules from chunks of grouped records and emits sorted consensus records.

    A molecule (one ``MI`` without ``/A``/``/B``) is *finished* once the stream is past the
    largest read or mate start of its reads; a read of the same ``MI`` that comes later starts a
    new molecule. Consensus records are held until no unfinished molecule can produce a record
    that sorts before them, then written in coordinate order (no separate sort pass).
    """

    def __init__(
        self,
        params: ConsensusParams,
        source: str,
        contig_names: list[str],
        *,
        worker: ThreadPoolExecutor | None = None,
    ) -> None:
        self.params = params
        self.worker = worker
        # the batch being processed (by ``worker``) and the emission bound of its records
        self.in_flight: tuple[Future[_BatchResult], int | None] | None = None
        self.source = source
        self.contig_names = contig_names
        self.counters = _Counters()
        self.cigars = _CigarTable()
        self.pending: ReadColumns | None = None
        self.pending_instance = np.zeros(0, dtype=np.int64)
        self.open_molecules = _OpenMolecules()
        self.next_instance = 0
        self.last_key = -1
        self.n_records_seen = 0
        self.out_keys: list[npt.NDArray[np.int64]] = []
        # NB: records at one position go out in the order of their molecule ids, so the output
        # does not depend on how molecules fell into batches (or the file into parts)
        self.out_ties: list[npt.NDArray[np.int64]] = []
        self.out_data: list[tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]] = []

    def add_chunk(self, chunk: npt.NDArray[np.uint8]) -> Iterator[npt.NDArray[np.uint8]]:
        yield from self.add_decoded(chunk, *decode_status(chunk))

    def add_decoded(
        self, chunk: npt.NDArray[np.uint8], status: npt.NDArray[np.int8], columns: ReadColumns
    ) -> Iterator[npt.NDArray[np.uint8]]:
        """:meth:`add_chunk` of a chunk already decoded by :func:`decode_status` (records with
        :data:`STATUS_ABSENT` are not part of the stream)."""
        n_records = len(status) - int(np.count_nonzero(status == STATUS_ABSENT))
        self.counters.n_reads_in += n_records
        self.counters.n_reads_skipped += int(np.count_nonzero(status == STATUS_SKIPPED))
        used = np.flatnonzero((status != STATUS_SKIPPED) & (status != STATUS_ABSENT))
        keys = columns.keys[used]
        previous = np.concatenate(([self.last_key], keys[:-1]))
        unsorted = np.flatnonzero(keys < np.maximum.accumulate(previous))
        no_mi = np.flatnonzero(status[used] == STATUS_NO_MI)
        if len(unsorted) and (not len(no_mi) or unsorted[0] <= no_mi[0]):
            name = self._read_name(chunk, columns, int(used[unsorted[0]]))
            raise InputFileError(
                self.source,
                f"is not coordinate-sorted (read {name} comes after a later position)",
                "run `samtools sort`",
            )
        if len(no_mi):
            name = self._read_name(chunk, columns, int(used[no_mi[0]]))
            raise InputDataError(
                self.source,
                f"read {name} has no MI tag",
                "run the group stage first (every read needs an MI molecule id)",
            )
        self.n_records_seen += n_records
        if len(used) == 0:
            return
        self.last_key = int(keys[-1])
        new = columns if len(used) == len(status) else columns.take(used)
        cigar_ids = self._intern_cigars(chunk, new)
        table = self.open_molecules
        table.reserve(len(new))
        instance, self.next_instance, n_added = _assign_instances(
            new.mi_codes,
            new.keys,
            new.needed,
            table.codes,
            table.instances,
            table.largest,
            self.next_instance,
        )
        table.n_open += n_added
        new = _with_cigar_ids(new, cigar_ids)
        if self.pending is None or len(self.pending) == 0:
            self.pending, self.pending_instance = new, instance
        else:
            self.pending = ReadColumns.concat([self.pending, new])
            self.pending_instance = np.concatenate([self.pending_instance, instance])
        complete = _complete_reads(
            self.pending.mi_codes,
            self.pending_instance,
            table.codes,
            table.instances,
            table.largest,
            self.last_key,
        )
        n_complete = int(complete.sum())
        if n_complete >= _MIN_BATCH_READS:
            future = self._process(complete)
            table.forget_finished(self.last_key)
            bound = self._emission_bound()
            # NB: the previous batch's records go out now, with the bound of its own time (the
            # same records in the same order as without the worker), while this batch runs.
            yield from self._receive()
            self.in_flight = (future, bound)

    def finish(self) -> Iterator[npt.NDArray[np.uint8]]:
        if self.pending is not None and len(self.pending):
            future = self._process(np.ones(len(self.pending), dtype=bool))
            yield from self._receive()
            self.in_flight = (future, None)
        yield from self._receive()
        yield from self._flush(bound=None)

    def _receive(self) -> Iterator[npt.NDArray[np.uint8]]:
        """Wait for the batch in flight, then write what its bound allows."""
        if self.in_flight is None:
            return
        future, bound = self.in_flight
        self.in_flight = None
        result = future.result()
        if result is not None:
            keys, ties, data, offsets = result
            self.out_keys.append(keys)
            self.out_ties.append(ties)
            self.out_data.append((data, offsets))
        yield from self._flush(bound=bound)

    def stats(self) -> ConsensusStats:
        counters = self.counters
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

    @staticmethod
    def _read_name(chunk: npt.NDArray[np.uint8], columns: ReadColumns, row: int) -> str:
        start = int(columns.name_starts[row])
        end = int(columns.cigar_starts[row]) - 1
        return chunk[start:end].tobytes().decode("ascii", errors="replace")

    def _intern_cigars(self, chunk: npt.NDArray[np.uint8], columns: ReadColumns) -> I64Array:
        """CIGAR ids in first-seen order over the stream (as the tie-breaks expect)."""
        distinct, first, inverse = np.unique(
            columns.cigar_hashes, return_index=True, return_inverse=True
        )
        local = np.empty(len(distinct), dtype=np.int64)
        for j in np.argsort(first, kind="stable").tolist():
            row = int(first[j])
            start = int(columns.cigar_starts[row])
            words = chunk[start : start + 4 * int(columns.cigar_counts[row])].tobytes()
            local[j] = self.cigars.intern_words(int(distinct[j]), words)
        ids = local[inverse.ravel()]
        # NB: verify the hash: every read's CIGAR must have the bytes of its interned CIGAR
        _check_cigars(chunk, columns.cigar_starts, columns.cigar_counts, ids, self.cigars)
        return ids

    def _emission_bound(self) -> int | None:
        """Consensus records that start before this key can be written: every future record
        starts at one of the reads still pending or yet to come."""
        bound = self.last_key
        if self.pending is not None and len(self.pending):
            bound = min(bound, int(self.pending.keys.min()))
        return bound

    def _process(self, complete: npt.NDArray[np.bool_]) -> Future[_BatchResult]:
        """Take the ``complete`` reads out of ``pending`` and start their consensus (in the
        worker, when there is one; its counters are not touched by this thread)."""
        assert self.pending is not None
        rows = np.flatnonzero(complete)
        order = rows[np.argsort(self.pending_instance[rows], kind="stable")]
        batch = self.pending.take(order, keep_whole=("bases", "quals"))
        instance = self.pending_instance[order]
        keep = ~complete
        self.pending = self.pending.take(np.flatnonzero(keep))
        self.pending_instance = self.pending_instance[keep]
        new_mol = np.ones(len(instance), dtype=bool)
        new_mol[1:] = instance[1:] != instance[:-1]
        mol = np.cumsum(new_mol) - 1
        args = (batch, order, mol, self.params, self.cigars.arrays(), self.counters)
        if self.worker is not None:
            return self.worker.submit(_process_batch, *args)
        done: Future[_BatchResult] = Future()
        done.set_result(_process_batch(*args))
        return done

    def _flush(self, *, bound: int | None) -> Iterator[npt.NDArray[np.uint8]]:
        if not self.out_keys:
            return
        keys = np.concatenate(self.out_keys)
        ties = np.concatenate(self.out_ties)
        sizes = [len(d) for d, _ in self.out_data]
        data = np.concatenate([d for d, _ in self.out_data])
        shifts = np.cumsum([0, *sizes[:-1]])
        offsets = np.concatenate(
            [o[:-1] + shift for (_, o), shift in zip(self.out_data, shifts, strict=True)]
            + [np.array([len(data)], dtype=np.int64)]
        )
        order = np.lexsort((ties, keys))  # NB: stable: a molecule's records keep their order
        n_ready = len(order) if bound is None else int(np.searchsorted(keys[order], bound))
        if n_ready:
            yield gather_records(data, offsets, order[:n_ready])
        rest = order[n_ready:]
        self.out_keys, self.out_ties, self.out_data = [], [], []
        if len(rest):
            rest = np.sort(rest)
            kept = gather_records(data, offsets, rest)
            rest_offsets = np.concatenate(([0], np.cumsum(offsets[rest + 1] - offsets[rest])))
            self.out_keys.append(keys[rest])
            self.out_ties.append(ties[rest])
            self.out_data.append((kept, rest_offsets.astype(np.int64)))


def _with_cigar_ids(columns: ReadColumns, ids: I64Array) -> ReadColumns:
    """``columns`` with ``cigar_hashes`` replaced by the interned CIGAR ids."""
    return dataclasses.replace(columns, cigar_hashes=ids)


class _OpenMolecules:
    """The open molecule of each ``MI`` code: its instance and the largest key it needs.

    NB: a hash table in three numpy arrays (open addressing, linear probing, at most half
    full; ``instances < 0`` marks an empty slot), not numba typed dicts: creating the first
    typed dict of a process compiles for ~0.4 s. Finished molecules are dropped by rebuilding.
    """

    def __init__(self) -> None:
        self.codes = np.zeros(1 << 12, dtype=np.int64)
        self.instances = np.full(1 << 12, -1, dtype=np.int64)
        self.largest = np.zeros(1 << 12, dtype=np.int64)
        self.n_open = 0

    def reserve(self, n_more: int) -> None:
        """Room for ``n_more`` new molecules."""
        size = len(self.codes)
        while 2 * (self.n_open + n_more) > size:
            size *= 2
        if size != len(self.codes):
            self._rebuild(size, np.iinfo(np.int64).min)

    def forget_finished(self, last_key: int) -> None:
        """Drop molecules whose largest needed key is below ``last_key``."""
        self._rebuild(len(self.codes), last_key)

    def _rebuild(self, size: int, min_largest: int) -> None:
        self.codes, self.instances, self.largest, self.n_open = _rebuild_open(
            self.codes, self.instances, self.largest, size, min_largest
        )


@numba.njit(cache=True, nogil=True)
def _probe(table_codes: I64Array, instances: I64Array, code: int) -> int:
    """The slot of ``code``, or the empty slot where it would go."""
    mask = len(table_codes) - 1
    mixed = np.uint64(code) * np.uint64(0x9E3779B97F4A7C15)
    slot: int = _I64((mixed >> np.uint64(32)) & np.uint64(mask))
    while instances[slot] >= 0 and table_codes[slot] != code:
        slot = (slot + 1) & mask
    return slot


@numba.njit(cache=True, nogil=True)
def _rebuild_open(
    table_codes: I64Array, instances: I64Array, largest: I64Array, size: int, min_largest: int
) -> tuple[I64Array, I64Array, I64Array, int]:
    """The entries with ``largest >= min_largest`` in a new table of ``size`` slots."""
    new_codes = np.zeros(size, dtype=np.int64)
    new_instances = np.full(size, -1, dtype=np.int64)
    new_largest = np.zeros(size, dtype=np.int64)
    n_open = 0
    for i in range(len(table_codes)):
        if instances[i] >= 0 and largest[i] >= min_largest:
            slot = _probe(new_codes, new_instances, table_codes[i])
            new_codes[slot] = table_codes[i]
            new_instances[slot] = instances[i]
            new_largest[slot] = largest[i]
            n_open += 1
    return new_codes, new_instances, new_largest, n_open


@numba.njit(cache=True, nogil=True)
def _assign_instances(
    codes: I64Array,
    keys: I64Array,
    needed: I64Array,
    table_codes: I64Array,
    instances: I64Array,
    largest: I64Array,
    next_instance: int,
) -> tuple[I64Array, int, int]:
    """Molecule instance of each read: the open instance of its ``MI`` unless the stream has
    passed every read and mate start of it (``key > max needed``), then a new one. Also
    returns the number of table entries added (the table needs room for one per read)."""
    out = np.empty(len(codes), dtype=np.int64)
    n_added = 0
    for i in range(len(codes)):
        code = codes[i]
        slot = _probe(table_codes, instances, code)
        if instances[slot] >= 0 and keys[i] <= largest[slot]:
            out[i] = instances[slot]
            if needed[i] > largest[slot]:
                largest[slot] = needed[i]
        else:
            if instances[slot] < 0:
                n_added += 1
            out[i] = next_instance
            table_codes[slot] = code
            instances[slot] = next_instance
            largest[slot] = needed[i]
            next_instance += 1
    return out, next_instance, n_added


@numba.njit(cache=True, nogil=True)
def _complete_reads(
    codes: I64Array,
    read_instances: I64Array,
    table_codes: I64Array,
    instances: I64Array,
    largest: I64Array,
    last_key: int,
) -> npt.NDArray[np.bool_]:
    """Reads whose molecule is finished: superseded by a newer instance, or passed by the
    stream (every later read has a key >= ``last_key`` > its largest needed key)."""
    out = np.empty(len(codes), dtype=np.bool_)
    for i in range(len(codes)):
        slot = _probe(table_codes, instances, codes[i])
        if instances[slot] < 0 or instances[slot] != read_instances[i]:
            out[i] = True
        else:
            out[i] = largest[slot] < last_key
    return out


def _check_cigars(
    chunk: npt.NDArray[np.uint8],
    starts: I64Array,
    counts: I64Array,
    ids: I64Array,
    cigars: _CigarTable,
) -> None:
    if not _cigars_match(chunk, starts, counts, ids, cigars.flat_words, cigars.word_offsets()):
        raise RuntimeError("CIGAR hash collision; please report this input")


@numba.njit(cache=True, nogil=True)
def _cigars_match(
    chunk: npt.NDArray[np.uint8],
    starts: I64Array,
    counts: I64Array,
    ids: I64Array,
    flat_bytes: npt.NDArray[np.uint8],
    offsets: I64Array,
) -> bool:
    for i in range(len(ids)):
        c = ids[i]
        size = 4 * counts[i]
        if offsets[c + 1] - offsets[c] != size:
            return False
        for k in range(size):
            if chunk[starts[i] + k] != flat_bytes[offsets[c] + k]:
                return False
    return True


def _process_batch(
    reads: ReadColumns,
    matrix_rows: I64Array,
    mol: I64Array,
    params: ConsensusParams,
    cigars: _CigarArrays,
    counters: _Counters,
) -> _BatchResult:
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
    f_mol, f_end = mol[first], end[first]
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
    cigars: _CigarArrays | _CigarTable,
    bases: npt.NDArray[np.uint8],
    quals: npt.NDArray[np.uint8],
    depths: npt.NDArray[np.int32],
) -> None:
    """Make R1 and R2 agree where they cover the same reference base (edits in place)."""
    if len(pair_first) == 0:
        return
    if isinstance(cigars, _CigarTable):
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
