"""A sample split by genomic region over a process pool gives the serial run's results.

``processes`` > 1 cuts the BAM where no template or UMI bundle crosses
(:func:`precise_mrd.io.bam_parts.plan_record_ranges`), groups and calls each part in its own
process, joins the consensus records and splits the evidence windows over the same pool. These
tests compare every output with the serial run's: the consensus records one by one, the metrics,
the sample call and the per-variant table.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pysam
import pytest

from precise_mrd.core.consensus import ConsensusParams
from precise_mrd.io.bam import count_records, iter_record_chunks
from precise_mrd.io.bam_parts import iter_part_records, plan_parts
from precise_mrd.pipeline.consensus import group_and_call_consensus
from precise_mrd.pipeline.parallel import group_and_call_consensus_in_parts, process_pool
from precise_mrd.pipeline.params import PipelineParams
from precise_mrd.pipeline.run import RunInputs, run_pipeline

DATA = Path(__file__).parents[2].parent / "shared" / "data" / "umi-tools"


@pytest.fixture(scope="module")
def three_contig_sample(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from precise_mrd.core.simulate import SimulationParams
    from precise_mrd.pipeline.simulation import simulate_sample

    params = SimulationParams.preset("smoke", seed=5, tumor_fraction=0.02, n_contigs=3)
    return simulate_sample(tmp_path_factory.mktemp("three_contigs"), params)


def _records(path: Path) -> list[str]:
    with pysam.AlignmentFile(str(path), "rb") as bam:
        return [record.to_string() for record in bam]


def _chunks_bytes(path: Path, part=None) -> bytes:  # type: ignore[no-untyped-def]
    return b"".join(chunk.tobytes() for chunk in iter_record_chunks(path, part))


def test_the_planned_parts_hold_every_record_once_in_order(three_contig_sample) -> None:  # type: ignore[no-untyped-def]
    bam = three_contig_sample.bam_path
    plan = plan_parts(bam, 4)
    assert len(plan.parts) == 4
    assert plan.n_safe_cuts >= 3
    assert plan.n_moved == 0  # simulated fragments: no distant mates
    pieces = [_chunks_bytes(bam, part.records) for part in plan.parts]
    assert all(pieces)
    assert b"".join(pieces) == _chunks_bytes(bam)
    counts = [count_records(np.frombuffer(piece, dtype=np.uint8)) for piece in pieces]
    assert sum(counts) == plan.n_records
    assert [part.records.n_records for part in plan.parts[:-1]] == counts[:-1]
    assert plan.parts[-1].records.n_records is None
    # no template's reads on both sides of a cut: each part's read names are its own
    names = [{record.query_name for record in _parse(piece, bam)} for piece in pieces]
    for left, right in itertools.combinations(names, 2):
        assert not left & right


def _parse(piece: bytes, bam: Path) -> list[pysam.AlignedSegment]:
    """The records of raw record bytes, through a BAM with the input's header."""
    from precise_mrd.io.bam import BgzfWriter, bam_header_bytes

    with pysam.AlignmentFile(str(bam), "rb") as source:
        header = source.header.to_dict()
    path = bam.parent / f".piece-{len(piece)}.bam"
    with BgzfWriter(path) as writer:
        writer.write(bam_header_bytes(header, bam.parent))
        writer.write(piece)
    try:
        with pysam.AlignmentFile(str(path), "rb") as parsed:
            return list(parsed)
    finally:
        path.unlink()


def _pair_bam(
    path: Path, rows: list[tuple[str, int, int, int, int, int]], umis: list[str] | None = None
) -> Path:
    """A BAM of 20-base reads from (name, contig, start, mate contig, mate start, flag) rows, on
    three 100 kb contigs, with UMI ``ACGTACGT`` or ``umis[i]``."""
    header = {
        "HD": {"VN": "1.6", "SO": "coordinate"},
        "SQ": [{"SN": name, "LN": 100_000} for name in ("c1", "c2", "c3")],
    }
    with pysam.AlignmentFile(str(path), "wb", header=header) as out:
        for i, (name, tid, pos, mate_tid, mate_pos, flag) in enumerate(rows):
            record = pysam.AlignedSegment(out.header)
            record.query_name, record.flag = name, flag
            record.reference_id, record.reference_start = tid, pos
            record.next_reference_id, record.next_reference_start = mate_tid, mate_pos
            record.mapping_quality, record.cigarstring = 60, "20M"
            record.query_sequence = "ACGTTGCA" * 2 + "ACGT"
            record.query_qualities = pysam.qualitystring_to_array("I" * 20)
            record.set_tag("RX", umis[i] if umis else "ACGTACGT")
            record.set_tag("MC", "20M")
            out.write(record)
    pysam.index(str(path))
    return path


FWD_R1 = 0x1 | 0x40 | 0x20  # paired, read 1, mate reverse
REV_R2 = 0x1 | 0x80 | 0x10  # paired, read 2, reverse


