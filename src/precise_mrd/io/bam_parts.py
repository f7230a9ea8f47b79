"""Cut a coordinate-sorted BAM into parts that can be grouped and called apart.

A cut between two records is *safe* when no template (read pair) and no UMI bundle has reads on
both sides of it, so that grouping and consensus of each part give exactly the molecules, the
records and the counts that the whole file gives. :func:`plan_parts` finds the safe cut points in
one pass (the same compiled summary as the group stage's first pass) and picks up to
``n_parts - 1`` of them that split the records most evenly.

A kept read (one the group stage would use) forbids every cut inside its *extent*: the span from
the smallest to the largest of its alignment start, its unclipped 5' end, and its mate's start and
unclipped 5' end (from ``MC``), in file order across contigs. Both reads of a pair cover the span
between them; two templates of one bundle share an unclipped 5' end, so their extents meet. Reads
the group stage drops (unmapped, secondary, supplementary, QC-failed, low mapping quality, no UMI)
constrain nothing; they are only counted, in whichever part holds them. Records at one position
stay in one part.

*Distant* pairs, whose 5' ends are more than :data:`DISTANT_BP` apart or on two contigs (chimeric
and discordant pairs: a real sample has thousands, and each would otherwise forbid every cut
between its mates), constrain cuts by their own read only. The later mate is *moved*: the part
holding its earlier mate reads it after its own records (:attr:`FilePart.imports`) and the part
holding it in the file skips it (:attr:`FilePart.skip`), so every template is still grouped whole.
The consensus records of such a molecule then lie beyond its part's records, and joining the
parts merges them into place (:func:`precise_mrd.pipeline.consensus.join_consensus_parts`).

Cost: one inflate of the file and the compiled summary (~1 s for the standard sample's 4M reads),
three int64 per record while planning, and a copy of each moved record.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any, Final

import numba
import numpy as np
import numpy.typing as npt

from precise_mrd.io.bam import (
    STATUS_KEPT,
    RecordRange,
    StreamLog,
    count_records,
    int32_at,
    iter_record_chunks,
    not_sorted_error,
    open_bam,
    prefetch,
    summarise_records,
)
from precise_mrd.io.bam_columns import gather_records

__all__ = ["DISTANT_BP", "FilePart", "RecordPlan", "iter_part_records", "plan_parts"]

I64Array = npt.NDArray[np.int64]
_I64: Any = np.int64
_UNPLACED_KEY: Final[int] = 1 << 62
_NO_LOW: Final[int] = np.iinfo(np.int64).max
_NO_HIGH: Final[int] = np.iinfo(np.int64).min
#: mates whose unclipped 5' ends are further apart than this (or on two contigs) are *distant*
DISTANT_BP: Final[int] = 10_000


@dataclass(frozen=True)
class FilePart:
    """One part of a BAM: the records of ``records`` except the ``skip`` ones (indices within
    ``records``; read by the part of their mate), then ``imports`` (``n_imports`` whole records
    of later parts whose mates are here, in file order). ``start_key`` is the position key of
    its first record (contig << 32 | start, as the consensus stage sorts)."""

    records: RecordRange
    skip: I64Array
    imports: bytes
    n_imports: int
    start_key: int


@dataclass(frozen=True)
class RecordPlan:
    """The parts of a BAM, in file order, holding every record once, and what was seen."""

    parts: tuple[FilePart, ...]
    n_records: int
    n_safe_cuts: int
    n_moved: int


def iter_part_records(path: Path, part: FilePart) -> Iterator[npt.NDArray[np.uint8]]:
    """The records of ``part`` in chunks of whole records, in the order grouping reads them."""
    n_done = 0
    for chunk in iter_record_chunks(path, part.records):
        n_chunk = int(count_records(chunk))
        if len(part.skip):
            lo, hi = np.searchsorted(part.skip, [n_done, n_done + n_chunk])
            if hi > lo:
                keep = np.ones(n_chunk, dtype=bool)
                keep[part.skip[lo:hi] - n_done] = False
                chunk = gather_records(chunk, record_offsets(chunk), np.flatnonzero(keep))
        n_done += n_chunk
        if len(chunk):
            yield chunk
    if part.n_imports:
        yield np.frombuffer(part.imports, dtype=np.uint8)


@numba.njit(cache=True, nogil=True)
def record_offsets(buffer: npt.NDArray[np.uint8]) -> I64Array:
    """The byte offset of every whole record of ``buffer``, and its end."""
    n = count_records(buffer)
    offsets = np.empty(n + 1, dtype=np.int64)
    offset = 0
    for i in range(n):
        offsets[i] = offset
        offset += 4 + int32_at(buffer, offset)
    offsets[n] = offset
    return offsets


@numba.njit(cache=True, nogil=True)
def consensus_sort_keys(buffer: npt.NDArray[np.uint8]) -> tuple[I64Array, I64Array, I64Array]:
    """Per record of consensus records: the position key (contig << 32 | start), the molecule id
    (the decimal number the read name starts with; -1 if none) and the offsets
    (:func:`record_offsets`): the order the consensus stage writes."""
    offsets = record_offsets(buffer)
    n = len(offsets) - 1
    keys = np.empty(n, dtype=np.int64)
    ties = np.full(n, -1, dtype=np.int64)
    for i in range(n):
        record = offsets[i] + 4
        keys[i] = (_I64(int32_at(buffer, record)) << 32) | int32_at(buffer, record + 4)
        name = record + 32
        value = 0
        digits = 0
        while digits < 19 and 48 <= buffer[name + digits] <= 57:
            value = value * 10 + (buffer[name + digits] - 48)
            digits += 1
        if digits:
            ties[i] = value
    return keys, ties, offsets


@numba.njit(cache=True, nogil=True)
def _key(tid: int, pos: int) -> int:
    # NB: contig first; +2**32 keeps unclipped ends left of position 0 in order
    if tid < 0:
        return _UNPLACED_KEY
    key: int = tid * (_I64(1) << 33) + pos + (_I64(1) << 32)
    return key


@numba.njit(cache=True, nogil=True)
def _extents(
    buffer: npt.NDArray[np.uint8],
    status: npt.NDArray[np.int8],
    tids: I64Array,
    pos5s: I64Array,
    mate_tids: I64Array,
    mate_pos5s: I64Array,
) -> tuple[I64Array, I64Array, I64Array, I64Array, I64Array]:
    """Per record: start key, extent low and high keys (neutral unless kept), byte offset, and
    for the later mate of a distant pair its mate's start key (else -1)."""
    n = len(status)
    start = np.empty(n, dtype=np.int64)
    low = np.full(n, _NO_LOW, dtype=np.int64)
    high = np.full(n, _NO_HIGH, dtype=np.int64)
    where = np.empty(n, dtype=np.int64)
    moved_to = np.full(n, -1, dtype=np.int64)
    offset = 0
    for i in range(n):
        where[i] = offset
        record = offset + 4
        offset = record + int32_at(buffer, offset)
        tid = int32_at(buffer, record)
        pos = int32_at(buffer, record + 4)
        start[i] = _key(tid, pos)
        if status[i] != STATUS_KEPT:
            continue
        own5 = _key(tid, pos5s[i])
        lo = min(start[i], own5)
        hi = max(start[i], own5)
        if mate_tids[i] >= 0:
            mate_tid = int32_at(buffer, record + 20)
            mate_start = _key(mate_tid, int32_at(buffer, record + 24))
            mate5 = _key(mate_tid, mate_pos5s[i])
            if mate_tid != tid or abs(mate_pos5s[i] - pos5s[i]) > DISTANT_BP:
                if mate_start < start[i]:
                    moved_to[i] = mate_start
            else:
                lo = min(lo, min(mate_start, mate5))
                hi = max(hi, max(mate_start, mate5))
        low[i] = lo
        high[i] = hi
    return start, low, high, where, moved_to


