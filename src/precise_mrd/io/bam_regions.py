"""Region access to an indexed BAM without a pysam object per read.

The ML features read a window around each variant and the evidence stage reads its target windows
this way. :class:`IndexedRecordReader` finds a region's raw records through the ``.bai`` or
``.csi`` (:mod:`precise_mrd.io.bam_index`; sweeping regions in ascending order so that each BGZF
block is inflated once) and :func:`decode_aligned_bases` turns them into the per-record fields and
per-base rows (reference position, query position, base, quality) of the records a ``pysam``
``fetch`` of the region would give; :func:`decode_record_status` says of every record of the region
why it is used or not (no key tag, low mapping quality, no sequence), for a caller that counts the
records left out (the evidence stage).

They read what htslib reads: a CIGAR of more than 65,535 operations from the ``CG`` tag, the key
tag (``MI``) of any type as ``str`` of pysam's value. Two things are an
:class:`~precise_mrd.core.errors.InputDataError` instead: a numeric tag (``aD``, ``cD``...) that is
not a number (pysam would give text or an array), and a tag type byte outside the SAM
specification. There is no pysam fallback; the tests check every decoder against a reader of one
pysam object per read (``tests/pysam_reference.py``).

Record layout and tag helpers: :mod:`precise_mrd.io.bam_columns`.
"""

from __future__ import annotations

import struct
import sys
import zlib
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numba
import numpy as np
import numpy.typing as npt

from precise_mrd.core.errors import InputDataError
from precise_mrd.io.bam import int32_at, put_decimal
from precise_mrd.io.bam_columns import NIBBLE_TO_CODE, aux_end, aux_int
from precise_mrd.io.bam_index import index_path_of, read_region_index

