"""Where a region's records start in a coordinate-sorted BAM, from its ``.bai`` or ``.csi`` index.

:func:`read_region_index` reads either index (told apart by its magic, as htslib does) into a
:class:`RegionIndex`; :meth:`RegionIndex.min_offset` gives, for a contig and a 0-based region
start, the BGZF virtual offset (``block offset << 16 | offset in the inflated block``) of a record
at or before every record that overlaps a region starting there. Reading on from it, record by
record, up to the first record at or past the region's end gives every record a ``pysam``
``fetch`` of the region gives (and some before them that do not overlap it: the reader filters
those). :func:`index_path_of` finds the index next to a BAM as htslib looks for it.

The bound comes from each index's linear part:

* ``.bai`` (SAM specification 5.2): per 16 kb window, the smallest virtual offset of a record
  overlapping the window;
* ``.csi`` (CSIv1, BGZF-compressed): per bin, ``loffset``, the virtual offset of the first record
  overlapping it (htslib writes its linear index at the bin's first ``2**min_shift`` window).
  Bins are numbered level by level from the whole contig (bin 0, ``2**(min_shift + 3 * depth)``
  bases) down, level ``l`` starting at bin ``(8**l - 1) // 7`` with bins of
  ``2**(min_shift + 3 * (depth - l))`` bases.

NB: any window or bin starting at or before the region start gives a valid bound: a record
overlapping the region either overlaps that window (so it comes at or after the window's first
record) or starts after it (so, the file being sorted, it comes after that record). The largest
such bound is used, and never one before the contig's first record (the smallest chunk start of
its bins).

>>> index = RegionIndex(
...     first_offsets=(100,),
...     starts=(np.array([0, 16_384]),),
...     offsets=(np.array([100, 5_000]),),
...     reach=(32_768,),
... )
>>> index.min_offset(0, 20_000), index.min_offset(0, 40_000), index.min_offset(1, 0)
(5000, -1, -1)
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = ["RegionIndex", "index_path_of", "read_region_index"]

I64Array = npt.NDArray[np.int64]

_BAI_MAGIC: Final[bytes] = b"BAI\x01"
_CSI_MAGIC: Final[bytes] = b"CSI\x01"
_GZIP_MAGIC: Final[bytes] = b"\x1f\x8b"
_BAI_MIN_SHIFT: Final[int] = 14
_BAI_DEPTH: Final[int] = 5


@dataclass(frozen=True)
class RegionIndex:
    """Per reference (``tid``): ``first_offsets`` (virtual offset of its first record, -1 when it
    has none), ``starts`` (ascending 0-based positions of windows or bins), ``offsets`` (the
    largest bound of a window or bin starting at or before each of ``starts``) and ``reach`` (no
    record of the reference ends after it)."""

    first_offsets: tuple[int, ...]
    starts: tuple[I64Array, ...]
    offsets: tuple[I64Array, ...]
    reach: tuple[int, ...]

    def __post_init__(self) -> None:
        n = len(self.first_offsets)
        if not len(self.starts) == len(self.offsets) == len(self.reach) == n:
            raise ValueError(f"every per-reference field must have {n} entries")

    def min_offset(self, tid: int, start: int) -> int:
        """The virtual offset to read ``tid`` from for regions starting at ``start``; -1 when no
        record of ``tid`` reaches ``start``."""
        if not 0 <= tid < len(self.first_offsets):
            return -1
        first = self.first_offsets[tid]
        if first < 0 or start >= self.reach[tid]:
            return -1
        k = int(np.searchsorted(self.starts[tid], start, side="right")) - 1
        bound = int(self.offsets[tid][k]) if k >= 0 else 0
        return max(bound, first)


def index_path_of(bam_path: Path) -> Path | None:
    """The index htslib opens for ``bam_path``: ``<bam>.csi``, ``<bam without .bam>.csi``,
    ``<bam>.bai`` or ``<bam without .bam>.bai``, the first that exists; ``None`` if none does."""
    bam_path = Path(bam_path)
    for suffix in (".csi", ".bai"):
        for index_path in (Path(f"{bam_path}{suffix}"), bam_path.with_suffix(suffix)):
            if index_path.is_file():
                return index_path
    return None


def read_region_index(index_path: Path) -> RegionIndex:
    """The :class:`RegionIndex` of a ``.bai`` or ``.csi`` file."""
    data = Path(index_path).read_bytes()
    if data[:2] == _GZIP_MAGIC:
        data = gzip.decompress(data)  # NB: BGZF blocks are gzip members
    if data[:4] == _BAI_MAGIC:
        return _read_bai(data)
    if data[:4] == _CSI_MAGIC:
        return _read_csi(data)
    raise ValueError(f"{index_path} is neither a BAI nor a CSI index")


def _bin_first(level: int) -> int:
    """Number of the first bin of ``level`` (``(8**level - 1) // 7``)."""
    return ((1 << (3 * level)) - 1) // 7


def _read_bai(data: bytes) -> RegionIndex:
    offset = 4
    (n_references,) = struct.unpack_from("<i", data, offset)
    offset += 4
    n_bins = _bin_first(_BAI_DEPTH + 1)  # the pseudo-bin (37450) lies beyond
    firsts: list[int] = []
    starts: list[I64Array] = []
    offsets: list[I64Array] = []
    reach: list[int] = []
    for _ in range(n_references):
        (n_bin,) = struct.unpack_from("<i", data, offset)
        offset += 4
        first = -1
        for _ in range(n_bin):
            bin_id, n_chunks = struct.unpack_from("<Ii", data, offset)
            offset += 8
            if bin_id < n_bins and n_chunks:
                chunks = np.frombuffer(data, dtype="<u8", count=2 * n_chunks, offset=offset)
                low = int(chunks[::2].min())
                first = low if first < 0 else min(first, low)
            offset += 16 * n_chunks
        (n_intervals,) = struct.unpack_from("<i", data, offset)
        offset += 4
        linear = np.frombuffer(data, dtype="<u8", count=n_intervals, offset=offset)
        offset += 8 * n_intervals
        if first < 0:
            linear = linear[:0]
        firsts.append(first)
        starts.append(np.arange(linear.size, dtype=np.int64) << _BAI_MIN_SHIFT)
        offsets.append(np.maximum.accumulate(linear.astype(np.int64)))
        # NB: htslib sets the linear index up to the window of the last record's end
        reach.append(linear.size << _BAI_MIN_SHIFT)
    return RegionIndex(tuple(firsts), tuple(starts), tuple(offsets), tuple(reach))


def _read_csi(data: bytes) -> RegionIndex:
    min_shift, depth, l_aux = struct.unpack_from("<iii", data, 4)
    offset = 16 + l_aux
    (n_references,) = struct.unpack_from("<i", data, offset)
    offset += 4
    n_bins = _bin_first(depth + 1)  # the pseudo-bin (n_bins + 1) lies beyond
    level_firsts = [_bin_first(level) for level in range(depth + 2)]
    firsts: list[int] = []
    starts: list[I64Array] = []
    offsets: list[I64Array] = []
    reach: list[int] = []
    for _ in range(n_references):
        (n_bin,) = struct.unpack_from("<i", data, offset)
        offset += 4
        first = -1
        end = 0
        bins: list[tuple[int, int]] = []  # (start, loffset)
        for _ in range(n_bin):
            bin_id, loffset, n_chunks = struct.unpack_from("<IQi", data, offset)
            offset += 16
            if bin_id < n_bins and n_chunks:
                chunks = np.frombuffer(data, dtype="<u8", count=2 * n_chunks, offset=offset)
                low = int(chunks[::2].min())
                first = low if first < 0 else min(first, low)
                level = next(lv for lv in range(depth + 1) if bin_id < level_firsts[lv + 1])
                size = 1 << (min_shift + 3 * (depth - level))
                bin_start = (bin_id - level_firsts[level]) * size
                bins.append((bin_start, loffset))
                end = max(end, bin_start + size)
            offset += 16 * n_chunks
        bins.sort()
        firsts.append(first)
        starts.append(np.array([s for s, _ in bins], dtype=np.int64))
        offsets.append(np.maximum.accumulate(np.array([o for _, o in bins], dtype=np.int64)))
        reach.append(end if first >= 0 else 0)
    return RegionIndex(tuple(firsts), tuple(starts), tuple(offsets), tuple(reach))
