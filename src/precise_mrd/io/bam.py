"""Open and stream BAM files with checks that name the file, the problem and the fix.

Every stage that reads a BAM goes through :func:`open_bam`, which refuses, with an
:class:`~precise_mrd.core.errors.InputFileError`, a path that is missing or unreadable, a file
that is not BAM, a BAM cut short (no BGZF end-of-file block) and, unless ``require_sorted=False``,
a BAM whose header does not say ``SO:coordinate``. :func:`iter_alignments` streams records and
turns a truncation met while reading, or records out of coordinate order, into the same error;
:func:`require_umis` checks the first mapped reads for a UMI; :func:`umi_of` reads one read's UMI
from a SAM tag or from the end of its name.

For whole-file passes that need only a few fields per read, :func:`iter_record_chunks` inflates
the BGZF blocks (two threads) into chunks of raw binary records, :func:`summarise_records`
extracts flags, 5' ends, mate ends (``MC``), name hashes and UMIs in one compiled loop,
:func:`tag_records` rewrites records with a new ``Z`` tag and :class:`BgzfWriter` compresses
the result in threads: no pysam object is made per read.

>>> import tempfile, pathlib, pysam
>>> path = pathlib.Path(tempfile.mkdtemp()) / "x.bam"
>>> header = {"HD": {"VN": "1.6", "SO": "coordinate"}, "SQ": [{"SN": "chr1", "LN": 1000}]}
>>> with pysam.AlignmentFile(str(path), "wb", header=header) as out:
...     read = pysam.AlignedSegment(out.header)
...     read.query_name, read.reference_id, read.reference_start = "r1_ACGT", 0, 10
...     read.cigarstring, read.query_sequence = "4M", "ACGT"
...     _ = out.write(read)
>>> with open_bam(path) as bam:
...     [umi_of(r, umi_tag="RX", from_read_name=True, separator="_") for r in bam]
['ACGT']
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import os
import shutil
import threading
import zlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty, Queue
from typing import Any, Final, TypeVar, cast

import numba
import numpy as np
import numpy.typing as npt
import pysam
from isal import isal_zlib

from precise_mrd.core.errors import InputFileError

BGZF_EOF: Final[bytes] = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
_BGZF_MAGIC: Final[bytes] = b"\x1f\x8b\x08\x04"
N_READS_PROBED_FOR_UMI: Final[int] = 1000
_SORT_FIX: Final[str] = "sort it with `samtools sort -o sorted.bam in.bam` and index it"


def check_bam_file(path: Path) -> None:
    """Raise :class:`InputFileError` unless ``path`` is a readable, complete BGZF file."""
    name = str(path)
    if not path.exists():
        raise InputFileError(name, "does not exist", "check the path and the file name")
    if path.is_dir():
        raise InputFileError(name, "is a directory, not a BAM file", "pass the path of a .bam file")
    if not os.access(path, os.R_OK):
        raise InputFileError(name, "is not readable", "fix the file permissions (chmod +r)")
    try:
        with open(path, "rb") as handle:
            magic = handle.read(4)
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - len(BGZF_EOF)))
            tail = handle.read()
    except OSError as error:
        raise InputFileError(name, f"cannot be read ({error})", "check the file") from error
    if magic != _BGZF_MAGIC:
        raise InputFileError(
            name,
            "is not a BAM file (no BGZF header; SAM, CRAM or plain gzip are not accepted here)",
            "convert it with `samtools view -b -o out.bam in.sam`",
        )
    if tail != BGZF_EOF:
        raise InputFileError(
            name,
            "is truncated (the BGZF end-of-file block is missing)",
            "re-create or re-download the file; an interrupted copy or write leaves it cut short",
        )


def open_bam(path: Path, *, require_sorted: bool = True, threads: int = 1) -> pysam.AlignmentFile:
    """Open a BAM for reading after :func:`check_bam_file`; optionally demand ``SO:coordinate``.

    ``threads`` > 1 lets htslib decompress in that many threads.
    """
    path = Path(path)
    check_bam_file(path)
    try:
        bam = pysam.AlignmentFile(str(path), "rb", check_sq=False, threads=threads)
    except (OSError, ValueError) as error:
        raise InputFileError(
            str(path), f"is not a readable BAM file ({error})", "check that it is a valid BAM"
        ) from error
    if require_sorted:
        sort_order = bam.header.to_dict().get("HD", {}).get("SO")
        if sort_order != "coordinate":
            bam.close()
            raise InputFileError(
                str(path),
                f"is not coordinate-sorted (header SO is {sort_order or 'missing'})",
                _SORT_FIX,
            )
    return bam


def iter_alignments(
    bam: pysam.AlignmentFile, path: Path, *, check_order: bool = True
) -> Iterator[pysam.AlignedSegment]:
    """Stream every record of ``bam`` in file order (mapped, unmapped, secondary: all of them).

    With ``check_order``, a mapped record that comes before its predecessor in coordinate order
    raises :class:`InputFileError`; so does a read error (a BAM cut short inside a block).
    """
    last_tid = -1
    last_pos = -1
    seen_unplaced = False
    iterator = bam.fetch(until_eof=True)
    while True:
        try:
            read = next(iterator)
        except StopIteration:
            return
        except OSError as error:
            # NB: htslib keeps the error state and closing would raise again: close it here
            with contextlib.suppress(OSError):
                bam.close()
            raise InputFileError(
                str(path),
                f"is truncated or corrupt ({error})",
                "re-create or re-download the file",
            ) from error
        if check_order:
            tid = read.reference_id
            pos = read.reference_start
            if tid < 0:
                seen_unplaced = True
            elif seen_unplaced or tid < last_tid or (tid == last_tid and pos < last_pos):
                raise InputFileError(
                    str(path),
                    f"is not coordinate-sorted (read {read.query_name} at "
                    f"{read.reference_name}:{pos + 1} comes after an earlier position)",
                    _SORT_FIX,
                )
            else:
                last_tid, last_pos = tid, pos
        yield read


def umi_of(
    read: pysam.AlignedSegment, umi_tag: str, from_read_name: bool, separator: str
) -> str | None:
    """The read's UMI: the ``umi_tag`` tag, or the read-name text after the last ``separator``.

    Returns ``None`` when there is none (no tag; or no separator / nothing after it in the name).
    """
    if from_read_name:
        name = read.query_name or ""
        head, sep, umi = name.rpartition(separator)
        return umi if sep and head and umi else None
    if read.has_tag(umi_tag):
        value = read.get_tag(umi_tag)
        return str(value) if value else None
    return None


def require_umis(
    path: Path,
    *,
    umi_tag: str,
    from_read_name: bool,
    separator: str,
    n_probe: int = N_READS_PROBED_FOR_UMI,
) -> None:
    """Raise :class:`InputFileError` if none of the first ``n_probe`` mapped reads has a UMI."""
    n_seen = 0
    with open_bam(path, require_sorted=False) as bam:
        for read in iter_alignments(bam, path, check_order=False):
            if read.is_unmapped:
                continue
            if umi_of(read, umi_tag, from_read_name, separator) is not None:
                return
            n_seen += 1
            if n_seen >= n_probe:
                break
    if n_seen == 0:
        return  # no mapped reads at all: nothing to group, not a UMI problem
    where = (
        f"at the end of the read name after {separator!r}"
        if from_read_name
        else f"in the {umi_tag} tag"
    )
    fix = (
        f"put the UMI in the {umi_tag} tag (e.g. `fgbio CopyUmiFromReadName`) or use "
        "--umi-from-read-name with the right separator"
        if not from_read_name
        else f"check the separator (now {separator!r}) or tag the reads with {umi_tag}"
    )
    raise InputFileError(str(path), f"has no UMI {where} in its first {n_seen} mapped reads", fix)


# ---------------------------------------------------------------------------------------------
# Fast columnar pass over a BAM: BGZF blocks are inflated with ISA-L and the binary records are
# summarised by a compiled loop, so a pass costs well under a microsecond per read instead of a
# pysam object per read. Used by stages that only need a few fields of every record.
# ---------------------------------------------------------------------------------------------

STATUS_KEPT: Final[int] = 0
STATUS_UNMAPPED: Final[int] = 1
STATUS_SECONDARY: Final[int] = 2
STATUS_SUPPLEMENTARY: Final[int] = 3
STATUS_QC_FAIL: Final[int] = 4
STATUS_LOW_MAPQ: Final[int] = 5
STATUS_NO_UMI: Final[int] = 6
STATUS_NAMES: Final[tuple[str, ...]] = (
    "kept",
    "unmapped",
    "secondary",
    "supplementary",
    "qc_fail",
    "low_mapq",
    "no_umi",
)
MAX_UMI_LENGTH: Final[int] = 64
_RECORD_CHUNK_BYTES: Final[int] = 1 << 22
_I64: Any = np.int64  # NB: typed Any so that numba-compiled integer maths type-checks as int


# NB: isal's stub types ``error`` as an instance; it is the exception class
_INFLATE_ERRORS: tuple[type[BaseException], ...] = (
    zlib.error,
    cast("type[BaseException]", isal_zlib.error),
)


def _inflate(block: memoryview) -> bytes:
    # NB: ISA-L inflates BGZF blocks of real reads ~2.2x faster than zlib (CPU time, same bytes)
    return isal_zlib.decompress(block, -15)


def _iter_bgzf_payloads(
    path: Path, *, threads: int = 2, start: int = 0, offsets: list[int] | None = None
) -> Iterator[bytes]:
    """Inflate the BGZF blocks of ``path`` in order, ``threads`` blocks at a time, from the
    block at file offset ``start``; ``offsets`` (if given) gets the file offset of each block
    before its payload is yielded.

    Raises :class:`InputFileError` for a file that is cut short or corrupt.
    """
    name = str(path)
    base = start  # file offset of data[0]
    with open(path, "rb") as handle, ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        handle.seek(start)
        data = b""
        while True:
            more = handle.read(1 << 22)
            data = data + more if data else more
            view = memoryview(data)
            offset = 0
            size = len(data)
            blocks: list[memoryview] = []
            while size - offset >= 18:
                if view[offset : offset + 4] != _BGZF_MAGIC:
                    raise InputFileError(
                        name,
                        f"is corrupt (no BGZF block at byte {base + offset})",
                        "re-create or re-download the file",
                    )
                xlen = view[offset + 10] | (view[offset + 11] << 8)
                extra = bytes(view[offset + 12 : offset + 12 + xlen])
                where = extra.find(b"BC\x02\x00")
                if where < 0 or len(extra) < where + 6:
                    raise InputFileError(name, "is not BGZF-compressed", "re-create the BAM")
                total = (extra[where + 4] | (extra[where + 5] << 8)) + 1
                if size - offset < total:
                    break
                blocks.append(view[offset + 12 + xlen : offset + total - 8])
                if offsets is not None:
                    offsets.append(base + offset)
                offset += total
            try:
                if threads > 1:
                    yield from pool.map(_inflate, blocks)
                else:
                    yield from map(_inflate, blocks)
            except _INFLATE_ERRORS as error:
                raise InputFileError(
                    name, f"is corrupt ({error})", "re-create or re-download the file"
                ) from error
            del blocks
            view.release()
            data = data[offset:]
            base += offset
            if not more:
                if data:
                    raise InputFileError(
                        name, "is truncated inside a BGZF block", "re-create or re-download it"
                    )
                return


def _bam_header_length(buffer: bytes | bytearray, name: str) -> int | None:
    """Bytes taken by the BAM header at the start of ``buffer``; None if not all there yet."""
    if len(buffer) < 12:
        return None
    if bytes(buffer[:4]) != b"BAM\x01":
        raise InputFileError(name, "is not a BAM file (bad magic)", "check the file format")
    offset = 8 + int.from_bytes(buffer[4:8], "little", signed=True)
    if len(buffer) < offset + 4:
        return None
    n_references = int.from_bytes(buffer[offset : offset + 4], "little", signed=True)
    offset += 4
    for _ in range(n_references):
        if len(buffer) < offset + 4:
            return None
        offset += 4 + int.from_bytes(buffer[offset : offset + 4], "little", signed=True) + 4
    return offset if len(buffer) >= offset else None


_T = TypeVar("_T")
_DONE: Final[object] = object()


def prefetch(items: Iterator[_T], *, depth: int = 2) -> Iterator[_T]:
    """Run ``items`` in a background thread, up to ``depth`` items ahead of the consumer.

    The producer's compiled kernels and ISA-L's inflate release the GIL, so producing the next chunk
    overlaps with processing this one. An exception in the producer is raised in the consumer;
    closing the consumer stops the producer at its next item.
    """
    queue: Queue[Any] = Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                queue.put(item)
            queue.put(_DONE)
        except BaseException as error:  # NB: handed to the consumer
            queue.put(error)

    worker = threading.Thread(target=produce, name="prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():
            with contextlib.suppress(Empty):
                queue.get(timeout=0.05)
        worker.join()


def not_sorted_error(path: Path, record_number: int, contig: str) -> InputFileError:
    """The error for a BAM whose record ``record_number`` (1-based) comes after a later one."""
    return InputFileError(
        str(path),
        f"is not coordinate-sorted (record {record_number} at {contig} comes after an "
        "earlier position)",
        _SORT_FIX,
    )


@dataclass(frozen=True)
class RecordRange:
    """A run of consecutive records of a BAM: it starts at virtual offset (``block_offset``,
    ``within``) and holds ``n_records`` records (``None``: every record to the end of the file)."""

    block_offset: int
    within: int
    n_records: int | None


@dataclass
class StreamLog:
    """Where the records of :func:`iter_record_chunks` came from, filled in while iterating:
    the file offset of every BGZF block read, the offset in the inflated stream at which its
    payload starts, and the stream offset of the first record of every chunk yielded."""

    block_offsets: list[int] = field(default_factory=list)
    block_starts: list[int] = field(default_factory=list)
    chunk_starts: list[int] = field(default_factory=list)

    def range_at(self, stream_offset: int, n_records: int | None) -> RecordRange:
        """The :class:`RecordRange` of ``n_records`` records from ``stream_offset`` on."""
        block = bisect.bisect_right(self.block_starts, stream_offset) - 1
        return RecordRange(
            self.block_offsets[block], stream_offset - self.block_starts[block], n_records
        )


def iter_record_chunks(
    path: Path, part: RecordRange | None = None, *, log: StreamLog | None = None
) -> Iterator[npt.NDArray[np.uint8]]:
    """The binary alignment records of a BAM (header skipped) in chunks of whole records; only
    those of ``part`` if given. ``log`` records where each block and chunk came from."""
    if part is not None:
        yield from _iter_part_chunks(path, part)
        return
    name = str(path)
    parts: list[bytes] = []
    n_pending = 0
    header_done = False
    offsets = log.block_offsets if log is not None else None
    stream = 0  # stream offset of parts[0]
    # NB: payloads are joined once per ~4 MB chunk and the chunk is a view of the joined bytes;
    # only the cut-off tail record is copied again (a bytearray append/slice/copy per block
    # cost ~3 copies of every byte).
    # NB: inflated in this thread: with ISA-L a pool of inflate threads only added overhead
    # (the whole file: 0.84 s wall and CPU alone, 0.85 s wall and 1.33 s CPU with two threads)
    for payload in _iter_bgzf_payloads(path, threads=1, offsets=offsets):
        if log is not None:
            log.block_starts.append(stream + n_pending)
        parts.append(payload)
        n_pending += len(payload)
        if not header_done:
            joined = b"".join(parts)
            header_length = _bam_header_length(joined, name)
            if header_length is None:
                parts = [joined]
                continue
            parts = [joined[header_length:]]
            n_pending = len(parts[0])
            stream += header_length
            header_done = True
        if n_pending >= _RECORD_CHUNK_BYTES:
            data = np.frombuffer(b"".join(parts), dtype=np.uint8)
            whole = int(_whole_records_length(data))
            if log is not None:
                log.chunk_starts.append(stream)
            yield data[:whole]
            tail = data[whole:].tobytes()
            parts = [tail]
            n_pending = len(tail)
            stream += whole
    if not header_done:
        joined = b"".join(parts)
        if _bam_header_length(joined, name) is None and joined:
            raise InputFileError(name, "is truncated (its header is cut short)", "re-create it")
        return
    if n_pending:
        data = np.frombuffer(b"".join(parts), dtype=np.uint8)
        whole = int(_whole_records_length(data))
        if whole != len(data):
            raise InputFileError(
                name, "is truncated (its last record is cut short)", "re-create it"
            )
        if log is not None:
            log.chunk_starts.append(stream)
        yield data


def _iter_part_chunks(path: Path, part: RecordRange) -> Iterator[npt.NDArray[np.uint8]]:
    """The records of ``part`` in chunks of whole records (see :func:`iter_record_chunks`)."""
    name = str(path)
    remaining = part.n_records
    parts: list[bytes] = []
    n_pending = 0
    first = True
    for payload in _iter_bgzf_payloads(path, threads=1, start=part.block_offset):
        if first:
            payload = payload[part.within :]
            first = False
        parts.append(payload)
        n_pending += len(payload)
        if n_pending < _RECORD_CHUNK_BYTES:
            continue
        data = np.frombuffer(b"".join(parts), dtype=np.uint8)
        whole = int(_whole_records_length(data))
        if remaining is not None:
            n_chunk = int(count_records(data[:whole]))
            if n_chunk >= remaining:
                yield data[: int(_records_prefix_length(data, remaining))]
                return
            remaining -= n_chunk
        yield data[:whole]
        tail = data[whole:].tobytes()
        parts = [tail]
        n_pending = len(tail)
    data = np.frombuffer(b"".join(parts), dtype=np.uint8)
    whole = int(_whole_records_length(data))
    n_chunk = int(count_records(data[:whole]))
    if whole != len(data) and (remaining is None or n_chunk < remaining):
        raise InputFileError(name, "is truncated (its last record is cut short)", "re-create it")
    if remaining is not None and n_chunk < remaining:
        raise InputFileError(
            name, "changed while it was being read (fewer records than planned)", "run again"
        )
    if remaining is not None:
        whole = int(_records_prefix_length(data, remaining))
    if whole:
        yield data[:whole]


@numba.njit(cache=True, nogil=True)
def int32_at(buffer: npt.NDArray[np.uint8], offset: int) -> int:
    """The little-endian signed 32-bit integer at ``offset`` of a raw BAM buffer."""
    value = (
        _I64(buffer[offset])
        | (_I64(buffer[offset + 1]) << 8)
        | (_I64(buffer[offset + 2]) << 16)
        | (_I64(buffer[offset + 3]) << 24)
    )
    signed: int = value - (1 << 32) if value >= (1 << 31) else value
    return signed


@numba.njit(cache=True, nogil=True)
def _whole_records_length(buffer: npt.NDArray[np.uint8]) -> int:
    offset = 0
    while offset + 4 <= len(buffer):
        size = int32_at(buffer, offset)
        if offset + 4 + size > len(buffer):
            break
        offset += 4 + size
    return offset


@numba.njit(cache=True, nogil=True)
def _records_prefix_length(buffer: npt.NDArray[np.uint8], n_records: int) -> int:
    """Bytes taken by the first ``n_records`` whole records of ``buffer``."""
    offset = 0
    for _ in range(n_records):
        if offset + 4 > len(buffer):
            break
        offset += 4 + int32_at(buffer, offset)
    return offset


@numba.njit(cache=True, nogil=True)
def count_records(buffer: npt.NDArray[np.uint8]) -> int:
    """The number of whole records in a chunk from :func:`iter_record_chunks`."""
    n = 0
    offset = 0
    while offset + 4 <= len(buffer):
        offset += 4 + int32_at(buffer, offset)
        n += 1
    return n


@numba.njit(cache=True, nogil=True)
def _cigar_text_geometry(
    buffer: npt.NDArray[np.uint8], start: int, end: int
) -> tuple[int, int, int]:
    """(reference length, leading clips, trailing clips) of an ASCII CIGAR in buffer[start:end]."""
    reference_length = 0
    leading = 0
    trailing = 0
    in_leading = True
    number = 0
    for p in range(start, end):
        c = buffer[p]
        if 48 <= c <= 57:
            number = number * 10 + (c - 48)
            continue
        if c == 83 or c == 72:  # S, H
            if in_leading:
                leading += number
            trailing += number
        else:
            in_leading = False
            trailing = 0
            if c == 77 or c == 68 or c == 78 or c == 61 or c == 88:  # M D N = X
                reference_length += number
        number = 0
    return reference_length, leading, trailing


@numba.njit(cache=True, nogil=True)
def summarise_records(
    buffer: npt.NDArray[np.uint8],
    umi_tag: npt.NDArray[np.uint8],
    umi_from_read_name: bool,
    separator: int,
    min_mapq: int,
    order_state: npt.NDArray[np.int64],
) -> tuple[
    npt.NDArray[np.int8],
    npt.NDArray[np.int64],
    npt.NDArray[np.int64],
    npt.NDArray[np.int64],
    npt.NDArray[np.int64],
    npt.NDArray[np.int64],
    npt.NDArray[np.int64],
    npt.NDArray[np.uint8],
    npt.NDArray[np.int64],
    int,
]:
    """Per record of a chunk: status, flag, contig, unclipped 5' end, mate contig and 5' end (from
    ``MC``; -1 without a mapped mate), FNV-1a hash of the name, UMI bytes and length.

    ``order_state`` carries (last contig, last position, seen unplaced) between chunks; the last
    value returned is the index of the first record out of coordinate order, or -1.
    """
    n = count_records(buffer)
    status = np.zeros(n, dtype=np.int8)
    flags = np.zeros(n, dtype=np.int64)
    tids = np.zeros(n, dtype=np.int64)
    pos5s = np.zeros(n, dtype=np.int64)
    mate_tids = np.full(n, -1, dtype=np.int64)
    mate_pos5s = np.full(n, -1, dtype=np.int64)
    name_hashes = np.zeros(n, dtype=np.int64)
    umis = np.zeros((n, MAX_UMI_LENGTH), dtype=np.uint8)
    umi_lengths = np.zeros(n, dtype=np.int64)
    first_unsorted = -1
    offset = 0
    for i in range(n):
        size = int32_at(buffer, offset)
        record = offset + 4
        end = record + size
        offset = end
        tid = int32_at(buffer, record)
        pos = int32_at(buffer, record + 4)
        if first_unsorted < 0:
            if tid < 0:
                order_state[2] = 1
            elif (
                order_state[2] == 1
                or tid < order_state[0]
                or (tid == order_state[0] and pos < order_state[1])
            ):
                first_unsorted = i
            else:
                order_state[0] = tid
                order_state[1] = pos
        l_name = _I64(buffer[record + 8])
        mapq = _I64(buffer[record + 9])
        n_cigar = _I64(buffer[record + 12]) | (_I64(buffer[record + 13]) << 8)
        flag = _I64(buffer[record + 14]) | (_I64(buffer[record + 15]) << 8)
        l_seq = int32_at(buffer, record + 16)
        flags[i] = flag
        tids[i] = tid
        if flag & 0x4:
            status[i] = 1
            continue
        if flag & 0x100:
            status[i] = 2
            continue
        if flag & 0x800:
            status[i] = 3
            continue
        if flag & 0x200:
            status[i] = 4
            continue
        if mapq < min_mapq:
            status[i] = 5
            continue
        name_start = record + 32
        name_end = name_start + l_name - 1  # without the NUL
        h = np.uint64(14695981039346656037)
        for p in range(name_start, name_end):
            h = (h ^ np.uint64(buffer[p])) * np.uint64(1099511628211)
        name_hashes[i] = np.int64(h)
        # UMI
        umi_start = -1
        umi_end = -1
        cigar_start = name_end + 1
        aux = cigar_start + 4 * n_cigar + (l_seq + 1) // 2 + l_seq
        mc_start = -1
        mc_end = -1
        if umi_from_read_name:
            last = -1
            for p in range(name_start, name_end):
                if buffer[p] == separator:
                    last = p
            if last > name_start and last + 1 < name_end:
                umi_start = last + 1
                umi_end = name_end
        p = aux
        while p + 3 <= end:
            t0 = buffer[p]
            t1 = buffer[p + 1]
            kind = buffer[p + 2]
            p += 3
            if kind == 90 or kind == 72:  # Z, H: NUL-terminated
                q = p
                while q < end and buffer[q] != 0:
                    q += 1
                if not umi_from_read_name and t0 == umi_tag[0] and t1 == umi_tag[1] and kind == 90:
                    umi_start = p
                    umi_end = q
                elif t0 == 77 and t1 == 67 and kind == 90:  # MC
                    mc_start = p
                    mc_end = q
                p = q + 1
            elif kind == 65 or kind == 99 or kind == 67:  # A c C
                p += 1
            elif kind == 115 or kind == 83:  # s S
                p += 2
            elif kind == 105 or kind == 73 or kind == 102:  # i I f
                p += 4
            elif kind == 66:  # B: subtype, count, values
                sub = buffer[p]
                count = int32_at(buffer, p + 1)
                width = 1 if (sub == 99 or sub == 67) else (2 if (sub == 115 or sub == 83) else 4)
                p += 5 + count * width
            else:
                break
        if umi_start < 0 or umi_end <= umi_start:
            status[i] = 6
            continue
        length = umi_end - umi_start
        if length > MAX_UMI_LENGTH:
            status[i] = 6
            continue
        umis[i, :length] = buffer[umi_start:umi_end]
        umi_lengths[i] = length
        # own unclipped 5' end from the binary CIGAR
        reference_length = 0
        leading = 0
        trailing = 0
        in_leading = True
        for k in range(n_cigar):
            word = int32_at(buffer, cigar_start + 4 * k) & 0xFFFFFFFF
            op = word & 0xF
            length_op = word >> 4
            if op == 4 or op == 5:
                if in_leading:
                    leading += length_op
                trailing += length_op
            else:
                in_leading = False
                trailing = 0
                if op == 0 or op == 2 or op == 3 or op == 7 or op == 8:
                    reference_length += length_op
        pos5s[i] = pos + reference_length + trailing if flag & 0x10 else pos - leading
        if flag & 0x1 and not flag & 0x8:
            mate_tid = int32_at(buffer, record + 20)
            mate_pos = int32_at(buffer, record + 24)
            mate_tids[i] = mate_tid
            if mc_start >= 0:
                m_length, m_leading, m_trailing = _cigar_text_geometry(buffer, mc_start, mc_end)
                mate_pos5s[i] = (
                    mate_pos + m_length + m_trailing if flag & 0x20 else mate_pos - m_leading
                )
            else:
                mate_pos5s[i] = mate_pos
    return (
        status,
        flags,
        tids,
        pos5s,
        mate_tids,
        mate_pos5s,
        name_hashes,
        umis,
        umi_lengths,
        first_unsorted,
    )


@numba.njit(cache=True, nogil=True)
def _aux_field_end(buffer: npt.NDArray[np.uint8], p: int, end: int) -> int:
    """The offset just past the aux field starting at ``p`` (``end`` if it is malformed)."""
    kind = buffer[p + 2]
    q = p + 3
    if kind == 90 or kind == 72:
        while q < end and buffer[q] != 0:
            q += 1
        return q + 1
    if kind == 65 or kind == 99 or kind == 67:
        return q + 1
    if kind == 115 or kind == 83:
        return q + 2
    if kind == 105 or kind == 73 or kind == 102:
        return q + 4
    if kind == 66:
        sub = buffer[q]
        width = 1 if (sub == 99 or sub == 67) else (2 if (sub == 115 or sub == 83) else 4)
        return q + 5 + int32_at(buffer, q + 1) * width
    return end


@numba.njit(cache=True, nogil=True)
def put_decimal(out: Any, at: int, value: int) -> int:
    """Write ``value`` as decimal ASCII (with ``-`` when negative) into ``out[at:]``; the new end.

    >>> out = np.zeros(8, dtype=np.uint8)
    >>> end = put_decimal(out, 1, -407)
    >>> end, bytes(out[1:end])
    (5, b'-407')
    """
    if value < 0:
        out[at] = 45
        at += 1
        value = -value
    n_digits = 1
    rest = value // 10
    while rest > 0:
        n_digits += 1
        rest //= 10
    for k in range(n_digits - 1, -1, -1):
        out[at + k] = 48 + value % 10
        value //= 10
    return at + n_digits


@numba.njit(cache=True, nogil=True)
def tag_records(
    buffer: npt.NDArray[np.uint8],
    values: npt.NDArray[np.int64],
    suffixes: npt.NDArray[np.int8],
    tag: npt.NDArray[np.uint8],
) -> tuple[npt.NDArray[np.uint8], int]:
    """Copy the records of a chunk whose ``values`` are >= 0, each with a ``tag:Z:<value>`` field
    (plus ``/A`` or ``/B`` where ``suffixes`` is 1 or 2) replacing any field of that tag.

    Returns the new bytes and the number of records written.
    """
    n = len(values)
    out = np.empty(len(buffer) + 32 * n, dtype=np.uint8)
    o = 0
    offset = 0
    n_written = 0
    for i in range(n):
        size = int32_at(buffer, offset)
        record = offset + 4
        end = record + size
        offset = end
        value = values[i]
        if value < 0:
            continue
        n_written += 1
        l_name = _I64(buffer[record + 8])
        n_cigar = _I64(buffer[record + 12]) | (_I64(buffer[record + 13]) << 8)
        l_seq = int32_at(buffer, record + 16)
        aux = record + 32 + l_name + 4 * n_cigar + (l_seq + 1) // 2 + l_seq
        start = o
        o += 4
        out[o : o + aux - record] = buffer[record:aux]
        o += aux - record
        p = aux
        while p + 3 <= end:
            q = _aux_field_end(buffer, p, end)
            if not (buffer[p] == tag[0] and buffer[p + 1] == tag[1]):
                out[o : o + q - p] = buffer[p:q]
                o += q - p
            p = q
        out[o] = tag[0]
        out[o + 1] = tag[1]
        out[o + 2] = 90
        o += 3
        o = put_decimal(out, o, value)
        if suffixes[i] > 0:
            out[o] = 47
            out[o + 1] = 65 if suffixes[i] == 1 else 66
            o += 2
        out[o] = 0
        o += 1
        new_size = o - start - 4
        out[start] = new_size & 0xFF
        out[start + 1] = (new_size >> 8) & 0xFF
        out[start + 2] = (new_size >> 16) & 0xFF
        out[start + 3] = (new_size >> 24) & 0xFF
    return out[:o], n_written


_BGZF_BLOCK_INPUT: Final[int] = 0xFF00


def _bgzf_block(piece: bytes, level: int) -> bytes:
    # NB: ISA-L's deflate at level 1 is ~3x faster than zlib's level 1 and compresses slightly
    # better (measured on the standard sample's records); levels above 3 do not exist in ISA-L
    compressor: Any
    if level <= 3:
        compressor = isal_zlib.compressobj(level, isal_zlib.DEFLATED, -15)
    else:
        compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
    data: bytes = compressor.compress(piece) + compressor.flush()
    header = b"\x1f\x8b\x08\x04\x00\x00\x00\x00\x00\xff\x06\x00BC\x02\x00"
    size = 18 + len(data) + 8
    return (
        header
        + (size - 1).to_bytes(2, "little")
        + data
        + zlib.crc32(piece).to_bytes(4, "little")
        + len(piece).to_bytes(4, "little")
    )


class BgzfWriter:
    """Write bytes as BGZF (the BAM container), compressing blocks in ``threads`` threads."""

    def __init__(self, path: Path, *, level: int = 6, threads: int = 2, eof: bool = True) -> None:
        self._handle = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._eof = eof  # NB: False for a piece of a file that others are appended to
        self._pending = bytearray()
        self._level = level
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads))
        self._queued: collections.deque[Future[bytes]] = collections.deque()

    def write(self, data: bytes | bytearray | memoryview | npt.NDArray[np.uint8]) -> None:
        self._pending += data.data if isinstance(data, np.ndarray) else data
        if len(self._pending) >= 64 * _BGZF_BLOCK_INPUT:
            self._flush(final=False)

    def _flush(self, *, final: bool) -> None:
        n_full = len(self._pending) // _BGZF_BLOCK_INPUT
        cut = len(self._pending) if final else n_full * _BGZF_BLOCK_INPUT
        for start in range(0, cut, _BGZF_BLOCK_INPUT):
            piece = bytes(self._pending[start : min(start + _BGZF_BLOCK_INPUT, cut)])
            self._queued.append(self._pool.submit(_bgzf_block, piece, self._level))
        del self._pending[:cut]
        # NB: blocks compress in the pool while the caller goes on; keep at most ~256 in flight
        while self._queued and (final or len(self._queued) > 64 or self._queued[0].done()):
            self._handle.write(self._queued.popleft().result())

    def append_blocks(self, path: Path) -> None:
        """Write what is pending as whole blocks, then the BGZF blocks of ``path`` as they are
        (a file of blocks without an end-of-file block, e.g. one from ``eof=False``)."""
        self._flush(final=True)
        with open(path, "rb") as blocks:
            shutil.copyfileobj(blocks, self._handle, 1 << 22)

    def close(self) -> None:
        """Flush, write the BGZF end-of-file block (unless ``eof=False``) and close the file."""
        try:
            self._flush(final=True)
            if self._eof:
                self._handle.write(BGZF_EOF)
        finally:
            for future in self._queued:
                future.cancel()
            self._pool.shutdown()
            self._handle.close()

    def __enter__(self) -> BgzfWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def index_bam(bam_path: Path, index_path: Path | None = None) -> None:
    """Write the ``.bai`` of a coordinate-sorted BAM (``index_path``, default ``<bam>.bai``).

    htslib with two extra decompression threads: 1.3 s instead of 2.1 s for the standard sample's
    grouped BAM on 2 cores (one extra thread was no faster than none).
    """
    target = index_path if index_path is not None else Path(f"{bam_path}.bai")
    pysam.index("-@", "2", str(bam_path), str(target))


def bam_header_bytes(header: dict[str, object], scratch_dir: Path) -> bytes:
    """The binary (uncompressed) BAM header for a pysam header dict."""
    scratch = scratch_dir / f".header.{os.getpid()}.bam"
    try:
        with pysam.AlignmentFile(str(scratch), "wb", header=header):
            pass
        return b"".join(_iter_bgzf_payloads(scratch))
    finally:
        scratch.unlink(missing_ok=True)