__all__ = [
    "RECORD_LOW_MAPQ",
    "RECORD_NO_DATA",
    "RECORD_NO_KEY",
    "RECORD_USED",
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


class IndexedRecordReader:
    """Raw binary records overlapping regions of a coordinate-sorted BAM, found through its
    ``.bai`` or ``.csi``, with no pysam object per read.

    :meth:`region_records` returns the bytes of whole records (with ``block_size``), in file
    order, that include every record ``pysam.AlignmentFile.fetch(contig, start, end)`` returns
    (and some that do not overlap the region: the caller filters them, as
    :func:`decode_aligned_bases` does). As htslib, it starts at the index's linear offset for
    the region's start (:meth:`~precise_mrd.io.bam_index.RegionIndex.min_offset`) and stops at
    the first record at or past the region's end. Coordinates are 0-based half-open.

    Regions asked for in ascending order on a contig are read as a sweep: the next region goes
    on from where the last one stopped, with the last region's records that reach into it, so
    each BGZF block is inflated once (a dense 16 kb window holds hundreds of blocks, which every
    region in it would otherwise inflate again).

    Use :meth:`open`, which finds the index next to the BAM as htslib does (``None`` if there is
    none).
    """

    def __init__(self, bam_path: Path, index_path: Path) -> None:
        self.bam_path = Path(bam_path)
        self._index = read_region_index(index_path)
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
        """A reader for ``bam_path`` through the index htslib would open next to it
        (:func:`~precise_mrd.io.bam_index.index_path_of`); ``None`` if there is none."""
        index_path = index_path_of(Path(bam_path))
        return None if index_path is None else cls(Path(bam_path), index_path)

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> IndexedRecordReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def region_records(self, tid: int, start: int, end: int) -> npt.NDArray[np.uint8]:
        """Whole raw records that include all those overlapping ``[start, end)`` of ``tid``."""
        empty = np.zeros(0, dtype=np.uint8)
        min_offset = self._index.min_offset(tid, start) if end > start else -1
        if min_offset < 0:
            return empty  # no record of ``tid`` reaches ``start``
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
        flag = _I64(buffer[record + 14]) | (_I64(buffer[record + 15]) << 8)
        cigar, n_cigar = _real_cigar(buffer, record, record + size)
        pos = int32_at(buffer, record + 4)
        if (
            int32_at(buffer, record) == tid
            and _record_end(buffer, cigar, n_cigar, pos, flag) > start
        ):
            out[o : o + 4 + size] = buffer[offset : record + size]
            o += 4 + size
        offset = record + size
    return out[:o]


_STATUS_UNKNOWN_TYPE: Final[int] = 1  # a key or numeric tag of a type that is not a SAM tag type
_STATUS_NOT_NUMERIC: Final[int] = 2  # a numeric tag of a type that is not a number
_NUMBER_TYPES: Final[str] = "cCsSiIf"
_ARRAY_TYPECODES: Final[dict[str, str]] = {
    "c": "b",
    "C": "B",
    "s": "h",
    "S": "H",
    "i": "i",
    "I": "I",
    "f": "f",
}  # ``B`` array subtype -> the typecode of pysam's ``array.array``


def _raise_for(status: int, tag: str, type_byte: int, source: str) -> None:
    """The :class:`InputDataError` of a kernel's non-zero ``status`` about ``tag``."""
    kind = chr(type_byte) if 32 < type_byte < 127 else f"byte {type_byte}"
    if status == _STATUS_NOT_NUMERIC:
        raise InputDataError(
            source,
            f"a record has tag {tag} of type {kind}, where a number is expected",
            f"write {tag} as an integer ({'/'.join(_NUMBER_TYPES[:-1])}) or float (f) tag",
        )
    raise InputDataError(
        source,
        f"a record has tag {tag} of type {kind}, which is not a SAM tag type",
        "rewrite the BAM with a SAM/BAM-conformant tool (e.g. `samtools view -b`)",
    )


def _formatted_keys(key_text: U8Matrix, key_lengths: I64Array) -> tuple[U8Matrix, I64Array]:
    """Key text with the raw ``f`` and ``B`` rows (negative lengths: type byte and value bytes)
    replaced by ``str`` of pysam's value (a Python ``float``, an ``array.array``)."""
    raw_rows = np.flatnonzero(key_lengths < 0)
    if not raw_rows.size:
        return key_text, key_lengths
    texts = {int(i): _value_text(key_text[i, : -key_lengths[i]].tobytes()) for i in raw_rows}
    width = max(key_text.shape[1], *(len(t) for t in texts.values()))
    out = np.zeros((key_text.shape[0], width), dtype=np.uint8)
    out[:, : key_text.shape[1]] = key_text
    lengths = key_lengths.copy()
    for i, text in texts.items():
        out[i] = 0
        out[i, : len(text)] = np.frombuffer(text, dtype=np.uint8)
        lengths[i] = len(text)
    return out, lengths


def _value_text(raw: bytes) -> bytes:
    """``str`` of pysam's value of an ``f`` or ``B`` aux field (``raw``: type byte, then value).

    >>> _value_text(b"f" + struct.pack("<f", 1.1))
    b'1.100000023841858'
    >>> _value_text(b"Bc" + struct.pack("<ibb", 2, 1, -7))
    b"array('b', [1, -7])"
    """
    if raw[:1] == b"f":
        return str(struct.unpack_from("<f", raw, 1)[0]).encode("ascii")
    values = array(_ARRAY_TYPECODES[chr(raw[1])], raw[6:])
    if sys.byteorder == "big":
        values.byteswap()
    return str(values).encode("ascii")


@dataclass(frozen=True)
class AlignedBases:
    """The used records of a region and their confident aligned bases inside it.

    Per record (file order): ``flags``, ``starts`` (0-based), ``mapqs``, ``template_lengths``
    (``TLEN``), ``lengths`` (query length), ``tag_values`` (one column per requested numeric
    tag, its default where absent), ``key_text``/``key_lengths`` (the key tag's value as text,
    ``str`` of pysam's value, zero-padded). Per base, in record order then CIGAR order: ``record``
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
    source: str = "BAM",
) -> AlignedBases:
    """The records of ``buffer`` that ``fetch(tid, start, end)`` returns and that are used, with
    their aligned bases in ``[start, end)`` that are ACGT with quality >= ``min_base_quality``.

    A record is used unless its flag has a bit of ``skip_flags``, its mapping quality is below
    ``min_mapping_quality``, it has no sequence, no qualities (``0xFF``) or no CIGAR, or no
    ``key_tag``. Aligned blocks are CIGAR ``M = X``; a record overlaps the region as htslib
    decides (``start < pos + max(1, reference length)`` and ``pos < end``), with the CIGAR
    htslib reads (the one kept in ``CG`` for more than 65,535 operations, see
    :func:`_real_cigar`). The key text is ``str`` of pysam's value of any type; ``numeric_tags``
    are read from integer or ``f`` fields (the first field of a name, as pysam's ``get_tag``).

    Raises :class:`~precise_mrd.core.errors.InputDataError` (naming ``source``) when a numeric
    tag of a used record is not a number (``Z``, ``A``, ``H``, ``B``) or a tag has a type byte
    outside the SAM specification.
    """
    if len(defaults) != len(numeric_tags):
        raise ValueError(
            f"defaults must have one value per numeric tag ({len(numeric_tags)}); "
            f"got {len(defaults)}"
        )
    names = np.frombuffer(b"".join(numeric_tags), dtype=np.uint8).reshape(-1, 2)
    status, bad_tag, bad_type, columns = _aligned_kernel(
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
    if status:
        tag = key_tag if bad_tag < 0 else numeric_tags[bad_tag]
        _raise_for(status, tag.decode("ascii"), bad_type, source)
    fields = list(columns)
    fields[6], fields[7] = _formatted_keys(fields[6], fields[7])
    return AlignedBases(*fields)


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
def _real_cigar(buffer: npt.NDArray[np.uint8], record: int, record_end: int) -> tuple[int, int]:
    """(offset, number of operations) of the CIGAR htslib reads for the record at ``record``.

    NB: a CIGAR of more than 65,535 operations is kept in a ``CG:B:I`` tag, with a placeholder
    ``<l_seq>S<span>N`` in its place; htslib's ``bam_tag2cigar`` swaps the real one in when the
    record is mapped (``tid`` and ``pos`` >= 0), the placeholder's first operation is a soft clip
    of the whole query, and ``CG`` is ``B`` of ``I`` or ``i`` with at least as many operations.
    """
    l_seq = int32_at(buffer, record + 16)
    n_cigar = _I64(buffer[record + 12]) | (_I64(buffer[record + 13]) << 8)
    cigar = record + 32 + _I64(buffer[record + 8])
    if n_cigar == 0 or int32_at(buffer, record) < 0 or int32_at(buffer, record + 4) < 0:
        return cigar, n_cigar
    if int32_at(buffer, cigar) & 0xFFFFFFFF != (l_seq << 4 | 4):
        return cigar, n_cigar
    p = cigar + 4 * n_cigar + (l_seq + 1) // 2 + l_seq
    while p + 3 <= record_end:
        if buffer[p] == 67 and buffer[p + 1] == 71:  # CG
            if buffer[p + 2] != 66 or not (buffer[p + 3] == 73 or buffer[p + 3] == 105):
                return cigar, n_cigar
            n_real = int32_at(buffer, p + 4) & 0xFFFFFFFF
            if n_real < n_cigar or n_real >= 1 << 29:
                return cigar, n_cigar
            return p + 8, n_real
        p = aux_end(buffer, p, record_end)
    return cigar, n_cigar


@numba.njit(cache=True, nogil=True)
def _key_width(buffer: npt.NDArray[np.uint8], key: int, record_end: int) -> int:
    """Columns :func:`_key_text_into` needs for the aux field at ``key``; -1 for a type byte
    outside the SAM specification."""
    kind = buffer[key + 2]
    if kind == 90 or kind == 72:  # Z H
        return aux_end(buffer, key, record_end) - key - 4
    if kind == 65:  # A
        return 1
    if kind == 99 or kind == 67 or kind == 115 or kind == 83 or kind == 105 or kind == 73:
        return 11
    if kind == 102 or kind == 66:  # f B: type byte and value bytes
        return aux_end(buffer, key, record_end) - key - 2
    return -1


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
) -> tuple[int, int, int, tuple[Any, ...]]:
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
    cigar_at = np.zeros((n_all, 2), dtype=np.int64)  # offset and length of htslib's CIGAR
    n_used = 0
    max_key = 1
    max_rows = 0
    offset = 0
    status = 0
    bad_tag = -1
    bad_type = 0
    for _ in range(n_all):
        record = offset + 4
        record_end = record + int32_at(buffer, offset)
        offset = record_end
        if int32_at(buffer, record) != tid:
            continue
        pos = int32_at(buffer, record + 4)
        cigar, n_cigar = _real_cigar(buffer, record, record_end)
        flag = _I64(buffer[record + 14]) | (_I64(buffer[record + 15]) << 8)
        if pos >= end or _record_end(buffer, cigar, n_cigar, pos, flag) <= start:
            continue
        l_seq = int32_at(buffer, record + 16)
        if flag & skip_flags or _I64(buffer[record + 9]) < min_mapq:
            continue
        stored_cigar = record + 32 + _I64(buffer[record + 8])
        stored_n_cigar = _I64(buffer[record + 12]) | (_I64(buffer[record + 13]) << 8)
        qual_start = stored_cigar + 4 * stored_n_cigar + (l_seq + 1) // 2
        if l_seq <= 0 or n_cigar == 0 or buffer[qual_start] == 0xFF:
            continue
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
        width = _key_width(buffer, key, record_end)
        if width < 0:
            status = _STATUS_UNKNOWN_TYPE
            bad_type = buffer[key + 2]
            break
        max_key = max(max_key, width)
        key_at[n_used] = key
        cigar_at[n_used, 0] = cigar
        cigar_at[n_used, 1] = n_cigar
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
                if not readable and status == 0:
                    bad_tag = t
                    bad_type = buffer[tag_at[i, t] + 2]
                    known = _key_width(buffer, tag_at[i, t], record_end) >= 0
                    status = _STATUS_NOT_NUMERIC if known else _STATUS_UNKNOWN_TYPE
                values[i, t] = value
        key_lengths[i] = _key_text_into(buffer, key_at[i], record_end, key_text[i])
        cigar = cigar_at[i, 0]
        n_cigar = cigar_at[i, 1]
        stored_n_cigar = _I64(buffer[record + 12]) | (_I64(buffer[record + 13]) << 8)
        seq_start = record + 32 + _I64(buffer[record + 8]) + 4 * stored_n_cigar
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
    return status, bad_tag, bad_type, columns


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
    ``mapqs``, and ``key_text``/``key_lengths`` (the key tag's value as text, ``str`` of pysam's
    value, zero-padded; empty for :data:`RECORD_NO_KEY`). The :data:`RECORD_USED` rows are, in
    order, the records of :func:`decode_aligned_bases` with the same arguments.
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
    source: str = "BAM",
) -> RecordStatus:
    """Why each record of ``buffer`` in ``fetch(tid, start, end)`` is used or not
    (:class:`RecordStatus`), for a caller that counts the records :func:`decode_aligned_bases`
    leaves out (e.g. molecules lost to low mapping quality). CIGARs and key text as there.

    Raises :class:`~precise_mrd.core.errors.InputDataError` (naming ``source``) when a key tag
    has a type byte outside the SAM specification.
    """
    status, bad_type, columns = _status_kernel(
        buffer,
        tid,
        start,
        end,
        skip_flags,
        min_mapping_quality,
        np.frombuffer(key_tag, dtype=np.uint8),
    )
    if status:
        _raise_for(status, key_tag.decode("ascii"), bad_type, source)
    fields = list(columns)
    fields[4], fields[5] = _formatted_keys(fields[4], fields[5])
    return RecordStatus(*fields)


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
    """Write the text of the ``Z``/``H``/``A``/integer aux field at ``key`` into ``out`` and return
    its length; for ``f`` and ``B``, write the type byte and the value bytes and return minus
    their length (:func:`_formatted_keys` turns them into text)."""
    kind = buffer[key + 2]
    if kind == 90 or kind == 72:  # Z H
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
    if kind == 102 or kind == 66:  # f B
        stop = aux_end(buffer, key, record_end)
        for k in range(stop - key - 2):
            out[k] = buffer[key + 2 + k]
        return key + 2 - stop
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
) -> tuple[int, int, tuple[Any, ...]]:
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
    unreadable = 0
    bad_type = 0
    offset = 0
    for _ in range(n_all):
        record = offset + 4
        record_end = record + int32_at(buffer, offset)
        offset = record_end
        if int32_at(buffer, record) != tid:
            continue
        pos = int32_at(buffer, record + 4)
        cigar, n_cigar = _real_cigar(buffer, record, record_end)
        flag = _I64(buffer[record + 14]) | (_I64(buffer[record + 15]) << 8)
        stop = _record_end(buffer, cigar, n_cigar, pos, flag)
        if pos >= end or stop <= start or flag & skip_flags:
            continue
        l_seq = int32_at(buffer, record + 16)
        stored_n_cigar = _I64(buffer[record + 12]) | (_I64(buffer[record + 13]) << 8)
        qual_start = record + 32 + _I64(buffer[record + 8]) + 4 * stored_n_cigar + (l_seq + 1) // 2
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
            width = _key_width(buffer, key, record_end)
            if width < 0:
                unreadable = _STATUS_UNKNOWN_TYPE
                bad_type = buffer[key + 2]
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
    if unreadable:
        n = 0
    # pass 2: key text
    key_text = np.zeros((n, max_key), dtype=np.uint8)
    key_lengths = np.zeros(n, dtype=np.int64)
    for i in range(n):
        if key_at[i] >= 0:
            record_end = at[i] + int32_at(buffer, at[i] - 4)
            key_lengths[i] = _key_text_into(buffer, key_at[i], record_end, key_text[i])
    columns = (status[:n], starts[:n], ends[:n], mapqs[:n], key_text, key_lengths)
    return unreadable, bad_type, columns
