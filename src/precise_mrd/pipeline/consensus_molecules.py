"""Molecule assembly for the consensus stage: chunks of grouped records in, batches of
finished molecules out, consensus records out in coordinate order.

:class:`StreamingCaller` is steps 1-2 and the ordered writing of
:mod:`precise_mrd.pipeline.consensus`; the hash tables of open molecules are compiled loops here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np
import numpy.typing as npt

from precise_mrd.core.consensus import (
    ConsensusParams,
)
from precise_mrd.core.errors import InputDataError, InputFileError
from precise_mrd.io.bam_columns import (
    STATUS_ABSENT,
    STATUS_NO_MI,
    STATUS_SKIPPED,
    ReadColumns,
    decode_status,
    gather_records,
)
from precise_mrd.pipeline.consensus_alignment import CigarTable
from precise_mrd.pipeline.consensus_batch import BatchResult, Counters, process_batch

I64Array = npt.NDArray[np.int64]
_I64: Any = np.int64  # NB: typed Any so that compiled integer maths type-checks as int

_MIN_BATCH_READS = 10_000  # finished molecules are processed together once this many reads wait


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


class StreamingCaller:
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
        self.in_flight: tuple[Future[BatchResult], int | None] | None = None
        self.source = source
        self.contig_names = contig_names
        self.counters = Counters()
        self.cigars = CigarTable()
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

    def _process(self, complete: npt.NDArray[np.bool_]) -> Future[BatchResult]:
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
            return self.worker.submit(process_batch, *args)
        done: Future[BatchResult] = Future()
        done.set_result(process_batch(*args))
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
    cigars: CigarTable,
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
