"""In-process alignment of paired FASTQ to a coordinate-sorted, indexed BAM with UMIs in ``RX``.

This is the entry for users who bring FASTQ instead of an aligned BAM. Each read pair is split by
its read structure (:mod:`precise_mrd.core.read_structure`): the UMI bases leave the read and go to
the ``RX`` tag (``"UMI1-UMI2"`` when both reads carry one, as fgbio and the simulator write it;
the single UMI otherwise), skipped and sample-barcode bases are dropped, and only the template
bases and their qualities are aligned. Alignment is minimap2's short-read preset through ``mappy``
(``Aligner.map(seq1, seq2)``, paired mode with FR orientation), so no external binary is needed.

What lands in the BAM (SAM spec v1.6):

* one primary record per read, named without ``/1`` ``/2``; supplementary and secondary hits are
  dropped (counted in :attr:`AlignStats.n_supplementary_dropped`);
* soft clips for the unaligned read ends, the read's bases/qualities reverse-complemented on the
  reverse strand, ``MAPQ`` from minimap2, ``NM``;
* mate fields (``RNEXT``/``PNEXT``, mate-strand and mate-unmapped flags), ``MC`` (mate CIGAR),
  ``MQ`` (mate MAPQ) and ``TLEN`` from the leftmost to the rightmost aligned base (positive on the
  leftmost mate); "proper pair" (flag 0x2) when both mates map to one contig in FR orientation with
  ``|TLEN| <= max_insert_size``;
* **unmapped reads are kept** as unmapped records (flag 0x4). A read whose mate mapped is placed at
  its mate's position (samtools convention); a pair with no hit sits at the end of the file.

The records are streamed to an uncompressed temporary BAM next to the output, sorted with
``pysam.sort``, indexed, and moved into place with :func:`os.replace`, so a failed run never leaves
a half-written ``out_bam_path``. Mapping runs in ``threads`` worker threads (mappy releases the
GIL) while the main thread formats records, with a bounded number of chunks in flight.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import mappy
import pysam

from precise_mrd.core.errors import InputFileError, PipelineError
from precise_mrd.core.read_structure import ReadStructure
from precise_mrd.io.fasta import open_reference
from precise_mrd.io.fastq import FastqRecord, read_fastq_pairs

DEFAULT_MAX_INSERT_SIZE = 1000
CHUNK_PAIRS = 2000
SORT_MEMORY_PER_THREAD = "256M"
_COMPLEMENT = str.maketrans("ACGTNacgtn", "TGCANtgcan")

# One mapped read as plain values: (contig, 0-based start, 0-based end, strand +1/-1, MAPQ,
# CIGAR with soft clips, NM).
Hit = tuple[str, int, int, int, int, str, int]
# One pair ready for formatting: name, RX, template seq/qual of R1 and R2, hit of R1, hit of R2,
# number of dropped supplementary hits.
MappedPair = tuple[str, str, str, str, str, str, Hit | None, Hit | None, int]


@dataclass(frozen=True, slots=True)
class AlignStats:
    """Counts from one :func:`align_fastq_pair` run.

    ``n_mapped_pairs``: pairs with both mates mapped; ``n_unmapped``: reads (not pairs) left
    unmapped, each still written as an unmapped record.
    """

    n_pairs: int
    n_mapped_pairs: int
    n_proper_pairs: int
    n_unmapped: int
    n_supplementary_dropped: int
    seconds: float

    def __post_init__(self) -> None:
        if min(self.n_pairs, self.n_mapped_pairs, self.n_unmapped, self.n_proper_pairs) < 0:
            raise ValueError("counts must be >= 0")
        if self.n_mapped_pairs > self.n_pairs or self.n_proper_pairs > self.n_mapped_pairs:
            raise ValueError(
                f"need n_proper_pairs <= n_mapped_pairs <= n_pairs; got {self.n_proper_pairs}, "
                f"{self.n_mapped_pairs}, {self.n_pairs}"
            )
        if self.n_unmapped > 2 * self.n_pairs:
            raise ValueError(f"n_unmapped {self.n_unmapped} exceeds 2 * n_pairs {self.n_pairs}")

    @property
    def pairs_per_second(self) -> float:
        """Throughput of the whole stage (read, map, write, sort, index)."""
        return self.n_pairs / self.seconds if self.seconds > 0 else float("inf")


def _reverse_complement(seq: str) -> str:
    return seq.translate(_COMPLEMENT)[::-1]


def _hit_tuple(hit: mappy.Alignment, read_length: int) -> Hit:
    if hit.strand == 1:
        left, right = hit.q_st, read_length - hit.q_en
    else:
        left, right = read_length - hit.q_en, hit.q_st
    cigar = (f"{left}S" if left else "") + hit.cigar_str + (f"{right}S" if right else "")
    return (hit.ctg, hit.r_st, hit.r_en, hit.strand, hit.mapq, cigar, hit.NM)


def _single_end_hit(aligner: mappy.Aligner, seq: str, buffer: mappy.ThreadBuffer) -> Hit | None:
    for hit in aligner.map(seq, buf=buffer):
        if hit.is_primary:
            return _hit_tuple(hit, len(seq))
    return None


def _map_chunk(
    aligner: mappy.Aligner, chunk: list[tuple[str, str, str, str, str, str]]
) -> list[MappedPair]:
    """Map one chunk of split pairs; runs in a worker thread (one ThreadBuffer per call)."""
    buffer = mappy.ThreadBuffer()
    mapped: list[MappedPair] = []
    for name, umi, seq1, qual1, seq2, qual2 in chunk:
        hit1: Hit | None = None
        hit2: Hit | None = None
        n_extra = 0
        for hit in aligner.map(seq1, seq2, buf=buffer):
            if not hit.is_primary:
                continue
            if hit.read_num == 1:
                if hit1 is None:
                    hit1 = _hit_tuple(hit, len(seq1))
                else:
                    n_extra += 1
            elif hit2 is None:
                hit2 = _hit_tuple(hit, len(seq2))
            else:
                n_extra += 1
        # NB: in paired mode minimap2 sometimes reports only one mate when the two overlap almost
        # completely and carry a few mismatches (2-3% of 150-bp pairs from <160-bp fragments,
        # i.e. typical cfDNA). Mapping the missing mate on its own rescues it.
        if hit1 is None and hit2 is not None:
            hit1 = _single_end_hit(aligner, seq1, buffer)
        elif hit2 is None and hit1 is not None:
            hit2 = _single_end_hit(aligner, seq2, buffer)
        mapped.append((name, umi, seq1, qual1, seq2, qual2, hit1, hit2, n_extra))
    return mapped


def _split_pairs(
    pairs: Iterable[tuple[FastqRecord, FastqRecord]],
    read_structures: tuple[ReadStructure, ReadStructure],
) -> Iterator[tuple[str, str, str, str, str, str]]:
    structure1, structure2 = read_structures
    for read1, read2 in pairs:
        umi1, seq1, qual1 = structure1.extract(read1.seq, read1.qual)
        umi2, seq2, qual2 = structure2.extract(read2.seq, read2.qual)
        umi = f"{umi1}-{umi2}" if umi1 and umi2 else umi1 or umi2
        yield read1.name, umi, seq1.upper(), qual1, seq2.upper(), qual2


def _sam_line(
    name: str,
    flag: int,
    seq: str,
    qual: str,
    hit: Hit | None,
    mate: Hit | None,
    tlen: int,
    umi: str,
) -> str:
    """One SAM text line; unmapped reads take their mate's position when it has one."""
    tags = f"\tRX:Z:{umi}" if umi else ""
    if hit is not None:
        chrom, start, _end, strand, mapq, cigar, nm = hit
        if strand == -1:
            seq, qual = _reverse_complement(seq), qual[::-1]
        if mate is not None:
            next_chrom = "=" if mate[0] == chrom else mate[0]
            next_pos = mate[1] + 1
            tags += f"\tMC:Z:{mate[5]}\tMQ:i:{mate[4]}"
        else:
            next_chrom, next_pos = "=", start + 1
        return (
            f"{name}\t{flag}\t{chrom}\t{start + 1}\t{mapq}\t{cigar}\t{next_chrom}\t{next_pos}"
            f"\t{tlen}\t{seq}\t{qual}\tNM:i:{nm}{tags}"
        )
    if mate is not None:
        tags += f"\tMC:Z:{mate[5]}\tMQ:i:{mate[4]}"
        return (
            f"{name}\t{flag}\t{mate[0]}\t{mate[1] + 1}\t0\t*\t=\t{mate[1] + 1}\t0\t{seq}\t{qual}"
            f"{tags}"
        )
    return f"{name}\t{flag}\t*\t0\t0\t*\t*\t0\t0\t{seq}\t{qual}{tags}"


