"""Columnar decoding and encoding of binary BAM records, without a pysam object per read.

:func:`decode_consensus_columns` turns a chunk of raw records (from
:func:`precise_mrd.io.bam.iter_record_chunks`) into numpy columns in one compiled loop: flag,
contig, position, mapping quality, the position the consensus stage must wait for (the mate's
start when it is later), the ``MI`` molecule id (as an integer code, its text and its ``/A``
``/B`` strand), a hash and the text of ``RX``, a hash of the binary CIGAR and the bases (coded
``A=0 C=1 G=2 T=3``, else 4) and Phred qualities as padded matrices. Variable-length text (``MI``,
``RX``) is returned as a zero-padded ``uint8`` matrix with a length column, so that columns of
different chunks can be sliced and concatenated with numpy.

:func:`encode_consensus_records` is the reverse for the consensus stage's output: it writes
complete binary BAM records (the bytes a ``BgzfWriter`` compresses), with integer tags stored in
the smallest type as htslib does when it parses SAM text.

For region access (the ML features read a window around each variant),
:class:`IndexedRecordReader` finds a region's raw records through the ``.bai`` (sweeping regions
in ascending order so that each BGZF block is inflated once) and :func:`decode_aligned_bases`
turns them into the per-record fields and per-base rows (reference position, query position,
base, quality) of the records a ``pysam`` ``fetch`` of the region would give;
:func:`decode_record_status` says of every record of the region why it is used or not (no key
tag, low mapping quality, no sequence), for a caller that counts the records left out (the
evidence stage).

The BAM layout (SAM specification section 4.2): ``block_size, refID, pos, l_read_name, mapq,
bin, n_cigar_op, flag, l_seq, next_refID, next_pos, tlen``, then the NUL-terminated name, the
CIGAR as ``uint32`` words (``length << 4 | op``), the bases as 4-bit codes of
``=ACMGRSVTWYHKDBN``, the qualities (``0xFF`` when absent) and the tags.

>>> import numpy as np
>>> record, offsets = encode_consensus_records(
...     names=np.frombuffer(b"7", np.uint8).reshape(1, 1), name_lengths=np.array([1]),
...     flags=np.array([0]), tids=np.array([0]), starts=np.array([9]), mapqs=np.array([60]),
...     cigar_words=np.array([4 << 4], np.uint32), cigar_offsets=np.array([0, 1]),
...     cigar_ids=np.array([0]), ref_spans=np.array([4]), mate_tids=np.array([-1]),
...     mate_starts=np.array([-1]), tlens=np.array([0]),
...     bases=np.array([[0, 1, 2, 3]], np.uint8), quals=np.full((1, 4), 30, np.uint8),
...     lengths=np.array([4]), umis=np.frombuffer(b"AC-GT", np.uint8).reshape(1, 5),
...     umi_lengths=np.array([5]), int_tags=np.array([[3, 2]]),
...     float_tags=np.array([[0.0]]), duplex_int_tags=np.zeros((1, 4), np.int64),
...     duplex_float_tags=np.zeros((1, 2)), is_duplex=np.array([False]))
>>> columns = decode_consensus_columns(record)
>>> int(columns.keys[0]), columns.bases[0].tolist(), columns.quals[0].tolist()
(9, [0, 1, 2, 3], [30, 30, 30, 30])
>>> bytes(columns.mi_text[0, : columns.mi_lengths[0]]), int(columns.mi_codes[0])
(b'7', 7)
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

from precise_mrd.io.bam import int32_at

__all__ = [
    "RECORD_LOW_MAPQ",
    "RECORD_NO_DATA",
    "RECORD_NO_KEY",
    "RECORD_USED",
    "STATUS_NO_MI",
    "STATUS_SKIPPED",
    "STATUS_UNSUPPORTED",
    "AlignedBases",
    "IndexedRecordReader",
    "ReadColumns",
    "RecordStatus",
    "decode_aligned_bases",
    "decode_consensus_columns",
    "decode_record_status",
    "encode_consensus_records",
    "first_seen_codes",
    "gather_records",
]

STATUS_SKIPPED: Final[int] = 1
"""Record not used (unmapped, secondary or supplementary)."""
STATUS_NO_MI: Final[int] = 2
"""Record without an ``MI`` tag."""

_SKIP_FLAGS: Final[int] = 0x4 | 0x100 | 0x800
_I64: Any = np.int64
U8Matrix = npt.NDArray[np.uint8]
I64Array = npt.NDArray[np.int64]

# 4-bit BAM base code -> A=0 C=1 G=2 T=3 else 4
_NIBBLE_TO_CODE = np.full(16, 4, dtype=np.uint8)
_NIBBLE_TO_CODE[1], _NIBBLE_TO_CODE[2], _NIBBLE_TO_CODE[4], _NIBBLE_TO_CODE[8] = 0, 1, 2, 3
_CODE_TO_NIBBLE = np.array([1, 2, 4, 8, 15], dtype=np.uint8)


@dataclass(frozen=True)
class ReadColumns:
    """Columns of the used records of a chunk, one row per record, in file order.

    ``keys`` is ``contig << 32 | start`` (0-based start); ``needed`` the larger of ``keys`` and
    the mate's key (paired, mate mapped); ``mi_codes`` the molecule id without ``/A``/``/B``:
    its value when it is a plain decimal number, otherwise a 63-bit hash with the top bit set;
    ``strand_b`` 1 for ``/B``; ``has_suffix`` whether the ``MI`` had ``/A`` or ``/B``;
    ``cigar_hashes`` a hash of the binary CIGAR; ``name_starts`` and ``cigar_starts`` the byte
    offsets of the read name and the CIGAR in the chunk (valid only for that chunk; the name ends
    one byte before the CIGAR); ``bases``/``quals`` padded with 4 / 2 past ``lengths``.
    """

    flags: I64Array
    keys: I64Array
    needed: I64Array
    mapqs: I64Array
    mi_codes: I64Array
    strand_b: I64Array
    has_suffix: npt.NDArray[np.bool_]
    mi_text: U8Matrix
    mi_lengths: I64Array
    rx_hashes: I64Array
    rx_text: U8Matrix
    rx_lengths: I64Array
    cigar_hashes: I64Array
    name_starts: I64Array
    cigar_starts: I64Array
    cigar_counts: I64Array
    lengths: I64Array
    bases: U8Matrix
    quals: U8Matrix

    def __len__(self) -> int:
        return len(self.keys)

    def take(self, index: I64Array, *, keep_whole: tuple[str, ...] = ()) -> ReadColumns:
        """The rows ``index`` (any integer or boolean index). Fields named in ``keep_whole`` are
        passed through unindexed (for a caller that gathers just the rows it needs later)."""
        return ReadColumns(
            **{
                name: getattr(self, name) if name in keep_whole else getattr(self, name)[index]
                for name in _FIELDS
            }
        )

    @staticmethod
    def concat(parts: list[ReadColumns]) -> ReadColumns:
        """Rows of ``parts`` one after the other; matrices are padded to the widest part."""
        if len(parts) == 1:
            return parts[0]
        values: dict[str, Any] = {}
        for name in _FIELDS:
            arrays = [getattr(p, name) for p in parts]
            if arrays[0].ndim == 2:
                width = max(a.shape[1] for a in arrays)
                fill = {"bases": 4, "quals": 2}.get(name, 0)
                arrays = [
                    a
                    if a.shape[1] == width
                    else np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=fill)
                    for a in arrays
                ]
            values[name] = np.concatenate(arrays)
        return ReadColumns(**values)


_FIELDS: Final[tuple[str, ...]] = tuple(ReadColumns.__dataclass_fields__)


def decode_consensus_columns(
    buffer: npt.NDArray[np.uint8],
) -> ReadColumns:
    """Decode the records of ``buffer`` used by the consensus stage into :class:`ReadColumns`.

    Records that are unmapped, secondary or supplementary are left out; so are records without
    ``MI`` (see :func:`decode_status` to find them).
    """
    status, columns = _decode(buffer)
    used = np.flatnonzero(status == 0)
    fields = dict(zip(_FIELDS, columns, strict=True))
    return ReadColumns(**{name: value[used] for name, value in fields.items()})


def decode_status(buffer: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.int8], ReadColumns]:
    """Per record of ``buffer``: 0 (used), :data:`STATUS_SKIPPED` or :data:`STATUS_NO_MI`, and
    the columns of every record (rows of records that are not used are meaningless)."""
    status, columns = _decode(buffer)
    return status, ReadColumns(**dict(zip(_FIELDS, columns, strict=True)))


def _decode(buffer: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.int8], tuple[Any, ...]]:
    # NB: first try widths that fit typical MI and RX text (no pass over the tags to measure)
    n, max_seq = _measure_sequences(buffer)
    status, columns, overflow = _decode_kernel(buffer, n, max(max_seq, 1), 48, 40)
    if overflow:
        n, max_seq, max_mi, max_rx = _measure(buffer)
        widths = (max(max_seq, 1), max(max_mi, 24), max(max_rx, 1))
        status, columns, _ = _decode_kernel(buffer, n, *widths)
    return status, columns


@numba.njit(cache=True, nogil=True)
def _measure_sequences(buffer: npt.NDArray[np.uint8]) -> tuple[int, int]:
    """Record count and the longest sequence of a chunk."""
    n = 0
    max_seq = 0
    offset = 0
    while offset + 4 <= len(buffer):
        max_seq = max(max_seq, int32_at(buffer, offset + 4 + 16))
        offset += 4 + int32_at(buffer, offset)
        n += 1
    return n, max_seq


@numba.njit(cache=True, nogil=True)
def _aux_end(buffer: npt.NDArray[np.uint8], p: int, end: int) -> int:
    kind = buffer[p + 2]
    q = p + 3
    if kind == 90 or kind == 72:  # Z H
        while q < end and buffer[q] != 0:
            q += 1
        return q + 1
    if kind == 65 or kind == 99 or kind == 67:  # A c C
        return q + 1
    if kind == 115 or kind == 83:  # s S
        return q + 2
    if kind == 105 or kind == 73 or kind == 102:  # i I f
        return q + 4
    if kind == 66:  # B
        sub = buffer[q]
        width = 1 if (sub == 99 or sub == 67) else (2 if (sub == 115 or sub == 83) else 4)
        return q + 5 + int32_at(buffer, q + 1) * width
    return end


@numba.njit(cache=True, nogil=True)
def _aux_int(buffer: npt.NDArray[np.uint8], p: int) -> int:
    """Value of an integer aux field starting at ``p`` (type byte at ``p + 2``)."""
    kind = buffer[p + 2]
    q = p + 3
    value: int = int32_at(buffer, q) & 0xFFFFFFFF
    if kind == 99:
        value = _I64(buffer[q])
        if value >= 128:
            value -= 256
    elif kind == 67:
        value = _I64(buffer[q])
    elif kind == 115:
        value = _I64(buffer[q]) | (_I64(buffer[q + 1]) << 8)
        if value >= 32768:
            value -= 65536
    elif kind == 83:
        value = _I64(buffer[q]) | (_I64(buffer[q + 1]) << 8)
    elif kind == 105:
        value = int32_at(buffer, q)
    return value


@numba.njit(cache=True, nogil=True)
def _find_tags(buffer: npt.NDArray[np.uint8], aux: int, end: int) -> tuple[int, int]:
    """Offsets of the ``MI`` and ``RX`` fields (-1 when absent)."""
    mi = -1
    rx = -1
    p = aux
    while p + 3 <= end:
        t0 = buffer[p]
        t1 = buffer[p + 1]
        if t0 == 77 and t1 == 73:
            mi = p
        elif t0 == 82 and t1 == 88:
            rx = p
        p = _aux_end(buffer, p, end)
    return mi, rx


@numba.njit(cache=True, nogil=True)
def _measure(buffer: npt.NDArray[np.uint8]) -> tuple[int, int, int, int]:
    """Record count and the widest sequence, ``MI`` text and ``RX`` text of a chunk."""
    n = 0
    max_seq = 0
    max_mi = 0
    max_rx = 0
    offset = 0
    while offset + 4 <= len(buffer):
        size = int32_at(buffer, offset)
        record = offset + 4
        end = record + size
        offset = end
        n += 1
        l_seq = int32_at(buffer, record + 16)
        max_seq = max(max_seq, l_seq)
        l_name = _I64(buffer[record + 8])
        n_cigar = _I64(buffer[record + 12]) | (_I64(buffer[record + 13]) << 8)
        aux = record + 32 + l_name + 4 * n_cigar + (l_seq + 1) // 2 + l_seq
        mi, rx = _find_tags(buffer, aux, end)
        if mi >= 0:
            max_mi = max(max_mi, _aux_end(buffer, mi, end) - mi - 3)
        if rx >= 0:
            max_rx = max(max_rx, _aux_end(buffer, rx, end) - rx - 3)
    return n, max_seq, max_mi + 24, max_rx


@numba.njit(cache=True, nogil=True)
def _decode_kernel(
    buffer: npt.NDArray[np.uint8], n: int, max_seq: int, max_mi: int, max_rx: int
) -> tuple[npt.NDArray[np.int8], tuple[Any, ...], bool]:
    status = np.zeros(n, dtype=np.int8)
    overflow = False
    flags = np.zeros(n, dtype=np.int64)
    keys = np.zeros(n, dtype=np.int64)
    needed = np.zeros(n, dtype=np.int64)
    mapqs = np.zeros(n, dtype=np.int64)
    mi_codes = np.zeros(n, dtype=np.int64)
    strand_b = np.zeros(n, dtype=np.int64)
    has_suffix = np.zeros(n, dtype=np.bool_)
    mi_text = np.zeros((n, max_mi), dtype=np.uint8)
    mi_lengths = np.zeros(n, dtype=np.int64)
    rx_hashes = np.zeros(n, dtype=np.int64)
    rx_text = np.zeros((n, max_rx), dtype=np.uint8)
    rx_lengths = np.zeros(n, dtype=np.int64)
    cigar_hashes = np.zeros(n, dtype=np.int64)
    name_starts = np.zeros(n, dtype=np.int64)
    cigar_starts = np.zeros(n, dtype=np.int64)
    cigar_counts = np.zeros(n, dtype=np.int64)
    lengths = np.zeros(n, dtype=np.int64)
    bases = np.full((n, max_seq), 4, dtype=np.uint8)
    quals = np.full((n, max_seq), 2, dtype=np.uint8)
    nibble = _NIBBLE_TO_CODE
    offset = 0
    for i in range(n):
        size = int32_at(buffer, offset)
        record = offset + 4
        end = record + size
        offset = end
        tid = int32_at(buffer, record)
        pos = int32_at(buffer, record + 4)
        l_name = _I64(buffer[record + 8])
        mapq = _I64(buffer[record + 9])
        n_cigar = _I64(buffer[record + 12]) | (_I64(buffer[record + 13]) << 8)
        flag = _I64(buffer[record + 14]) | (_I64(buffer[record + 15]) << 8)
        l_seq = int32_at(buffer, record + 16)
        flags[i] = flag
        name_starts[i] = record + 32
        cigar_starts[i] = record + 32 + l_name
        if flag & 0x904:  # unmapped, secondary, supplementary
            status[i] = 1
            continue
        key = (tid << 32) | pos
        keys[i] = key
        need = key
        if flag & 0x1 and not flag & 0x8:
            mate_key = (_I64(int32_at(buffer, record + 20)) << 32) | int32_at(buffer, record + 24)
            if mate_key > key:
                need = mate_key
        needed[i] = need
        mapqs[i] = mapq
        cigar_start = record + 32 + l_name
        seq_start = cigar_start + 4 * n_cigar
        qual_start = seq_start + (l_seq + 1) // 2
        aux = qual_start + l_seq
        mi, rx = _find_tags(buffer, aux, end)
        if mi < 0:
            status[i] = 2
            continue
        # MI text: Z as is, integer types as decimal digits
        kind = buffer[mi + 2]
        m_len = 0
        if kind == 90 or kind == 72:
            q = mi + 3
            while q < end and buffer[q] != 0:
                if m_len >= max_mi:
                    overflow = True  # too narrow: the caller measures and retries
                    break
                mi_text[i, m_len] = buffer[q]
                m_len += 1
                q += 1
            if overflow:
                break
        elif kind == 65:
            mi_text[i, 0] = buffer[mi + 3]
            m_len = 1
        else:
            value = _aux_int(buffer, mi)
            negative = value < 0
            if negative:
                value = -value
            digits = np.empty(24, dtype=np.uint8)
            n_digits = 0
            while True:
                digits[n_digits] = 48 + value % 10
                n_digits += 1
                value //= 10
                if value == 0:
                    break
            if negative:
                mi_text[i, 0] = 45
                m_len = 1
            for k in range(n_digits):
                mi_text[i, m_len] = digits[n_digits - 1 - k]
                m_len += 1
        base_len = m_len
        if (
            m_len > 2
            and mi_text[i, m_len - 2] == 47
            and (mi_text[i, m_len - 1] == 65 or mi_text[i, m_len - 1] == 66)
        ):
            has_suffix[i] = True
            strand_b[i] = 1 if mi_text[i, m_len - 1] == 66 else 0
            base_len = m_len - 2
        mi_lengths[i] = base_len
        # code: the number itself for canonical decimals, else a hash with the top bit set
        numeric = 0 < base_len <= 18 and not (base_len > 1 and mi_text[i, 0] == 48)
        number = 0
        h = np.uint64(14695981039346656037)
        for k in range(base_len):
            c = mi_text[i, k]
            if numeric and 48 <= c <= 57:
                number = number * 10 + (c - 48)
            else:
                numeric = False
            h = (h ^ np.uint64(c)) * np.uint64(1099511628211)
        if numeric:
            mi_codes[i] = number
        else:
            mi_codes[i] = np.int64(h | np.uint64(1 << 63))
        for k in range(base_len, m_len):
            mi_text[i, k] = 0
        # RX
        hr = np.uint64(14695981039346656037)
        r_len = 0
        if rx >= 0 and (buffer[rx + 2] == 90 or buffer[rx + 2] == 72):
            q = rx + 3
            while q < end and buffer[q] != 0:
                if r_len >= max_rx:
                    overflow = True  # too narrow: the caller measures and retries
                    break
                rx_text[i, r_len] = buffer[q]
                hr = (hr ^ np.uint64(buffer[q])) * np.uint64(1099511628211)
                r_len += 1
                q += 1
            if overflow:
                break
        rx_hashes[i] = np.int64(hr)
        rx_lengths[i] = r_len
        # CIGAR
        hc = np.uint64(14695981039346656037)
        for p in range(cigar_start, seq_start):
            hc = (hc ^ np.uint64(buffer[p])) * np.uint64(1099511628211)
        cigar_hashes[i] = np.int64(hc ^ np.uint64(n_cigar))
        cigar_counts[i] = n_cigar
        # bases and qualities
        lengths[i] = l_seq
        for k in range(l_seq):
            byte = _I64(buffer[seq_start + (k >> 1)])
            bases[i, k] = nibble[(byte >> 4) if (k & 1) == 0 else (byte & 0xF)]
        if l_seq > 0 and buffer[qual_start] != 0xFF:
            for k in range(l_seq):
                quals[i, k] = buffer[qual_start + k]
    columns = (
        flags,
        keys,
        needed,
        mapqs,
        mi_codes,
        strand_b,
        has_suffix,
        mi_text,
        mi_lengths,
        rx_hashes,
        rx_text,
        rx_lengths,
        cigar_hashes,
        name_starts,
        cigar_starts,
        cigar_counts,
        lengths,
        bases,
        quals,
    )
    return status, columns, overflow


@numba.njit(cache=True, nogil=True)
def _reg2bin(beg: int, end: int) -> int:
    end -= 1
    if beg >> 14 == end >> 14:
        return ((1 << 15) - 1) // 7 + (beg >> 14)
    if beg >> 17 == end >> 17:
        return ((1 << 12) - 1) // 7 + (beg >> 17)
    if beg >> 20 == end >> 20:
        return ((1 << 9) - 1) // 7 + (beg >> 20)
    if beg >> 23 == end >> 23:
        return ((1 << 6) - 1) // 7 + (beg >> 23)
    if beg >> 26 == end >> 26:
        return ((1 << 3) - 1) // 7 + (beg >> 26)
    return 0


@numba.njit(cache=True, nogil=True)
def _put32(out: npt.NDArray[np.uint8], o: int, value: int) -> None:
    v = value & 0xFFFFFFFF
    out[o] = v & 0xFF
    out[o + 1] = (v >> 8) & 0xFF
    out[o + 2] = (v >> 16) & 0xFF
    out[o + 3] = (v >> 24) & 0xFF


@numba.njit(cache=True, nogil=True)
def _put_int_tag(out: npt.NDArray[np.uint8], o: int, t0: int, t1: int, value: int) -> int:
    """An integer tag in the smallest type, as htslib stores ``XX:i:value`` from SAM text."""
    out[o] = t0
    out[o + 1] = t1
    if value >= 0:
        if value <= 255:
            out[o + 2] = 67  # C
            out[o + 3] = value
            return o + 4
        if value <= 65535:
            out[o + 2] = 83  # S
            out[o + 3] = value & 0xFF
            out[o + 4] = value >> 8
            return o + 5
        out[o + 2] = 73  # I
        _put32(out, o + 3, value)
        return o + 7
    if value >= -128:
        out[o + 2] = 99  # c
        out[o + 3] = value & 0xFF
        return o + 4
    if value >= -32768:
        out[o + 2] = 115  # s
        out[o + 3] = value & 0xFF
        out[o + 4] = (value >> 8) & 0xFF
        return o + 5
    out[o + 2] = 105  # i
    _put32(out, o + 3, value)
    return o + 7


@numba.njit(cache=True, nogil=True)
def _put_float_tag(
    out: npt.NDArray[np.uint8], o: int, t0: int, t1: int, value: float, scratch: Any
) -> int:
    out[o] = t0
    out[o + 1] = t1
    out[o + 2] = 102  # f
    scratch[0] = value
    bits = scratch.view(np.uint32)[0]
    _put32(out, o + 3, _I64(bits))
    return o + 7


@numba.njit(cache=True, nogil=True)
def _put_text_tag(
    out: npt.NDArray[np.uint8], o: int, t0: int, t1: int, text: Any, length: int
) -> int:
    out[o] = t0
    out[o + 1] = t1
    out[o + 2] = 90  # Z
    o += 3
    for k in range(length):
        out[o + k] = text[k]
    out[o + length] = 0
    return o + length + 1


def encode_consensus_records(
    *,
    names: U8Matrix,
    name_lengths: I64Array,
    flags: I64Array,
    tids: I64Array,
    starts: I64Array,
    mapqs: I64Array,
    cigar_words: npt.NDArray[np.uint32],
    cigar_offsets: I64Array,
    cigar_ids: I64Array,
    ref_spans: I64Array,
    mate_tids: I64Array,
    mate_starts: I64Array,
    tlens: I64Array,
    bases: U8Matrix,
    quals: U8Matrix,
    lengths: I64Array,
    umis: U8Matrix,
    umi_lengths: I64Array,
    int_tags: I64Array,
    float_tags: npt.NDArray[np.float64],
    duplex_int_tags: I64Array,
    duplex_float_tags: npt.NDArray[np.float64],
    is_duplex: npt.NDArray[np.bool_],
) -> tuple[npt.NDArray[np.uint8], I64Array]:
    """Binary BAM records (with their ``block_size``) for consensus reads, one per row, and the
    offset of each record in the bytes (``n + 1`` offsets).

    The name is also the ``MI`` tag; tags follow in the order ``MI RX cD cM cE`` and, where
    ``is_duplex``, ``aD bD aM bM aE bE``. ``int_tags`` holds ``cD cM``; ``float_tags`` ``cE``;
    ``duplex_int_tags`` ``aD bD aM bM`` and ``duplex_float_tags`` ``aE bE``. ``cigar_words``
    ``[cigar_offsets[c]:cigar_offsets[c + 1]]`` is CIGAR ``c``. Float tags are stored as
    float32 of the value rounded to 6 significant digits (what ``%.6g`` SAM text would give).
    """
    return _encode_kernel(
        names,
        np.asarray(name_lengths, np.int64),
        np.asarray(flags, np.int64),
        np.asarray(tids, np.int64),
        np.asarray(starts, np.int64),
        np.asarray(mapqs, np.int64),
        np.asarray(cigar_words, np.uint32),
        np.asarray(cigar_offsets, np.int64),
        np.asarray(cigar_ids, np.int64),
        np.asarray(ref_spans, np.int64),
        np.asarray(mate_tids, np.int64),
        np.asarray(mate_starts, np.int64),
        np.asarray(tlens, np.int64),
        bases,
        quals,
        np.asarray(lengths, np.int64),
        umis,
        np.asarray(umi_lengths, np.int64),
        np.asarray(int_tags, np.int64),
        _round_significant(np.asarray(float_tags, np.float64)),
        np.asarray(duplex_int_tags, np.int64),
        _round_significant(np.asarray(duplex_float_tags, np.float64)),
        np.asarray(is_duplex, np.bool_),
    )


def _round_significant(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
    """``float32(float(f"{v:.6g}"))`` for every value, vectorised.

    NB: with ``k = 5 - floor(log10|v|)`` >= 0, ``round(v * 10**k) / 10**k`` divides two exact
    doubles, so it is the double nearest the 6-digit decimal, as ``strtod`` of the text is.
    Values that are not finite, or need a negative ``k``, take the text round trip.
    """
    flat = np.asarray(values, dtype=np.float64).ravel()
    out = np.zeros(len(flat), dtype=np.float32)
    nonzero = np.isfinite(flat) & (flat != 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = 5 - np.floor(np.log10(np.abs(flat)))
    easy = np.flatnonzero(nonzero & (k >= 0) & (k <= 22))
    power = np.power(10.0, k[easy])
    scaled = flat[easy] * power
    rounded = np.round(scaled)
    # NB: a product that lands on a .5 tie may have been rounded onto it: use the text there
    tie = np.abs(scaled - rounded) == 0.5
    out[easy] = (rounded / power).astype(np.float32)
    is_hard = flat != 0
    is_hard[easy[~tie]] = False
    hard = np.flatnonzero(is_hard)
    if len(hard):
        out[hard] = np.array([float(f"{v:.6g}") for v in flat[hard].tolist()], np.float32)
    return out.reshape(np.shape(values))


@numba.njit(cache=True, nogil=True)
def _encode_kernel(
    names: U8Matrix,
    name_lengths: I64Array,
    flags: I64Array,
    tids: I64Array,
    starts: I64Array,
    mapqs: I64Array,
    cigar_words: npt.NDArray[np.uint32],
    cigar_offsets: I64Array,
    cigar_ids: I64Array,
    ref_spans: I64Array,
    mate_tids: I64Array,
    mate_starts: I64Array,
    tlens: I64Array,
    bases: U8Matrix,
    quals: U8Matrix,
    lengths: I64Array,
    umis: U8Matrix,
    umi_lengths: I64Array,
    int_tags: I64Array,
    float_tags: npt.NDArray[np.float32],
    duplex_int_tags: I64Array,
    duplex_float_tags: npt.NDArray[np.float32],
    is_duplex: npt.NDArray[np.bool_],
) -> tuple[npt.NDArray[np.uint8], I64Array]:
    n = len(flags)
    offsets = np.zeros(n + 1, dtype=np.int64)
    total = 0
    for i in range(n):
        n_cig = cigar_offsets[cigar_ids[i] + 1] - cigar_offsets[cigar_ids[i]]
        total += 36 + 2 * name_lengths[i] + 1 + 4 * n_cig + (lengths[i] + 1) // 2 + lengths[i]
        total += 3 + 1 + umi_lengths[i] + 3 * 7 + 7 + 4 * 7 + 2 * 7 + name_lengths[i] + 8
    out = np.zeros(total, dtype=np.uint8)
    scratch = np.zeros(1, dtype=np.float32)
    code_to_nibble = _CODE_TO_NIBBLE
    o = 0
    for i in range(n):
        start_o = o
        o += 4
        cig = cigar_ids[i]
        c0 = cigar_offsets[cig]
        n_cig = cigar_offsets[cig + 1] - c0
        pos = starts[i]
        span = ref_spans[cig]
        end = pos + span if span > 0 else pos + 1
        _put32(out, o, tids[i])
        _put32(out, o + 4, pos)
        out[o + 8] = name_lengths[i] + 1
        out[o + 9] = mapqs[i]
        bin_ = _reg2bin(pos, end)
        out[o + 10] = bin_ & 0xFF
        out[o + 11] = bin_ >> 8
        out[o + 12] = n_cig & 0xFF
        out[o + 13] = n_cig >> 8
        out[o + 14] = flags[i] & 0xFF
        out[o + 15] = flags[i] >> 8
        length = lengths[i]
        _put32(out, o + 16, length)
        _put32(out, o + 20, mate_tids[i])
        _put32(out, o + 24, mate_starts[i])
        _put32(out, o + 28, tlens[i])
        o += 32
        for k in range(name_lengths[i]):
            out[o + k] = names[i, k]
        o += name_lengths[i]
        out[o] = 0
        o += 1
        for k in range(n_cig):
            _put32(out, o + 4 * k, _I64(cigar_words[c0 + k]))
        o += 4 * n_cig
        for k in range(0, length, 2):
            high = _I64(code_to_nibble[bases[i, k]])
            low = _I64(code_to_nibble[bases[i, k + 1]]) if k + 1 < length else 0
            out[o + (k >> 1)] = (high << 4) | low
        o += (length + 1) // 2
        for k in range(length):
            out[o + k] = quals[i, k]
        o += length
        o = _put_text_tag(out, o, 77, 73, names[i], name_lengths[i])  # MI
        o = _put_text_tag(out, o, 82, 88, umis[i], umi_lengths[i])  # RX
        o = _put_int_tag(out, o, 99, 68, int_tags[i, 0])  # cD
        o = _put_int_tag(out, o, 99, 77, int_tags[i, 1])  # cM
        o = _put_float_tag(out, o, 99, 69, float_tags[i, 0], scratch)  # cE
        if is_duplex[i]:
            o = _put_int_tag(out, o, 97, 68, duplex_int_tags[i, 0])  # aD
            o = _put_int_tag(out, o, 98, 68, duplex_int_tags[i, 1])  # bD
            o = _put_int_tag(out, o, 97, 77, duplex_int_tags[i, 2])  # aM
            o = _put_int_tag(out, o, 98, 77, duplex_int_tags[i, 3])  # bM
            o = _put_float_tag(out, o, 97, 69, duplex_float_tags[i, 0], scratch)  # aE
            o = _put_float_tag(out, o, 98, 69, duplex_float_tags[i, 1], scratch)  # bE
        _put32(out, start_o, o - start_o - 4)
        offsets[i + 1] = o
    return out[:o], offsets


@numba.njit(cache=True, nogil=True)
def gather_records(
    data: npt.NDArray[np.uint8], offsets: I64Array, order: I64Array
) -> npt.NDArray[np.uint8]:
    """The records ``order`` of ``data`` (record ``i`` is ``data[offsets[i]:offsets[i + 1]]``),
    one after the other."""
    total = 0
    for i in order:
        total += offsets[i + 1] - offsets[i]
    out = np.empty(total, dtype=np.uint8)
    o = 0
    for i in order:
        size = offsets[i + 1] - offsets[i]
        out[o : o + size] = data[offsets[i] : offsets[i + 1]]
        o += size
    return out


# ---------------------------------------------------------------------------------------------
# Region access through the BAM index, and the aligned bases of a region's records
# ---------------------------------------------------------------------------------------------

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
        return True, float(_aux_int(buffer, p))
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
            p = _aux_end(buffer, p, record_end)
        if key < 0:
            for t in range(n_tags):
                tag_at[n_used, t] = -1
            continue
        kind = buffer[key + 2]
        if kind == 90:  # Z
            width = _aux_end(buffer, key, record_end) - key - 4
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
    digits = np.zeros(24, dtype=np.uint8)
    nibble = _NIBBLE_TO_CODE
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
        key = key_at[i]
        kind = buffer[key + 2]
        if kind == 90:
            q = key + 3
            k = 0
            while q < record_end and buffer[q] != 0:
                key_text[i, k] = buffer[q]
                k += 1
                q += 1
            key_lengths[i] = k
        elif kind == 65:
            key_text[i, 0] = buffer[key + 3]
            key_lengths[i] = 1
        else:
            value = _aux_int(buffer, key)
            k = 0
            if value < 0:
                key_text[i, 0] = 45
                k = 1
                value = -value
            n_digits = 0
            while True:
                digits[n_digits] = 48 + value % 10
                n_digits += 1
                value //= 10
                if value == 0:
                    break
            for d in range(n_digits):
                key_text[i, k] = digits[n_digits - 1 - d]
                k += 1
            key_lengths[i] = k
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
def _key_text_into(
    buffer: npt.NDArray[np.uint8], key: int, record_end: int, out: Any, digits: Any
) -> int:
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
    value = _aux_int(buffer, key)
    k = 0
    if value < 0:
        out[0] = 45
        k = 1
        value = -value
    n_digits = 0
    while True:
        digits[n_digits] = 48 + value % 10
        n_digits += 1
        value //= 10
        if value == 0:
            break
    for d in range(n_digits):
        out[k] = digits[n_digits - 1 - d]
        k += 1
    return k


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
            p = _aux_end(buffer, p, record_end)
        mapq = _I64(buffer[record + 9])
        if key < 0:
            status[n] = RECORD_NO_KEY
        else:
            kind = buffer[key + 2]
            if kind == 90:  # Z
                width = _aux_end(buffer, key, record_end) - key - 4
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
    digits = np.zeros(24, dtype=np.uint8)
    for i in range(n):
        if key_at[i] >= 0:
            record_end = at[i] + int32_at(buffer, at[i] - 4)
            key_lengths[i] = _key_text_into(buffer, key_at[i], record_end, key_text[i], digits)
    columns = (status[:n], starts[:n], ends[:n], mapqs[:n], key_text, key_lengths)
    return unsupported, columns
