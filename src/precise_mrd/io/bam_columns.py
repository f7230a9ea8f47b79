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

Region access through the ``.bai`` or ``.csi`` lives in :mod:`precise_mrd.io.bam_regions`.

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

from dataclasses import dataclass
from typing import Any, Final

import numba
import numpy as np
import numpy.typing as npt

from precise_mrd.io.bam import int32_at, put_decimal

__all__ = [
    "NIBBLE_TO_CODE",
    "STATUS_ABSENT",
    "STATUS_NO_MI",
    "STATUS_SKIPPED",
    "ReadColumns",
    "aux_end",
    "aux_int",
    "decode_consensus_columns",
    "encode_consensus_records",
    "gather_records",
]

STATUS_SKIPPED: Final[int] = 1
"""Record not used (unmapped, secondary or supplementary)."""
STATUS_NO_MI: Final[int] = 2
"""Record without an ``MI`` tag."""
STATUS_ABSENT: Final[int] = 3
"""Record not in the grouped stream (its given molecule id is negative; see
:func:`decode_status`)."""

_SKIP_FLAGS: Final[int] = 0x4 | 0x100 | 0x800
_I64: Any = np.int64
U8Matrix = npt.NDArray[np.uint8]
I64Array = npt.NDArray[np.int64]

# 4-bit BAM base code -> A=0 C=1 G=2 T=3 else 4
NIBBLE_TO_CODE = np.full(16, 4, dtype=np.uint8)
NIBBLE_TO_CODE[1], NIBBLE_TO_CODE[2], NIBBLE_TO_CODE[4], NIBBLE_TO_CODE[8] = 0, 1, 2, 3
_CODE_TO_NIBBLE = np.array([1, 2, 4, 8, 15], dtype=np.uint8)