def test_a_distant_mate_is_read_with_the_part_of_its_earlier_mate(tmp_path: Path) -> None:
    rows = [
        ("p1", 0, 100, 0, 150, FWD_R1),
        ("p1", 0, 150, 0, 100, REV_R2),
        ("chimera", 0, 5000, 2, 300, FWD_R1),  # mate on c3
        ("p2", 1, 100, 1, 150, FWD_R1),
        ("p2", 1, 150, 1, 100, REV_R2),
        ("near", 1, 40_000, 1, 48_000, FWD_R1),  # 8 kb apart: not distant
        ("near", 1, 48_000, 1, 40_000, REV_R2),
        ("chimera", 2, 300, 0, 5000, REV_R2),
        ("p3", 2, 8000, 2, 8050, FWD_R1),
        ("p3", 2, 8050, 2, 8000, REV_R2),
    ]
    path = _pair_bam(tmp_path / "chimera.bam", rows)
    plan = plan_parts(path, 5)
    assert plan.n_moved == 1
    parts = [
        _parse(b"".join(chunk.tobytes() for chunk in iter_part_records(path, part)), path)
        for part in plan.parts
    ]
    # the chimera's mate on c3 moves to the chimera's part; the 8 kb pair stays one part
    assert [[r.query_name for r in part] for part in parts] == [
        ["p1", "p1"],
        ["chimera", "chimera"],
        ["p2", "p2"],
        ["near", "near"],
        ["p3", "p3"],
    ]
    assert [part.n_imports for part in plan.parts] == [0, 1, 0, 0, 0]
    assert [len(part.skip) for part in plan.parts] == [0, 0, 0, 1, 0]


def test_distant_molecules_called_in_parts_are_merged_into_place(tmp_path: Path) -> None:
    """Families of chimeric pairs (c1 <-> c3) beside local families at the same positions: the
    parts' consensus records equal the serial ones, in the same order."""
    rng = np.random.default_rng(3)
    reads: list[tuple[int, int, str, int, int, int, str]] = []
    for family in range(60):
        umi = "".join(rng.choice(list("ACGT"), 8))
        if family % 3 == 0:  # chimeric: R1 on c1, R2 on c3 at a spot local pairs also use
            ends = ((0, 1000 + 37 * family), (2, 500 + 10 * (family % 6)))
        else:
            here = (family % 3, 500 + 10 * (family % 6) + 40_000 * (family % 2))
            ends = (here, (here[0], here[1] + 60))
        for copy in range(1 + family % 3):
            name = f"f{family}c{copy}"
            (t1, p1), (t2, p2) = ends
            reads.append((t1, p1, name, t2, p2, FWD_R1, umi))
            reads.append((t2, p2, name, t1, p1, REV_R2, umi))
    reads.sort(key=lambda row: (row[0], row[1]))
    rows = [(name, t, p, mt, mp, flag) for t, p, name, mt, mp, flag, _ in reads]
    path = _pair_bam(tmp_path / "mixed.bam", rows, [row[-1] for row in reads])
    plan = plan_parts(path, 4)
    assert len(plan.parts) == 4
    assert plan.n_moved > 0
    params = ConsensusParams(min_reads=(1, 1, 0))
    serial = group_and_call_consensus(path, tmp_path / "serial.bam", params=params)
    with process_pool(2) as pool:
        parts = group_and_call_consensus_in_parts(
            path, tmp_path / "parts.bam", pool=pool, n_parts=4, params=params
        )
    assert parts == serial
    assert serial[1].n_consensus_reads_out == 120
    assert _records(tmp_path / "parts.bam") == _records(tmp_path / "serial.bam")


@pytest.mark.shared_data
def test_consensus_in_parts_equals_the_serial_consensus_on_real_reads(tmp_path: Path) -> None:
    """UMI-tools' real paired-end reads (455 contigs, UMIs in the read names): every record and
    count equal; more parts asked for than safe cuts allow is fine."""
    bam = tmp_path / "paired.bam"
    bam.write_bytes((DATA / "paired.bam").read_bytes())
    params = ConsensusParams(min_reads=(1, 1, 0))
    options = {"umi_from_read_name": True, "strategy": "directional"}
    serial = group_and_call_consensus(bam, tmp_path / "serial.bam", params=params, **options)
    plan = plan_parts(bam, 3, umi_from_read_name=True)
    assert len(plan.parts) == 3
    # 935 kept reads have mates > 10 kb away or on another contig: were they to forbid the cuts
    # between their mates, one cut would be left
    assert plan.n_safe_cuts > 20
    with process_pool(2) as pool:
        parts = group_and_call_consensus_in_parts(
            bam, tmp_path / "parts.bam", pool=pool, n_parts=3, params=params, **options
        )
    assert parts == serial
    serial_records = _records(tmp_path / "serial.bam")
    assert len(serial_records) > 50  # most molecules lack one end: the mates were left out
    assert _records(tmp_path / "parts.bam") == serial_records
    assert not list(tmp_path.glob(".parts.bam.parts-*"))  # the parts' scratch is gone


def test_the_whole_run_in_processes_equals_the_serial_run(
    three_contig_sample, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    sample = three_contig_sample
    inputs = RunInputs(
        reference_path=sample.reference_path,
        variants_path=sample.vcf_path,
        bam_path=sample.bam_path,
    )
    outputs = {}
    for processes in (1, 3):
        params = PipelineParams.from_mapping({"processes": processes})
        outputs[processes] = run_pipeline(inputs, params, tmp_path / f"p{processes}")
    serial, parallel = outputs[1], outputs[3]
    assert "3 parts" in (parallel.out_dir / "run.log").read_text()
    assert _records(parallel.artifacts["consensus_bam"]) == _records(
        serial.artifacts["consensus_bam"]
    )
    for key in ("summary", "grouping", "consensus", "evidence"):
        assert parallel.metrics[key] == serial.metrics[key], key
    assert serial.metrics["summary"]["molecules"] > 1000
    drop = {"config_hash"}  # NB: the configs differ in `processes`
    assert {k: v for k, v in parallel.sample_call.items() if k not in drop} == {
        k: v for k, v in serial.sample_call.items() if k not in drop
    }
    assert (parallel.out_dir / "variants.tsv").read_text() == (
        serial.out_dir / "variants.tsv"
    ).read_text()
    assert (
        json.loads((parallel.out_dir / "metrics.json").read_text())["evidence"]
        == (serial.metrics["evidence"])
    )
