"""Run the group/consensus stage of one sample in parts by genomic region over a process pool.

``processes`` > 1 in the config (the service's ``use_parallel``) splits the sample's BAM into
parts with safe cuts between them (:func:`precise_mrd.io.bam_parts.plan_parts`: no template or
UMI bundle crosses a cut; the later mate of a distant pair is read with its earlier mate's part).
Then, over a pool of ``spawn`` processes:

1. each part is grouped on its own (UMI clustering is per bundle, so the molecules are those of
   the whole file); the parent numbers all parts' molecules in the order of their bundles' ends,
   as the serial grouping does, so every ``MI`` is the one the serial run writes;
2. each part's consensus records go to a file of BGZF blocks of records only, which
   :func:`precise_mrd.pipeline.consensus.join_consensus_parts` joins after the header (the parts
   are in coordinate order; the records of distant molecules are merged into place) and
   indexes; their statistics are added up.

The evidence stage splits its target windows over the same pool
(:func:`precise_mrd.pipeline.evidence.collect_evidence` with ``pool``) and the background counts
are summed. Records, counts, the sample call and the report equal the serial run's (a test
compares them); only the BGZF block boundaries of ``consensus.bam`` differ.

Workers are forked from a fork server that imported the stages' modules once (no inherited
threads or locks, as with ``spawn``, see :mod:`precise_mrd.pipeline.validation`, without an
import per worker), when the pool opens, before planning. A sample with no safe cut runs
serially (logged).
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from precise_mrd.core.consensus import ConsensusParams
from precise_mrd.core.errors import InputDataError
from precise_mrd.io.bam import require_umis
from precise_mrd.io.bam_parts import FilePart, plan_parts
from precise_mrd.pipeline.consensus import (
    ConsensusStats,
    call_consensus_part,
    group_and_call_consensus,
    join_consensus_parts,
)
from precise_mrd.pipeline.group import (
    GroupStats,
    PreparedGrouping,
    grouped_header,
    prepare_grouping,
)

__all__ = ["group_and_call_consensus_in_parts", "process_pool"]

logger = logging.getLogger("precise_mrd.parallel")


#: what each worker needs, imported once by the fork server and inherited by every worker
_PRELOAD = ["precise_mrd.pipeline.consensus", "precise_mrd.pipeline.evidence"]


@contextmanager
def process_pool(processes: int) -> Iterator[ProcessPoolExecutor]:
    """A pool of ``processes`` workers forked from a fork server (a fresh interpreter started
    once per process that asks, with the stages' modules imported: each worker then starts in
    milliseconds, and inherits no thread or lock of the caller)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_PRELOAD)
    pool = ProcessPoolExecutor(max_workers=processes, mp_context=context)
    try:
        for _ in range(processes):
            pool.submit(os.getpid)  # NB: starts the workers while the caller plans the parts
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def group_and_call_consensus_in_parts(
    in_bam_path: Path,
    consensus_bam_path: Path,
    *,
    pool: Executor,
    n_parts: int,
    params: ConsensusParams,
    strategy: str = "directional",
    max_edits: int = 1,
    umi_tag: str = "RX",
    umi_from_read_name: bool = False,
    umi_separator: str = "_",
    min_mapq: int = 0,
) -> tuple[GroupStats, ConsensusStats]:
    """:func:`~precise_mrd.pipeline.consensus.group_and_call_consensus` in up to ``n_parts``
    parts over ``pool``, with the same output records and statistics."""
    options: dict[str, Any] = {
        "strategy": strategy,
        "max_edits": max_edits,
        "umi_tag": umi_tag,
        "umi_from_read_name": umi_from_read_name,
        "umi_separator": umi_separator,
        "min_mapq": min_mapq,
    }
    require_umis(
        in_bam_path, umi_tag=umi_tag, from_read_name=umi_from_read_name, separator=umi_separator
    )
    plan = plan_parts(
        in_bam_path,
        n_parts,
        umi_tag=umi_tag,
        umi_from_read_name=umi_from_read_name,
        umi_separator=umi_separator,
        min_mapq=min_mapq,
    )
    logger.info(
        "%d records in %d parts (%d safe cuts; %d distant mates read with their mate's part)",
        plan.n_records,
        len(plan.parts),
        plan.n_safe_cuts,
        plan.n_moved,
    )
    if len(plan.parts) < 2:
        return group_and_call_consensus(
            in_bam_path, consensus_bam_path, params=params, threads=1, **options
        )
    scratch = Path(
        tempfile.mkdtemp(prefix=f".{consensus_bam_path.name}.parts-", dir=consensus_bam_path.parent)
    )
    try:
        groupings = [pool.submit(_group_part, in_bam_path, part, options) for part in plan.parts]
        prepared = [future.result() for future in groupings]
        calls = [
            pool.submit(_call_part, part.with_molecule_ids(ids), scratch / f"part-{k:04d}", params)
            for k, (part, ids) in enumerate(
                zip(prepared, global_molecule_ids(prepared), strict=True)
            )
        ]
        del prepared
        results = [future.result() for future in calls]
        join_consensus_parts(
            grouped_header(in_bam_path),
            [scratch / f"part-{k:04d}" for k in range(len(results))],
            consensus_bam_path,
            params=params,
            part_starts=[part.start_key for part in plan.parts],
            overruns=[part.n_imports > 0 for part in plan.parts],
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return _sum_group_stats([g for g, _ in results]), _sum_consensus_stats([c for _, c in results])


def global_molecule_ids(parts: Sequence[PreparedGrouping]) -> list[npt.NDArray[np.int64]]:
    """For each part, the id of each of its molecules in the whole file's numbering: the serial
    grouping numbers molecules in the order of their bundles' two ends, and within a bundle as
    the part does (no bundle is in two parts)."""
    ends = np.concatenate([part.molecule_ends for part in parts])
    part_of = np.concatenate([np.full(part.n_molecules, k) for k, part in enumerate(parts)])
    local = np.concatenate([np.arange(part.n_molecules) for part in parts])
    order = np.lexsort((local, part_of, ends[:, 1], ends[:, 0]))
    ids = np.empty(len(order), dtype=np.int64)
    ids[order] = np.arange(len(order))
    bounds = np.cumsum([0, *(part.n_molecules for part in parts)])
    return [ids[lo:hi] for lo, hi in itertools.pairwise(bounds.tolist())]


def _group_part(path: Path, part: FilePart, options: dict[str, Any]) -> PreparedGrouping:
    return prepare_grouping(path, part=part, **options)


def _call_part(
    prepared: PreparedGrouping, out_path: Path, params: ConsensusParams
) -> tuple[GroupStats, ConsensusStats]:
    return call_consensus_part(prepared, out_path, params=params)


def _sum_group_stats(parts: Sequence[GroupStats]) -> GroupStats:
    skipped: Counter[str] = Counter()
    sizes: Counter[int] = Counter()
    for stats in parts:
        skipped.update(stats.n_reads_skipped_by_reason)
        sizes.update(stats.family_size_histogram)
    first = parts[0].n_reads_skipped_by_reason
    strategies = sorted({stats.strategy for stats in parts} - {""})
    if len(strategies) > 1:  # NB: `auto` chose per part; the whole file mixes the two kinds
        raise InputDataError(
            "UMIs",
            "the reads mix duplex UMIs ('A-B') and single-strand UMIs (parts of the file chose "
            f"{' and '.join(strategies)}), so the UMI strategy cannot be chosen from the reads",
            "tag every read's UMI the same way, or choose the strategy: --strategy paired "
            "(duplex) or --strategy directional (umi.strategy in a config)",
        )
    return GroupStats(
        n_reads_in=sum(stats.n_reads_in for stats in parts),
        n_reads_out=sum(stats.n_reads_out for stats in parts),
        n_reads_skipped_by_reason={reason: skipped[reason] for reason in first},
        n_bundles=sum(stats.n_bundles for stats in parts),
        n_molecules=sum(stats.n_molecules for stats in parts),
        family_size_histogram=dict(sorted(sizes.items())),
        strategy=strategies[0] if strategies else "",
    )


def _sum_consensus_stats(parts: Sequence[ConsensusStats]) -> ConsensusStats:
    sizes: Counter[int] = Counter()
    duplex_sizes: Counter[tuple[int, int]] = Counter()
    for stats in parts:
        sizes.update(stats.family_size_histogram)
        duplex_sizes.update(stats.duplex_family_size_histogram)
    counts = {
        name: sum(getattr(stats, name) for stats in parts)
        for name in ConsensusStats.__dataclass_fields__
        if not name.endswith("histogram")
    }
    return ConsensusStats(
        **counts,
        family_size_histogram=dict(sorted(sizes.items())),
        duplex_family_size_histogram=dict(sorted(duplex_sizes.items())),
    )