@dataclass(frozen=True)
class ReadColumns:
    """Columns of the used records of a chunk, one row per record, in file order.

    ``keys`` is ``contig << 32 | start`` (0-based start); ``needed`` the larger of ``keys`` and
    the mate's key (paired, mate mapped), else the key of the read's unclipped end (reads of
    its molecule start no later); ``mi_codes`` the molecule id without ``/A``/``/B``:
    its value when it is a plain decimal number, otherwise a 63-bit hash with the top bit set;
    ``strand_b`` 1 for ``/B``; ``has_suffix`` whether the ``MI`` had ``/A`` or ``/B``;
    ``cigar_hashes`` a hash of the binary CIGAR; ``name_hashes`` a hash (FNV-1a) of the read name,
    which pairs the mates of a template; ``name_starts`` and ``cigar_starts`` the byte
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
    name_hashes: I64Array
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


def decode_status(
    buffer: npt.NDArray[np.uint8],
    *,
    molecules: I64Array | None = None,
    strands: npt.NDArray[np.int8] | None = None,
) -> tuple[npt.NDArray[np.int8], ReadColumns]:
    """Per record of ``buffer``: 0 (used), :data:`STATUS_SKIPPED` or :data:`STATUS_NO_MI`, and
    the columns of every record (rows of records that are not used are meaningless).

    With ``molecules`` (and ``strands``: 0 none, 1 ``/A``, 2 ``/B``), one per record, the
    records' own ``MI`` tags are ignored: record ``i`` is decoded as if it had
    ``MI:Z:<molecules[i]>`` (with its suffix), and a record with ``molecules[i] < 0`` is
    :data:`STATUS_ABSENT`. This is what the group stage's tagged records would decode to,
    without writing the tags.
    """
    given = molecules is not None
    if molecules is None or strands is None:
        if given or strands is not None:
            raise ValueError("pass both molecules and strands, or neither")
        molecules = np.zeros(0, dtype=np.int64)
        strands = np.zeros(0, dtype=np.int8)
    status, columns = _decode(
        buffer, np.asarray(molecules, np.int64), np.asarray(strands, np.int8), given
    )
    return status, ReadColumns(**dict(zip(_FIELDS, columns, strict=True)))


def _decode(
    buffer: npt.NDArray[np.uint8],
    molecules: I64Array | None = None,
    strands: npt.NDArray[np.int8] | None = None,
    given: bool = False,
) -> tuple[npt.NDArray[np.int8], tuple[Any, ...]]:
    if molecules is None or strands is None:
        molecules = np.zeros(0, dtype=np.int64)
        strands = np.zeros(0, dtype=np.int8)
    # NB: first try widths that fit typical MI and RX text (no pass over the tags to measure)
    n, max_seq = _measure_sequences(buffer)
    if given and len(molecules) != n:
        raise ValueError(f"{len(molecules)} molecule ids for {n} records")
    status, columns, overflow = _decode_kernel(
        buffer, n, max(max_seq, 1), 48, 40, molecules, strands, given
    )
    if overflow:
        n, max_seq, max_mi, max_rx = _measure(buffer)
        widths = (max(max_seq, 1), max(max_mi, 24), max(max_rx, 1))
        status, columns, _ = _decode_kernel(buffer, n, *widths, molecules, strands, given)
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
def aux_end(buffer: npt.NDArray[np.uint8], p: int, end: int) -> int:
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
def aux_int(buffer: npt.NDArray[np.uint8], p: int) -> int:
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
        p = aux_end(buffer, p, end)
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
            max_mi = max(max_mi, aux_end(buffer, mi, end) - mi - 3)
        if rx >= 0:
            max_rx = max(max_rx, aux_end(buffer, rx, end) - rx - 3)
    return n, max_seq, max_mi + 24, max_rx


@numba.njit(cache=True, nogil=True)
def _decode_kernel(
    buffer: npt.NDArray[np.uint8],
    n: int,
    max_seq: int,
    max_mi: int,
    max_rx: int,
    molecules: I64Array,
    strands: npt.NDArray[np.int8],
    given: bool,
) -> tuple[npt.NDArray[np.int8], tuple[Any, ...], bool]:
    """Columns of ``n`` records; with ``given``, ``MI`` is ``molecules``/``strands`` (as
    :func:`decode_status` describes) instead of the records' tags."""
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
    name_hashes = np.zeros(n, dtype=np.int64)
    name_starts = np.zeros(n, dtype=np.int64)
    cigar_starts = np.zeros(n, dtype=np.int64)
    cigar_counts = np.zeros(n, dtype=np.int64)
    lengths = np.zeros(n, dtype=np.int64)
    bases = np.full((n, max_seq), 4, dtype=np.uint8)
    quals = np.full((n, max_seq), 2, dtype=np.uint8)
    nibble = NIBBLE_TO_CODE
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
        name_hash = _I64(-3750763034362895579)  # FNV-1a offset basis, as a signed int64
        for k in range(record + 32, record + 31 + l_name):  # NB: the name without its NUL
            name_hash = (name_hash ^ _I64(buffer[k])) * _I64(1099511628211)
        name_hashes[i] = name_hash
        if given and molecules[i] < 0:
            status[i] = 3
            continue
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
        else:
            # NB: an unpaired read's molecule may have reads that start up to a read length
            # later (the same unclipped 5' end, clipped or trimmed differently): it stays open
            # until the stream passes this read's unclipped end
            need = (tid << 32) | _unclipped_end(buffer, record + 32 + l_name, n_cigar, pos)
        needed[i] = need
        mapqs[i] = mapq
        cigar_start = record + 32 + l_name
        seq_start = cigar_start + 4 * n_cigar
        qual_start = seq_start + (l_seq + 1) // 2
        aux = qual_start + l_seq
        mi, rx = _find_tags(buffer, aux, end)
        m_len = 0
        if given:
            # NB: the text the group stage's tag would have: decimal digits, then /A or /B
            m_len = put_decimal(mi_text[i], 0, molecules[i])
            if strands[i] > 0:
                mi_text[i, m_len] = 47
                mi_text[i, m_len + 1] = 65 if strands[i] == 1 else 66
                m_len += 2
        elif mi < 0:
            status[i] = 2
            continue
        # MI text: Z as is, integer types as decimal digits
        elif buffer[mi + 2] == 90 or buffer[mi + 2] == 72:
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
        elif buffer[mi + 2] == 65:
            mi_text[i, 0] = buffer[mi + 3]
            m_len = 1
        else:
            m_len = put_decimal(mi_text[i], 0, aux_int(buffer, mi))
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
        name_hashes,
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
    origins: I64Array | None = None,
) -> tuple[npt.NDArray[np.uint8], I64Array]:
    """Binary BAM records (with their ``block_size``) for consensus reads, one per row, and the
    offset of each record in the bytes (``n + 1`` offsets).

    The name is also the ``MI`` tag; tags follow in the order ``MI RX cD cM cE`` and, where
    ``is_duplex``, ``aD bD aM bM aE bE`` and ``sO`` (``origins``: :data:`STRAND_A`,
    :data:`STRAND_B` or :data:`STRAND_BOTH`; none where 0). ``int_tags`` holds ``cD cM``;
    ``float_tags`` ``cE``;
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
        np.zeros(len(flags), np.int64) if origins is None else np.asarray(origins, np.int64),
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


#: ``sO`` (strand of origin) of a duplex-grouped consensus record: the molecule was seen on its
#: top strand only (``/A``: R1 at the fragment's left end), its bottom strand only (``/B``), or both
STRAND_A: Final[int] = 1
STRAND_B: Final[int] = 2
STRAND_BOTH: Final[int] = 3


def strand_of_origin(flags: I64Array, origin: I64Array) -> I64Array:
    """Per consensus record, the strand its molecule came from: 0 top, 1 bottom. A
    duplex-grouped record says so in ``sO`` (``origin``; its R1 is always oriented as the top
    strand's R1, so its flags cannot tell); one seen on both strands, or without ``sO``, takes
    the orientation of read 1 (reverse XOR read 2)."""
    from_flags = ((flags >> 4) ^ (flags >> 7)) & 1
    return np.where(origin == STRAND_A, 0, np.where(origin == STRAND_B, 1, from_flags)).astype(
        np.int64
    )


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
    origins: I64Array,
) -> tuple[npt.NDArray[np.uint8], I64Array]:
    n = len(flags)
    offsets = np.zeros(n + 1, dtype=np.int64)
    total = 0
    for i in range(n):
        n_cig = cigar_offsets[cigar_ids[i] + 1] - cigar_offsets[cigar_ids[i]]
        total += 36 + 2 * name_lengths[i] + 1 + 4 * n_cig + (lengths[i] + 1) // 2 + lengths[i]
        total += 3 + 1 + umi_lengths[i] + 3 * 7 + 7 + 4 * 7 + 2 * 7 + name_lengths[i] + 8 + 7
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
            if origins[i] > 0:
                o = _put_int_tag(out, o, 115, 79, origins[i])  # sO
        _put32(out, start_o, o - start_o - 4)
        offsets[i + 1] = o
    return out[:o], offsets


@numba.njit(cache=True, nogil=True)
def _unclipped_end(buffer: npt.NDArray[np.uint8], cigar_start: int, n_cigar: int, pos: int) -> int:
    """The 0-based position past a record's last reference base, trailing clips included."""
    end = pos
    trailing = 0
    for k in range(n_cigar):
        word = int32_at(buffer, cigar_start + 4 * k) & 0xFFFFFFFF
        op = word & 0xF
        length = word >> 4
        if op == 4 or op == 5:
            trailing += length
        else:
            trailing = 0
            if op == 0 or op == 2 or op == 3 or op == 7 or op == 8:
                end += length
    result: int = end + trailing
    return result


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
