"""Region access to an indexed BAM without a pysam object per read.

The ML features read a window around each variant and the evidence stage reads its target windows
this way. :class:`IndexedRecordReader` finds a region's raw records through the ``.bai`` (sweeping
regions in ascending order so that each BGZF block is inflated once) and
:func:`decode_aligned_bases` turns them into the per-record fields and per-base rows (reference
position, query position, base, quality) of the records a ``pysam`` ``fetch`` of the region would
give; :func:`decode_record_status` says of every record of the region why it is used or not (no key
tag, low mapping quality, no sequence), for a caller that counts the records left out (the evidence
stage). Anything these decoders cannot read exactly as pysam would (other tag types, a CIGAR kept
in the ``CG`` tag) makes them return ``None``, and the caller falls back to pysam.

Record layout and tag helpers: :mod:`precise_mrd.io.bam_columns`.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numba
import numpy as np
import numpy.typing as npt

from precise_mrd.io.bam import int32_at, put_decimal
from precise_mrd.io.bam_columns import NIBBLE_TO_CODE, aux_end, aux_int

__all__ = [
    "RECORD_LOW_MAPQ",
    "RECORD_NO_DATA",
    "RECORD_NO_KEY",
    "RECORD_USED",
    "STATUS_UNSUPPORTED",
    "AlignedBases",
    "IndexedRecordReader",
    "RecordStatus",
    "decode_aligned_bases",
    "decode_record_status",
    "first_seen_codes",
]

_I64: Any = np.int64
U8Matrix = npt.NDArray[np.uint8]
I64Array = npt.NDArray[np.int64]

_BAI_MAGIC: Final[bytes] = b"BAI\x01"
_BAI_PSEUDO_BIN: Final[int] = 37450
_LINEAR_SHIFT: Final[int] = 14


class IndexedRecordReader:
    """Raw binary records overlapping regions of a coordinate-sorted BAM, found through its
    ``.bai``, with no pysam object per read.

    :meth:`region_records` returns the bytes of whole records (with ``block_size``), in file
    order, that include every record ``pysam.AlignmentFile.fetch(contig, start, end)`` returns
    (and some that do not overlap the region: the caller filters them, as
    :func:`decode_aligned_bases` does). As htslib, it starts at the linear-index offset of the
    region's first 16 kb window and stops at the first record at or past the region's end.
    Coordinates are 0-based half-open.

    Regions asked for in ascending order on a contig are read as a sweep: the next region goes
    on from where the last one stopped, with the last region's records that reach into it, so
    each BGZF block is inflated once (a dense 16 kb window holds hundreds of blocks, which every
    region in it would otherwise inflate again).

    Use :meth:`open`, which returns ``None`` when the BAM has no ``.bai`` next to it (e.g. only a
    ``.csi``): the caller then reads the region through pysam.
    """

    def __init__(self, bam_path: Path, index_path: Path) -> None:
        self._first_offsets, self._linear = _read_bai(index_path)
        self._handle = open(bam_path, "rb")  # noqa: SIM115 - closed in close()
        # sweep state: contig and start of the last region, its records, the virtual offset of
        # the first record not yet consumed, the bytes from it to the end of the last inflated
        # block, and the file offset of the next block
        self._tid = -1
        self._start = -1
        self._last = np.zeros(0, dtype=np.uint8)
        self._position = -1
        self._tail = b""
        self._next_block = -1
        self._block_at = -1
        self._block_length = 0

    @classmethod
    def open(cls, bam_path: Path) -> IndexedRecordReader | None:
        """A reader for ``bam_path`` if ``<bam>.bai`` or ``<bam without .bam>.bai`` exists."""
        bam_path = Path(bam_path)
        for index_path in (Path(f"{bam_path}.bai"), bam_path.with_suffix(".bai")):
            if index_path.is_file():
                return cls(bam_path, index_path)
        return None

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> IndexedRecordReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def region_records(self, tid: int, start: int, end: int) -> npt.NDArray[np.uint8]:
        """Whole raw records that include all those overlapping ``[start, end)`` of ``tid``."""
        empty = np.zeros(0, dtype=np.uint8)
        if tid < 0 or tid >= len(self._linear) or end <= start:
            return empty
        linear = self._linear[tid]
        window = start >> _LINEAR_SHIFT
        if window >= len(linear):
            return empty  # no record reaches this far (it would have set the linear index)
        min_offset = max(int(linear[window]), self._first_offsets[tid])
        if tid == self._tid and start >= self._start and min_offset <= self._position:
            # NB: records before the resume point that overlap the region were read for the
            # last region (see the class docstring)
            carried = _records_reaching(self._last, tid, start)
        else:
            carried = empty
            self._position = min_offset
            self._next_block = min_offset >> 16
            self._tail = b""
            within = min_offset & 0xFFFF
            if within:
                payload, size = self._block(self._next_block)
                self._tail = payload[within:]
                self._block_at, self._block_length = self._next_block, len(payload)
                self._next_block += size
        out = [carried.tobytes()]
        while True:
            walked, past = _walk_records(np.frombuffer(self._tail, dtype=np.uint8), tid, end)
            cut = past if past >= 0 else walked
            if cut:
                out.append(self._tail[:cut])
                self._tail = self._tail[cut:]
                # NB: the rest starts inside the last block (what was cut covers the older
                # bytes); at its very end this lies before the next block's offset, which only
                # makes the next region start again from its own offset: always correct
                self._position = (self._block_at << 16) + self._block_length - len(self._tail)
            if past >= 0:
                break
            payload, size = self._block(self._next_block)
            if size == 0:
                break
            self._tail += payload
            self._block_at, self._block_length = self._next_block, len(payload)
            self._next_block += size
        self._tid, self._start = tid, start
        self._last = _as_array(b"".join(out))
        return self._last

    def _block(self, offset: int) -> tuple[bytes, int]:
        """The inflated BGZF block at file ``offset`` and its compressed size (0 at the end)."""
        self._handle.seek(offset)
        header = self._handle.read(18)
        if len(header) < 18:
            return b"", 0
        extra_length = header[10] | (header[11] << 8)
        extra = header[12:18] + self._handle.read(max(0, extra_length - 6))
        where = extra.find(b"BC\x02\x00")
        if header[:4] != b"\x1f\x8b\x08\x04" or where < 0:
            raise ValueError(f"no BGZF block at byte {offset} of the BAM")
        size = (extra[where + 4] | (extra[where + 5] << 8)) + 1
        body = self._handle.read(size - 12 - extra_length)
        return zlib.decompress(body[:-8], -15), size


def _as_array(data: bytes) -> npt.NDArray[np.uint8]:
    return np.frombuffer(data, dtype=np.uint8) if data else np.zeros(0, dtype=np.uint8)


@numba.njit(cache=True, nogil=True)
def _walk_records(buffer: npt.NDArray[np.uint8], tid: int, end: int) -> tuple[int, int]:
    """Bytes of the whole records at the start of ``buffer``, and the offset of the first record
    not on ``tid`` or starting at or after ``end`` (-1 if none among them)."""
    offset = 0
    while offset + 4 <= len(buffer):
        size = int32_at(buffer, offset)
        if offset + 4 + size > len(buffer) or size < 8:
            break
        if int32_at(buffer, offset + 4) != tid or int32_at(buffer, offset + 8) >= end:
            return offset, offset
        offset += 4 + size
    return offset, -1


@numba.njit(cache=True, nogil=True)
def _records_reaching(buffer: npt.NDArray[np.uint8], tid: int, start: int) -> npt.NDArray[np.uint8]:
    """The records of ``buffer`` on ``tid`` that end after ``start`` (htslib's end), in order."""
    out = np.empty(len(buffer), dtype=np.uint8)
    o = 0
    offset = 0
    while offset + 4 <= len(buffer):
        record = offset + 4
        size = int32_at(buffer, offset)
        n_cigar = _I64(buffer[record + 12]) | (_I64(buffer[record + 13]) << 8)
        flag = _I64(buffer[record + 14]) | (_I64(buffer[record + 15]) << 8)
        cigar = record + 32 + _I64(buffer[record + 8])
        pos = int32_at(buffer, record + 4)
        if (
            int32_at(buffer, record) == tid
            and _record_end(buffer, cigar, n_cigar, pos, flag) > start
        ):
            out[o : o + 4 + size] = buffer[offset : record + size]
            o += 4 + size
        offset = record + size
    return out[:o]


def _read_bai(index_path: Path) -> tuple[list[int], list[npt.NDArray[np.uint64]]]:
    """Per reference of a ``.bai``: the smallest chunk start (its first record) and the linear
    index (smallest virtual offset of a record overlapping each 16 kb window)."""
    data = Path(index_path).read_bytes()
    if data[:4] != _BAI_MAGIC:
        raise ValueError(f"{index_path} is not a BAI index")
    offset = 4
    (n_references,) = struct.unpack_from("<i", data, offset)
    offset += 4
    first_offsets: list[int] = []
    linears: list[npt.NDArray[np.uint64]] = []
    for _ in range(n_references):
        (n_bins,) = struct.unpack_from("<i", data, offset)
        offset += 4
        first = -1
        for _ in range(n_bins):
            bin_id, n_chunks = struct.unpack_from("<Ii", data, offset)
            offset += 8
            if bin_id != _BAI_PSEUDO_BIN and n_chunks:
                chunks = np.frombuffer(data, dtype="<u8", count=2 * n_chunks, offset=offset)
                low = int(chunks[::2].min())
                first = low if first < 0 else min(first, low)
            offset += 16 * n_chunks
        (n_intervals,) = struct.unpack_from("<i", data, offset)
        offset += 4
        linear = np.frombuffer(data, dtype="<u8", count=n_intervals, offset=offset)
        offset += 8 * n_intervals
        first_offsets.append(first)
        linears.append(linear if first >= 0 else linear[:0])
    return first_offsets, linears


STATUS_UNSUPPORTED: Final[int] = 1
""":func:`decode_aligned_bases` met a record it does not decode exactly as pysam would (a tag of
another type, or a CIGAR kept in the ``CG`` tag): read the region through pysam."""


@dataclass(frozen=True)
class AlignedBases:
    """The used records of a region and their confident aligned bases inside it.

    Per record (file order): ``flags``, ``starts`` (0-based), ``mapqs``, ``template_lengths``
    (``TLEN``), ``lengths`` (query length), ``tag_values`` (one column per requested numeric
    tag, its default where absent), ``key_text``/``key_lengths`` (the key tag's value as text,
    integers in decimal, zero-padded). Per base, in record order then CIGAR order: ``record``
    (row of the record), ``ref_pos``, ``query_pos``, ``bases`` (A=0 C=1 G=2 T=3), ``quals``.
    """

    flags: I64Array
    starts: I64Array
    mapqs: I64Array
    template_lengths: I64Array
    lengths: I64Array
    tag_values: npt.NDArray[np.float64]
    key_text: U8Matrix
    key_lengths: I64Array
    record: I64Array
    ref_pos: I64Array
    query_pos: I64Array
    bases: I64Array
    quals: I64Array

    def __len__(self) -> int:
        return len(self.flags)


def decode_aligned_bases(
    buffer: npt.NDArray[np.uint8],
    *,
    tid: int,
    start: int,
    end: int,
    skip_flags: int,
    min_mapping_quality: int,
    min_base_quality: int,
    key_tag: bytes,
    numeric_tags: tuple[bytes, ...],
    defaults: tuple[float, ...],
) -> AlignedBases | None:
    """The records of ``buffer`` that ``fetch(tid, start, end)`` returns and that are used, with
    their aligned bases in ``[start, end)`` that are ACGT with quality >= ``min_base_quality``.

    A record is used unless its flag has a bit of ``skip_flags``, its mapping quality is below
    ``min_mapping_quality``, it has no sequence, no qualities (``0xFF``) or no CIGAR, or no
    ``key_tag``. Aligned blocks are CIGAR ``M = X``; a record overlaps the region as htslib
    decides (``start < pos + max(1, reference length)`` and ``pos < end``). ``numeric_tags``
    are read from integer or ``f`` fields (the first field of a name, as pysam's ``get_tag``).

    Returns ``None`` (:data:`STATUS_UNSUPPORTED`) when a key or numeric tag has a type this
    does not read exactly as ``str``/``float`` of pysam's value would (e.g. ``B`` arrays), or a
    used record keeps its CIGAR in the ``CG`` tag (more than 65,535 operations).
    """
    names = np.frombuffer(b"".join(numeric_tags), dtype=np.uint8).reshape(-1, 2)
    status, columns = _aligned_kernel(
        buffer,
        tid,
        start,
        end,
        skip_flags,
        min_mapping_quality,
        min_base_quality,
        np.frombuffer(key_tag, dtype=np.uint8),
        names.copy(),
        np.asarray(defaults, dtype=np.float64),
    )
    if status == STATUS_UNSUPPORTED:
        return None
    return AlignedBases(*columns)


@numba.njit(cache=True, nogil=True)
def _record_end(
    buffer: npt.NDArray[np.uint8], cigar: int, n_cigar: int, pos: int, flag: int
) -> int:
    """``pos`` + reference length of the binary CIGAR, at least 1 and 1 for an unmapped record
    (htslib's ``bam_endpos``, which decides whether a record overlaps a queried region)."""
    span = 0
    for k in range(0 if flag & 0x4 else n_cigar):
        word = int32_at(buffer, cigar + 4 * k) & 0xFFFFFFFF
        op = word & 0xF
        if op == 0 or op == 2 or op == 3 or op == 7 or op == 8:
            span += word >> 4
    return pos + max(span, 1)


@numba.njit(cache=True, nogil=True)
def _aux_number(buffer: npt.NDArray[np.uint8], p: int, scratch: Any) -> tuple[bool, float]:
    """(readable, value) of the aux field at ``p``: integer types and ``f``."""
    kind = buffer[p + 2]
    if kind == 102:  # f
        for k in range(4):
            scratch[k] = buffer[p + 3 + k]
        return True, float(scratch.view(np.float32)[0])
    if kind == 99 or kind == 67 or kind == 115 or kind == 83 or kind == 105 or kind == 73:
        return True, float(aux_int(buffer, p))
    return False, 0.0


@numba.njit(cache=True, nogil=True)
def _aligned_kernel(
    buffer: npt.NDArray[np.uint8],
    tid: int,
    start: int,
    end: int,
    skip_flags: int,
    min_mapq: int,
    min_qual: int,
    key_tag: npt.NDArray[np.uint8],
    tag_names: U8Matrix,
    defaults: npt.NDArray[np.float64],
) -> tuple[int, tuple[Any, ...]]:
    n_tags = tag_names.shape[0]
    n_all = 0
    offset = 0
    while offset + 4 <= len(buffer):
        offset += 4 + int32_at(buffer, offset)
        n_all += 1
    # pass 1: which records are used, their tags and the widest key text
    used = np.zeros(n_all, dtype=np.int64)  # record offset + 1 of used records
    key_at = np.zeros(n_all, dtype=np.int64)
    tag_at = np.full((n_all, n_tags), -1, dtype=np.int64)
    n_used = 0
    max_key = 1
    max_rows = 0
    offset = 0
    status = 0
    for _ in range(n_all):
        record = offset + 4
        record_end = record + int32_at(buffer, offset)
        offset = record_end
        if int32_at(buffer, record) != tid:
            continue
        pos = int32_at(buffer, record + 4)
        l_name = _I64(buffer[record + 8])
        n_cigar = _I64(buffer[record + 12]) | (_I64(buffer[record + 13]) << 8)
        cigar = record + 32 + l_name
        flag = _I64(buffer[record + 14]) | (_I64(buffer[record + 15]) << 8)
        if pos >= end or _record_end(buffer, cigar, n_cigar, pos, flag) <= start:
            continue
        l_seq = int32_at(buffer, record + 16)
        if flag & skip_flags or _I64(buffer[record + 9]) < min_mapq:
            continue
        qual_start = cigar + 4 * n_cigar + (l_seq + 1) // 2
        if l_seq <= 0 or n_cigar == 0 or buffer[qual_start] == 0xFF:
            continue
        if n_cigar == 2:
            first_op = int32_at(buffer, cigar) & 0xFFFFFFFF
            if first_op == (l_seq << 4 | 4) and int32_at(buffer, cigar + 4) & 0xF == 3:
                # NB: ``<l_seq>S<span>N`` stands for a CIGAR too long for BAM, kept in ``CG``;
                # htslib swaps the real one in when it reads the record
                status = STATUS_UNSUPPORTED
                break
        key = -1
        p = qual_start + l_seq
        while p + 3 <= record_end:
            t0 = buffer[p]
            t1 = buffer[p + 1]
            if key < 0 and t0 == key_tag[0] and t1 == key_tag[1]:
                key = p
            for t in range(n_tags):
                if tag_at[n_used, t] < 0 and t0 == tag_names[t, 0] and t1 == tag_names[t, 1]:
                    tag_at[n_used, t] = p
            p = aux_end(buffer, p, record_end)
        if key < 0:
            for t in range(n_tags):
                tag_at[n_used, t] = -1
            continue
        kind = buffer[key + 2]
        if kind == 90:  # Z
            width = aux_end(buffer, key, record_end) - key - 4
        elif kind == 65:  # A
            width = 1
        elif kind == 99 or kind == 67 or kind == 115 or kind == 83 or kind == 105 or kind == 73:
            width = 11
        else:
            status = STATUS_UNSUPPORTED
            break
        max_key = max(max_key, width)
        key_at[n_used] = key
        used[n_used] = record + 1
        max_rows += min(l_seq, end - start)
        n_used += 1
    flags = np.zeros(n_used, dtype=np.int64)
    starts = np.zeros(n_used, dtype=np.int64)
    mapqs = np.zeros(n_used, dtype=np.int64)
    tlens = np.zeros(n_used, dtype=np.int64)
    lengths = np.zeros(n_used, dtype=np.int64)
    values = np.zeros((n_used, n_tags), dtype=np.float64)
    key_text = np.zeros((n_used, max_key), dtype=np.uint8)
    key_lengths = np.zeros(n_used, dtype=np.int64)
    out_record = np.zeros(max_rows, dtype=np.int64)
    out_ref = np.zeros(max_rows, dtype=np.int64)
    out_query = np.zeros(max_rows, dtype=np.int64)
    out_base = np.zeros(max_rows, dtype=np.int64)
    out_qual = np.zeros(max_rows, dtype=np.int64)
    n_rows = 0
    scratch = np.zeros(4, dtype=np.uint8)
    nibble = NIBBLE_TO_CODE
    if status != 0:
        n_used = 0
    # pass 2: the used records' fields and bases
    for i in range(n_used):
        record = used[i] - 1
        record_end = record + int32_at(buffer, record - 4)
        pos = int32_at(buffer, record + 4)
        l_name = _I64(buffer[record + 8])
        n_cigar = _I64(buffer[record + 12]) | (_I64(buffer[record + 13]) << 8)
        l_seq = int32_at(buffer, record + 16)
        flags[i] = _I64(buffer[record + 14]) | (_I64(buffer[record + 15]) << 8)
        starts[i] = pos
        mapqs[i] = _I64(buffer[record + 9])
        tlens[i] = int32_at(buffer, record + 28)
        lengths[i] = l_seq
        for t in range(n_tags):
            values[i, t] = defaults[t]
            if tag_at[i, t] >= 0:
                readable, value = _aux_number(buffer, tag_at[i, t], scratch)
                if not readable:
                    status = STATUS_UNSUPPORTED
                values[i, t] = value
        key_lengths[i] = _key_text_into(buffer, key_at[i], record_end, key_text[i])
        cigar = record + 32 + l_name
        seq_start = cigar + 4 * n_cigar
        qual_start = seq_start + (l_seq + 1) // 2
        q = 0
        r = pos
        for c in range(n_cigar):
            word = int32_at(buffer, cigar + 4 * c) & 0xFFFFFFFF
            op = word & 0xF
            length = word >> 4
            if op == 0 or op == 7 or op == 8:
                lo = max(r, start)
                hi = min(r + length, end)
                for ref in range(lo, hi):
                    k = q + ref - r
                    byte = _I64(buffer[seq_start + (k >> 1)])
                    base = nibble[(byte >> 4) if (k & 1) == 0 else (byte & 0xF)]
                    qual = _I64(buffer[qual_start + k])
                    if base < 4 and qual >= min_qual:
                        out_record[n_rows] = i
                        out_ref[n_rows] = ref
                        out_query[n_rows] = k
                        out_base[n_rows] = base
                        out_qual[n_rows] = qual
                        n_rows += 1
            if op == 0 or op == 1 or op == 4 or op == 7 or op == 8:
                q += length
            if op == 0 or op == 2 or op == 3 or op == 7 or op == 8:
                r += length
    columns = (
        flags,
        starts,
        mapqs,
        tlens,
        lengths,
        values,
        key_text,
        key_lengths,
        out_record[:n_rows],
        out_ref[:n_rows],
        out_query[:n_rows],
        out_base[:n_rows],
        out_qual[:n_rows],
    )
    return status, columns


RECORD_USED: Final[int] = 0
""":func:`decode_record_status`: the record has the key tag, enough mapping quality, a sequence,
qualities and a CIGAR (the records :func:`decode_aligned_bases` uses)."""
RECORD_NO_KEY: Final[int] = 1
"""No key tag (checked first)."""
RECORD_LOW_MAPQ: Final[int] = 2
"""Key tag, but mapping quality below the threshold."""
RECORD_NO_DATA: Final[int] = 3
"""Key tag and enough mapping quality, but no sequence, no qualities (``0xFF``) or no CIGAR."""


@dataclass(frozen=True)
class RecordStatus:
    """Every record ``fetch(tid, start, end)`` returns whose flag has no bit of ``skip_flags``,
    in file order: ``status`` (a ``RECORD_*`` constant), ``starts`` (0-based), ``ends`` (pysam's
    ``reference_end``: ``pos`` + reference length, at least 1; 0 where pysam gives ``None``:
    unmapped or without CIGAR),
    ``mapqs``, and ``key_text``/``key_lengths`` (the key tag's value as text, integers in decimal,
    zero-padded; empty for :data:`RECORD_NO_KEY`). The :data:`RECORD_USED` rows are, in order,
    the records of :func:`decode_aligned_bases` with the same arguments.
    """

    status: I64Array
    starts: I64Array
    ends: I64Array
    mapqs: I64Array
    key_text: U8Matrix
    key_lengths: I64Array

    def __len__(self) -> int:
        return len(self.status)


def decode_record_status(
    buffer: npt.NDArray[np.uint8],
    *,
    tid: int,
    start: int,
    end: int,
    skip_flags: int,
    min_mapping_quality: int,
    key_tag: bytes,
) -> RecordStatus | None:
    """Why each record of ``buffer`` in ``fetch(tid, start, end)`` is used or not
    (:class:`RecordStatus`), for a caller that counts the records :func:`decode_aligned_bases`
    leaves out (e.g. molecules lost to low mapping quality).

    Returns ``None`` when a key tag has a type this does not read exactly as ``str`` of pysam's
    value would, or a record keeps its CIGAR in the ``CG`` tag (as :func:`decode_aligned_bases`).
    """
    status, columns = _status_kernel(
        buffer,
        tid,
        start,
        end,
        skip_flags,
        min_mapping_quality,
        np.frombuffer(key_tag, dtype=np.uint8),
    )
    if status == STATUS_UNSUPPORTED:
        return None
    return RecordStatus(*columns)


def first_seen_codes(text: U8Matrix) -> I64Array:
    """Code of each row of a zero-padded text matrix, numbered in order of first appearance.

    >>> first_seen_codes(np.array([[57, 0], [49, 50], [57, 0]], dtype=np.uint8)).tolist()
    [0, 1, 0]
    """
    if not text.shape[0]:
        return np.zeros(0, dtype=np.int64)
    rows = np.ascontiguousarray(text).view(np.dtype((np.void, max(text.shape[1], 1)))).ravel()
    _, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
    rank = np.empty(first.size, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(first.size)
    return np.asarray(rank[inverse.ravel()], dtype=np.int64)


@numba.njit(cache=True, nogil=True)
def _key_text_into(buffer: npt.NDArray[np.uint8], key: int, record_end: int, out: Any) -> int:
    """Write the text of the ``Z``/``A``/integer aux field at ``key`` into ``out``; its length."""
    kind = buffer[key + 2]
    if kind == 90:  # Z
        q = key + 3
        k = 0
        while q < record_end and buffer[q] != 0:
            out[k] = buffer[q]
            k += 1
            q += 1
        return k
    if kind == 65:  # A
        out[0] = buffer[key + 3]
        return 1
    return put_decimal(out, 0, aux_int(buffer, key))


@numba.njit(cache=True, nogil=True)
def _status_kernel(
    buffer: npt.NDArray[np.uint8],
    tid: int,
    start: int,
    end: int,
    skip_flags: int,
    min_mapq: int,
    key_tag: npt.NDArray[np.uint8],
) -> tuple[int, tuple[Any, ...]]:
    n_all = 0
    offset = 0
    while offset + 4 <= len(buffer):
        offset += 4 + int32_at(buffer, offset)
        n_all += 1
    # pass 1: the records in the region, their status and key field
    at = np.zeros(n_all, dtype=np.int64)  # record offset
    key_at = np.full(n_all, -1, dtype=np.int64)
    status = np.zeros(n_all, dtype=np.int64)
    starts = np.zeros(n_all, dtype=np.int64)
    ends = np.zeros(n_all, dtype=np.int64)
    mapqs = np.zeros(n_all, dtype=np.int64)
    n = 0
    max_key = 1
    unsupported = 0
    offset = 0
    for _ in range(n_all):
        record = offset + 4
        record_end = record + int32_at(buffer, offset)
        offset = record_end
        if int32_at(buffer, record) != tid:
            continue
        pos = int32_at(buffer, record + 4)
        n_cigar = _I64(buffer[record + 12]) | (_I64(buffer[record + 13]) << 8)
        cigar = record + 32 + _I64(buffer[record + 8])
        flag = _I64(buffer[record + 14]) | (_I64(buffer[record + 15]) << 8)
        stop = _record_end(buffer, cigar, n_cigar, pos, flag)
        if pos >= end or stop <= start or flag & skip_flags:
            continue
        l_seq = int32_at(buffer, record + 16)
        if n_cigar == 2:
            first_op = int32_at(buffer, cigar) & 0xFFFFFFFF
            if first_op == (l_seq << 4 | 4) and int32_at(buffer, cigar + 4) & 0xF == 3:
                unsupported = STATUS_UNSUPPORTED  # NB: CIGAR in ``CG``, see _aligned_kernel
                break
        qual_start = cigar + 4 * n_cigar + (l_seq + 1) // 2
        key = -1
        p = qual_start + l_seq
        while p + 3 <= record_end:
            if buffer[p] == key_tag[0] and buffer[p + 1] == key_tag[1]:
                key = p
                break
            p = aux_end(buffer, p, record_end)
        mapq = _I64(buffer[record + 9])
        if key < 0:
            status[n] = RECORD_NO_KEY
        else:
            kind = buffer[key + 2]
            if kind == 90:  # Z
                width = aux_end(buffer, key, record_end) - key - 4
            elif kind == 65:  # A
                width = 1
            elif kind == 99 or kind == 67 or kind == 115 or kind == 83 or kind == 105 or kind == 73:
                width = 11
            else:
                unsupported = STATUS_UNSUPPORTED
                break
            max_key = max(max_key, width)
            key_at[n] = key
            if mapq < min_mapq:
                status[n] = RECORD_LOW_MAPQ
            elif l_seq <= 0 or n_cigar == 0 or buffer[qual_start] == 0xFF:
                status[n] = RECORD_NO_DATA
        at[n] = record
        starts[n] = pos
        ends[n] = stop if n_cigar and not flag & 0x4 else 0
        mapqs[n] = mapq
        n += 1
    if unsupported:
        n = 0
    # pass 2: key text
    key_text = np.zeros((n, max_key), dtype=np.uint8)
    key_lengths = np.zeros(n, dtype=np.int64)
    for i in range(n):
        if key_at[i] >= 0:
            record_end = at[i] + int32_at(buffer, at[i] - 4)
            key_lengths[i] = _key_text_into(buffer, key_at[i], record_end, key_text[i])
    columns = (status[:n], starts[:n], ends[:n], mapqs[:n], key_text, key_lengths)
    return unsupported, columns
