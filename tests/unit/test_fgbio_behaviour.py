"""fgbio's consensus model, case by case (CallMolecularConsensusReads / CallDuplexConsensusReads).

Each row is one documented behaviour of fgbio's ``VanillaUmiConsensusCaller`` and
``DuplexConsensusCaller`` (their sources and unit tests, fulcrumgenomics/fgbio), named after it:
the input reads of one family (bases, one quality for every base), the options, and the expected
consensus bases, qualities, per-base depths (``cd``) and errors (``ce``). The numbers are worked
from fgbio's formulas in the comments, not read off our output. Differences kept on purpose are
listed in docs/internals.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pysam
import pytest

from precise_mrd.core.consensus import ConsensusParams, call_families, decode_bases, encode_bases
from precise_mrd.pipeline.consensus import call_consensus_bam


@dataclass(frozen=True)
class Case:
    reads: tuple[str, ...]
    qual: int
    bases: str
    quals: tuple[int, ...]
    depths: tuple[int, ...]
    errors: tuple[int, ...]
    options: dict[str, object] = field(default_factory=dict)
    min_depth: int = 1


CASES = {
    # one read: its quality combined (two trials) with the worse prior only, min(45, 40) = Q40:
    # 10^-3.7 + 10^-4 - 4/3 * 10^-7.7 = 2.995e-4 -> Q35.2 -> 35 (both priors: Q34)
    "single read: quality limited by the worse error-rate prior": Case(
        reads=("ACGT",), qual=37, bases="ACGT", quals=(35,) * 4, depths=(1,) * 4, errors=(0,) * 4
    ),
    # Q30 read: 1e-3 + 1e-4 - 4/3e-7 -> Q29.6 -> 29
    "single read Q30 at default rates": Case(
        reads=("AC",), qual=30, bases="AC", quals=(29, 29), depths=(1, 1), errors=(0, 0)
    ),
    # pre 30, post 45: the worse prior is Q30: 2 * 10^-3 - 4/3e-6 -> Q27.0 -> 26 (floor of 26.99)
    "single read: the worse prior may be the pre-UMI one": Case(
        reads=("A",),
        qual=30,
        bases="A",
        quals=(26,),
        depths=(1,),
        errors=(0,),
        options={"error_rate_pre_umi": 30, "error_rate_post_umi": 45},
    ),
    "single read: an N stays N with depth 0": Case(
        reads=("ANT",), qual=30, bases="ANT", quals=(29, 2, 29), depths=(1, 0, 1), errors=(0,) * 3
    ),
    # three agreeing Q30 reads reach the pre-UMI cap (Q45)
    "agreeing reads are capped by the pre-UMI error rate": Case(
        reads=("ACGT",) * 3,
        qual=30,
        bases="ACGT",
        quals=(45,) * 4,
        depths=(3,) * 4,
        errors=(0,) * 4,
    ),
    # a tie is a no-call and fgbio counts every raw base of the column as an error; the first
    # column: two Q30 reads give ~4e-7, plus the pre-UMI 3.16e-5 -> Q44.9 -> 44
    "a tie is N and all its raw bases are errors": Case(
        reads=("AA", "AC"), qual=30, bases="AN", quals=(44, 2), depths=(2, 2), errors=(0, 2)
    ),
    # min reads 4, three reads: every column below 4 raw bases is N with NotEnoughReadsQual 0
    "columns with fewer raw bases than min_reads are no-calls": Case(
        reads=("ACGT",) * 3,
        qual=30,
        bases="NNNN",
        quals=(0,) * 4,
        depths=(3,) * 4,
        errors=(0,) * 4,
        min_depth=4,
    ),
    # min reads 3: the last column has only 2 raw bases (the third read is shorter: padded N)
    "a short read leaves its columns to the longer reads and min_reads": Case(
        reads=("ACGT", "ACGT", "ACGN"),
        qual=30,
        bases="ACGN",
        quals=(45, 45, 45, 0),
        depths=(3, 3, 3, 2),
        errors=(0,) * 4,
        min_depth=3,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_fgbio_behaviour(name: str) -> None:
    case = CASES[name]
    params = ConsensusParams(**case.options)  # type: ignore[arg-type]
    bases = encode_bases([read.encode() for read in case.reads])
    quals = np.full(bases.shape, case.qual, dtype=np.uint8)
    result = call_families(bases, quals, np.array([0]), params, min_depth=case.min_depth)
    assert decode_bases(result.bases[0]) == case.bases
    assert tuple(result.quals[0].tolist()) == case.quals
    assert tuple(result.depths[0].tolist()) == case.depths
    assert tuple(result.errors[0].tolist()) == case.errors


def _duplex_bam(path: Path, n_b_r2: int) -> Path:
    """One duplex molecule (MI 0/A, 0/B) at 100-119 / 200-219: strand A has 3 read pairs,
    strand B 3 R1s and ``n_b_r2`` R2s."""
    header = {"HD": {"VN": "1.6", "SO": "coordinate"}, "SQ": [{"SN": "c1", "LN": 1000}]}
    rows = []
    for k in range(3):  # A: R1 forward at 100, R2 reverse at 200
        rows.append((f"a{k}", 0x1 | 0x2 | 0x40 | 0x20, 100, 200, "0/A"))
        rows.append((f"a{k}", 0x1 | 0x2 | 0x80 | 0x10, 200, 100, "0/A"))
    for k in range(3):  # B: R1 reverse at 200, R2 forward at 100
        rows.append((f"b{k}", 0x1 | 0x2 | 0x40 | 0x10, 200, 100, "0/B"))
        if k < n_b_r2:
            rows.append((f"b{k}", 0x1 | 0x2 | 0x80 | 0x20, 100, 200, "0/B"))
    rows.sort(key=lambda row: row[2])
    with pysam.AlignmentFile(str(path), "wb", header=header) as out:
        for name, flag, start, mate_start, mi in rows:
            record = pysam.AlignedSegment(out.header)
            record.query_name, record.flag = name, flag
            record.reference_id, record.reference_start = 0, start
            record.next_reference_id, record.next_reference_start = 0, mate_start
            record.mapping_quality, record.cigarstring = 60, "20M"
            record.query_sequence = "ACGTACGTACGTACGTACGT"
            record.query_qualities = pysam.qualitystring_to_array("?" * 20)
            record.set_tag("MI", mi)
            record.set_tag("RX", "AAA-CCC" if mi.endswith("A") else "CCC-AAA")
            out.write(record)
    return path


@pytest.mark.parametrize(("n_b_r2", "n_out"), [(3, 2), (1, 0)])
def test_duplex_min_reads_must_hold_at_both_ends(tmp_path: Path, n_b_r2: int, n_out: int) -> None:
    """min_reads (2, 2, 2): the R1 end has A/R1 x 3 + B/R2 x ``n_b_r2``, the R2 end A/R2 x 3 +
    B/R1 x 3. With one B/R2 the R1 end fails, and fgbio emits neither record."""
    bam = _duplex_bam(tmp_path / "grouped.bam", n_b_r2)
    stats = call_consensus_bam(bam, tmp_path / "c.bam", params=ConsensusParams(min_reads=(2, 2, 2)))
    assert stats.n_consensus_reads_out == n_out
    assert stats.n_molecules_filtered_min_reads == (1 if n_out == 0 else 0)


def test_single_end_reads_of_one_family_starting_apart_are_one_molecule(tmp_path: Path) -> None:
    """fgbio calls one consensus per MI. Fragment reads of one family that share their unclipped
    5' end but start 5 bases apart (a 5-base soft clip) are one molecule, not two with one MI."""
    header = {"HD": {"VN": "1.6", "SO": "coordinate"}, "SQ": [{"SN": "c1", "LN": 1000}]}
    path = tmp_path / "fragments.bam"
    with pysam.AlignmentFile(str(path), "wb", header=header) as out:
        for name, start, cigar in (("r1", 100, "20M"), ("r2", 100, "20M"), ("r3", 105, "5S15M")):
            record = pysam.AlignedSegment(out.header)
            record.query_name, record.flag = name, 0
            record.reference_id, record.reference_start = 0, start
            record.mapping_quality, record.cigarstring = 60, cigar
            record.query_sequence = "ACGTACGTACGTACGTACGT"
            record.query_qualities = pysam.qualitystring_to_array("?" * 20)
            record.set_tag("MI", "7")
            record.set_tag("RX", "AAACCC")
            out.write(record)
    stats = call_consensus_bam(path, tmp_path / "c.bam", params=ConsensusParams())
    assert stats.n_molecules == 1
    assert stats.n_consensus_reads_out == 1
    assert stats.n_reads_filtered_alignment == 1  # the clipped read is not the common alignment