def _pair_lines(pair: MappedPair, max_insert_size: int) -> tuple[str, str, bool]:
    """SAM lines for R1 and R2 and whether the pair is proper."""
    name, umi, seq1, qual1, seq2, qual2, hit1, hit2, _n_extra = pair
    flag1, flag2 = 0x1 | 0x40, 0x1 | 0x80
    tlen1 = tlen2 = 0
    is_proper = False
    if hit1 is None:
        flag1 |= 0x4
        flag2 |= 0x8
    elif hit1[3] == -1:
        flag1 |= 0x10
        flag2 |= 0x20
    if hit2 is None:
        flag2 |= 0x4
        flag1 |= 0x8
    elif hit2[3] == -1:
        flag2 |= 0x10
        flag1 |= 0x20
    if hit1 is not None and hit2 is not None and hit1[0] == hit2[0]:
        span = max(hit1[2], hit2[2]) - min(hit1[1], hit2[1])
        tlen1 = span if hit1[1] <= hit2[1] else -span
        tlen2 = -tlen1
        forward, reverse = (hit1, hit2) if hit1[3] == 1 else (hit2, hit1)
        is_proper = (
            forward[3] == 1
            and reverse[3] == -1
            and forward[1] <= reverse[2]
            and span <= max_insert_size
        )
        if is_proper:
            flag1 |= 0x2
            flag2 |= 0x2
    line1 = _sam_line(name, flag1, seq1, qual1, hit1, hit2, tlen1, umi)
    line2 = _sam_line(name, flag2, seq2, qual2, hit2, hit1, tlen2, umi)
    return line1, line2, is_proper