def plan_parts(
    path: Path,
    n_parts: int,
    *,
    umi_tag: str = "RX",
    umi_from_read_name: bool = False,
    umi_separator: str = "_",
    min_mapq: int = 0,
) -> RecordPlan:
    """Up to ``n_parts`` parts of ``path`` with only safe cuts between them, as even as the safe
    cuts allow (one part when there are none). The UMI options are the group stage's: they
    decide which reads are kept. Raises the group stage's error for a file out of coordinate
    order."""
    if n_parts < 1:
        raise ValueError(f"n_parts must be >= 1; got {n_parts}")
    with open_bam(path, require_sorted=True) as bam:
        contigs = list(bam.references)
    tag = np.frombuffer(umi_tag.encode("ascii"), dtype=np.uint8)
    order_state = np.array([-1, -1, 0], dtype=np.int64)
    log = StreamLog()
    columns: dict[str, list[I64Array]] = {"start": [], "low": [], "high": [], "where": []}
    moved_index: list[I64Array] = []
    moved_to: list[I64Array] = []
    moved_bytes: list[bytes] = []
    n_records = 0
    # NB: inflated in a thread beside the summary (both release the GIL)
    for k, chunk in enumerate(prefetch(iter_record_chunks(path, log=log))):
        status, _, tids, pos5s, mate_tids, mate_pos5s, *_, first_unsorted = summarise_records(
            chunk, tag, umi_from_read_name, ord(umi_separator), min_mapq, order_state
        )
        if first_unsorted >= 0:
            tid = int(tids[first_unsorted])
            contig = contigs[tid] if 0 <= tid < len(contigs) else str(tid)
            raise not_sorted_error(path, n_records + first_unsorted + 1, contig)
        start, low, high, where, mate_start = _extents(
            chunk, status, tids, pos5s, mate_tids, mate_pos5s
        )
        for name, values in (("start", start), ("low", low), ("high", high)):
            columns[name].append(values)
        columns["where"].append(where + log.chunk_starts[k])  # NB: the log runs ahead
        late = np.flatnonzero(mate_start >= 0)
        if len(late):
            moved_index.append(late + n_records)
            moved_to.append(mate_start[late])
            offsets = np.append(where, len(chunk))
            # NB: copies: a view would keep the whole chunk alive
            moved_bytes += [chunk[offsets[i] : offsets[i + 1]].tobytes() for i in late.tolist()]
        n_records += len(status)
    if n_records == 0:
        return RecordPlan((), 0, 0, 0)
    starts = np.concatenate(columns.pop("start"))
    wheres = np.concatenate(columns.pop("where"))
    whole = FilePart(
        log.range_at(int(wheres[0]), None), _NONE, b"", 0, _position_key(int(starts[0]))
    )
    if n_parts == 1 or n_records < 2:
        return RecordPlan((whole,), n_records, 0, 0)
    reach = np.maximum.accumulate(np.concatenate(columns.pop("high")))
    lowest_after = np.minimum.accumulate(np.concatenate(columns.pop("low"))[::-1])[::-1]
    # a cut before record i (i >= 1): a new position, nothing before reaches it, nothing from it on
    # reaches back
    safe = (starts[:-1] < starts[1:]) & (reach[:-1] < starts[1:]) & (lowest_after[1:] >= starts[1:])
    del reach, lowest_after
    cuts = np.flatnonzero(safe) + 1
    chosen: list[int] = []
    for k in range(1, n_parts):
        even = k * n_records / n_parts
        at = int(np.searchsorted(cuts, even))
        candidates = [int(cuts[j]) for j in (at - 1, at) if 0 <= j < len(cuts)]
        if not candidates:
            break
        best = min(candidates, key=lambda cut: abs(cut - even))
        if not chosen or best > chosen[-1]:
            chosen.append(best)
    if not chosen:
        return RecordPlan((whole,), n_records, len(cuts), 0)
    bounds = np.array([0, *chosen, n_records], dtype=np.int64)
    index = np.concatenate(moved_index) if moved_index else _NONE
    target = np.concatenate(moved_to) if moved_to else _NONE
    home = np.searchsorted(bounds, index, side="right") - 1
    owner = np.searchsorted(starts[bounds[:-1]], target, side="right") - 1
    moves = np.flatnonzero(owner < home)
    parts = []
    for k, (lo, hi) in enumerate(pairwise(bounds.tolist())):
        skipped = moves[home[moves] == k]
        imported = moves[owner[moves] == k]
        parts.append(
            FilePart(
                records=log.range_at(int(wheres[lo]), None if hi == n_records else hi - lo),
                skip=(index[skipped] - lo).astype(np.int64),
                imports=b"".join(moved_bytes[i] for i in imported.tolist()),
                n_imports=len(imported),
                start_key=_position_key(int(starts[lo])),
            )
        )
    return RecordPlan(tuple(parts), n_records, len(cuts), len(moves))


_NONE: Final[I64Array] = np.zeros(0, dtype=np.int64)


def _position_key(key: int) -> int:
    """A planning key as the consensus stage's position key (contig << 32 | start)."""
    if key >= _UNPLACED_KEY:
        return -1
    return ((key >> 33) << 32) | ((key & ((1 << 33) - 1)) - (1 << 32))
