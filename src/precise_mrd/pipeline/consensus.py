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
3. keeps, per end, the reads compatible with the most common alignment (fgbio's
   ``filterToMostCommonAlignment``: simplified CIGARs in read orientation, a shorter read may be
   a prefix of a longer one; :mod:`.consensus_alignment`), and lines up their 5' ends so that
   column ``i`` of every kept read is the same template base;
4. drops molecules below ``params.min_reads`` (templates per strand; see
   :class:`~precise_mrd.core.consensus.ConsensusParams`);
5. calls single-strand consensus for every (molecule, end, strand) family of a batch in one
   vectorised call (as long as fgbio's ``consensusReadLength``), combines the two strands of
   duplex ends, reconciles the overlap of R1 and R2 (``consensus.overlap``: in the finished R1
   and R2 consensus, the same base in both records or ``N``; or, as fgbio, in each raw read pair
   before the family consensus);
6. writes ``R1``/``R2`` consensus records (or one record per strand for single-end reads) with
   fgbio's tags ``MI RX cD cM cE`` and, for duplex-grouped molecules, ``aD bD aM bM aE bE``
   (``a`` is the ``/A`` strand when both were seen; with one strand seen it is that strand and
   ``bD == 0``) as binary BAM records, each one written as soon as no unfinished molecule can
   produce a record that sorts before it, so the output is coordinate-sorted without a sort
   pass; then indexes it, writing to a temporary name first.

:func:`group_and_call_consensus` runs the group stage and this one without the grouped BAM in
between: the group stage's molecule ids go to the record decoder as arrays beside the input's
records (no ``MI`` tag is written or parsed; the records decode as the tagged ones would).

The consensus maths lives in :mod:`precise_mrd.core.consensus`. The stage is four modules, as
fgbio splits it: :mod:`.consensus_molecules` assembles molecules from the stream and writes the
records in order (steps 1-2 and 6's ordering), :mod:`.consensus_alignment` holds the CIGARs and
the alignment filter (step 3), :mod:`.consensus_batch` calls a batch of finished molecules
(steps 3-6: ``min_reads``, families, duplex, overlap, records) and this module has the entry
points and the files (the BAM, its index, parts of a split file).

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

import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pysam

from precise_mrd.core.consensus import (
    ConsensusParams,
)
from precise_mrd.core.errors import InputFileError
from precise_mrd.io.bam import (
    BgzfWriter,
    RecordRange,
    bam_header_bytes,
    index_bam,
    iter_record_chunks,
    prefetch,
)
from precise_mrd.io.bam_columns import (
    ReadColumns,
    decode_status,
    gather_records,
)
from precise_mrd.io.bam_parts import consensus_sort_keys
from precise_mrd.pipeline.consensus_molecules import ConsensusStats, StreamingCaller
from precise_mrd.pipeline.group import GroupStats, PreparedGrouping, prepare_grouping

__all__ = [
    "ConsensusStats",
    "call_consensus_bam",
    "call_consensus_part",
    "group_and_call_consensus",
    "join_consensus_parts",
]


I64Array = npt.NDArray[np.int64]
DecodedChunk = tuple[npt.NDArray[np.uint8], tuple[npt.NDArray[np.int8], ReadColumns]]

# NB: the consensus BAM is written once and read once by the evidence stage; zlib level 1 is
# ~6x faster than level 6 for a file ~25% larger.
CONSENSUS_BAM_COMPRESSION_LEVEL: Final[int] = 1


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


def _decoded_molecules(prepared: PreparedGrouping, counter: list[int]) -> Iterator[DecodedChunk]:
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
    decoded_chunks: Iterator[DecodedChunk],
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
            caller = StreamingCaller(params, source, contig_names, worker=worker)
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


def _decoded(chunks: Iterable[npt.NDArray[np.uint8]]) -> Iterator[DecodedChunk]:
    for chunk in chunks:
        yield chunk, decode_status(chunk)