def _header(contig_lengths: dict[str, int], command: str) -> pysam.AlignmentHeader:
    return pysam.AlignmentHeader.from_dict(
        {
            "HD": {"VN": "1.6", "SO": "unsorted"},
            "SQ": [{"SN": name, "LN": length} for name, length in contig_lengths.items()],
            "PG": [{"ID": "precise-mrd-align", "PN": "mappy", "CL": command}],
        }
    )


def _chunks(
    items: Iterator[tuple[str, str, str, str, str, str]], size: int
) -> Iterator[list[tuple[str, str, str, str, str, str]]]:
    while chunk := list(islice(items, size)):
        yield chunk


def align_fastq_pair(
    r1_path: Path,
    r2_path: Path,
    *,
    reference_path: Path,
    read_structures: tuple[ReadStructure, ReadStructure],
    out_bam_path: Path,
    threads: int = 1,
    max_insert_size: int = DEFAULT_MAX_INSERT_SIZE,
) -> AlignStats:
    """Align paired FASTQ to ``reference_path`` and write a sorted, indexed BAM with ``RX`` UMIs.

    See the module docstring for what the records hold. Bad inputs raise
    :class:`~precise_mrd.core.errors.InputError` naming the file; ``threads`` counts mapping
    threads (and sort threads).
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1; got {threads}")
    if max_insert_size < 1:
        raise ValueError(f"max_insert_size must be >= 1; got {max_insert_size}")
    started = time.perf_counter()
    with open_reference(reference_path) as reference:
        contig_lengths = dict(reference.contig_lengths)
    pairs = read_fastq_pairs(r1_path, r2_path, read_structures=read_structures)
    aligner = mappy.Aligner(str(reference_path), preset="sr", n_threads=threads)
    if not aligner:
        raise InputFileError(
            str(reference_path), "minimap2 could not index the reference", "check the FASTA"
        )
    if not out_bam_path.parent.is_dir():
        raise InputFileError(
            str(out_bam_path), "its directory does not exist", "create the output directory"
        )
    stem = f".{out_bam_path.name}.{os.getpid()}"
    unsorted_path = out_bam_path.with_name(f"{stem}.unsorted.bam")
    sorted_path = out_bam_path.with_name(f"{stem}.sorted.bam")
    command = (
        f"align_fastq_pair {r1_path} {r2_path} reference={reference_path} "
        f"read_structures={read_structures[0]},{read_structures[1]}"
    )
    header = _header(contig_lengths, command)
    counts = [0, 0, 0, 0, 0]  # pairs, mapped pairs, proper pairs, unmapped reads, dropped hits
    try:
        with pysam.AlignmentFile(str(unsorted_path), "wbu", header=header) as out:
            for mapped in _map_all(
                aligner, _chunks(_split_pairs(pairs, read_structures), CHUNK_PAIRS), threads
            ):
                for pair in mapped:
                    line1, line2, is_proper = _pair_lines(pair, max_insert_size)
                    try:
                        out.write(pysam.AlignedSegment.fromstring(line1, header))
                        out.write(pysam.AlignedSegment.fromstring(line2, header))
                    except ValueError as error:
                        raise InputFileError(
                            str(r1_path),
                            f"read {pair[0]} cannot be stored in BAM ({error})",
                            "check that the FASTQ holds only IUPAC bases and Phred+33 qualities",
                        ) from error
                    counts[0] += 1
                    counts[1] += pair[6] is not None and pair[7] is not None
                    counts[2] += is_proper
                    counts[3] += (pair[6] is None) + (pair[7] is None)
                    counts[4] += pair[8]
        if counts[0] == 0:
            raise InputFileError(
                str(r1_path), "contains no reads", "pass the FASTQ pair of a sequencing run"
            )
        pysam.sort(
            "-@",
            str(threads),
            "-m",
            SORT_MEMORY_PER_THREAD,
            "-T",
            str(out_bam_path.with_name(f"{stem}.sorttmp")),
            "-o",
            str(sorted_path),
            str(unsorted_path),
        )
        pysam.index(str(sorted_path))
        os.replace(f"{sorted_path}.bai", f"{out_bam_path}.bai")
        os.replace(sorted_path, out_bam_path)
    except pysam.utils.SamtoolsError as error:
        raise PipelineError(f"sorting/indexing {out_bam_path} failed: {error}") from error
    finally:
        for leftover in (unsorted_path, sorted_path, Path(f"{sorted_path}.bai")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
    return AlignStats(
        n_pairs=counts[0],
        n_mapped_pairs=counts[1],
        n_proper_pairs=counts[2],
        n_unmapped=counts[3],
        n_supplementary_dropped=counts[4],
        seconds=time.perf_counter() - started,
    )


def _map_all(
    aligner: mappy.Aligner,
    chunks: Iterator[list[tuple[str, str, str, str, str, str]]],
    threads: int,
) -> Iterator[list[MappedPair]]:
    """Map chunks in order; with ``threads`` > 1 keep up to ``2 * threads`` chunks in flight."""
    if threads == 1:
        for chunk in chunks:
            yield _map_chunk(aligner, chunk)
        return
    with ThreadPoolExecutor(max_workers=threads) as pool:
        in_flight: deque[Future[list[MappedPair]]] = deque()
        for chunk in chunks:
            in_flight.append(pool.submit(_map_chunk, aligner, chunk))
            if len(in_flight) >= 2 * threads:
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()
