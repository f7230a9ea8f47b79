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
    # fgbio simplifies 5S15M to 20M: the clipped read is compatible and used
    assert stats.n_reads_filtered_alignment == 0
    assert stats.family_size_histogram == {3: 1}


_REFERENCE = "".join("ACGT"[(i * 7 + i // 3) % 4] for i in range(400))


def _fragments(path: Path, reads: list[tuple[int, str, bool]], mi: str = "7") -> Path:
    """Single-end reads of one family: (start, CIGAR, reverse), each read the reference's
    bases at the positions its CIGAR aligns (soft-clipped and inserted bases: ``T``)."""
    header = {"HD": {"VN": "1.6", "SO": "coordinate"}, "SQ": [{"SN": "c1", "LN": 400}]}
    with pysam.AlignmentFile(str(path), "wb", header=header) as out:
        for k, (start, cigar, reverse) in enumerate(sorted(reads)):
            record = pysam.AlignedSegment(out.header)
            record.query_name, record.flag = f"r{k}", 0x10 if reverse else 0
            record.reference_id, record.reference_start = 0, start
            record.mapping_quality, record.cigarstring = 60, cigar
            record.query_sequence = _aligned_bases(start, record.cigartuples or [])
            record.query_qualities = pysam.qualitystring_to_array("?" * record.query_length)
            record.set_tag("MI", mi)
            record.set_tag("RX", "AAACCC")
            out.write(record)
    return path


def _aligned_bases(start: int, cigar: list[tuple[int, int]]) -> str:
    bases, ref = [], start
    for op, length in cigar:
        if op in (0, 7, 8):
            bases.append(_REFERENCE[ref : ref + length])
        elif op in (1, 4):
            bases.append("T" * length)
        if op in (0, 2, 3, 7, 8):
            ref += length
    return "".join(bases)


def _records(path: Path) -> list[pysam.AlignedSegment]:
    with pysam.AlignmentFile(str(path)) as bam:
        return list(bam)


def test_most_common_alignment_keeps_every_compatible_read(tmp_path: Path) -> None:
    """fgbio's unit test: of 17 reads, the 11 whose simplified CIGAR is 25M1D25M (or a prefix of
    it) are kept: 5S20M1D25M (clip as M), 25M1D20M5S, and 25M1D20M5H (45 bases, a prefix); the
    2-base deletion, the insertion and the second deletion are filtered. Here the clipped reads
    start where their unclipped 5' end is the others' (as the group stage requires)."""
    kept = [(100, "25M1D25M", False)] * 5 + [(105, "5S20M1D25M", False)] * 2
    kept += [(100, "25M1D20M5S", False)] * 2 + [(100, "25M1D20M5H", False)] * 2
    filtered = [(100, "25M2D25M", False)] * 2 + [(100, "25M1I24M", False)] * 2
    filtered += [(100, "20M1D5M1D25M", False)] * 2
    bam = _fragments(tmp_path / "in.bam", kept + filtered)
    stats = call_consensus_bam(bam, tmp_path / "c.bam", params=ConsensusParams())
    assert stats.n_reads_filtered_alignment == 6
    assert stats.family_size_histogram == {11: 1}
    (record,) = _records(tmp_path / "c.bam")
    assert record.get_tag("cD") == 11


@pytest.mark.parametrize(
    ("min_reads", "length"),
    [(1, 30), (3, 25), (5, 20)],
)
@pytest.mark.parametrize("reverse", [False, True])
def test_reads_trimmed_to_different_lengths_lose_no_read(
    tmp_path: Path, min_reads: int, length: int, reverse: bool
) -> None:
    """Reads of one family cut at their 3' end (lengths 30, 30, 25, 25, 20) are all used; the
    consensus is as long as the ``min_reads``-th longest read (fgbio's consensusReadLength). A
    reverse-strand read's 5' end is its right end: the shorter reads start later, and so does
    a consensus cut to fewer bases."""
    if reverse:  # 5' end at 130 for all
        reads = [(130 - n, f"{n}M", True) for n in (30, 30, 25, 25, 20)]
    else:
        reads = [(100, f"{n}M", False) for n in (30, 30, 25, 25, 20)]
    bam = _fragments(tmp_path / "in.bam", reads)
    params = ConsensusParams(min_reads=(min_reads, min_reads, min_reads))
    stats = call_consensus_bam(bam, tmp_path / "c.bam", params=params)
    assert stats.n_reads_filtered_alignment == 0
    assert stats.family_size_histogram == {5: 1}
    (record,) = _records(tmp_path / "c.bam")
    start = 130 - length if reverse else 100
    assert (record.reference_start, record.cigarstring) == (start, f"{length}M")
    assert record.is_reverse == reverse
    assert record.query_sequence == _REFERENCE[start : start + length]
    # depth: how many reads cover a column, 5 at the 5' end, fewest at the consensus's 3' end
    assert (record.get_tag("cD"), record.get_tag("cM")) == (
        5,
        sum(n >= length for n in (30, 30, 25, 25, 20)),
    )


def test_strands_clipped_to_different_lengths_still_make_a_duplex(tmp_path: Path) -> None:
    """A duplex molecule whose B reads were trimmed 5 bases shorter: fgbio keeps both strands
    (the shorter alignment is a prefix) and calls a duplex as long as the shorter strand."""
    header = {"HD": {"VN": "1.6", "SO": "coordinate"}, "SQ": [{"SN": "c1", "LN": 400}]}
    rows = []
    for k in range(3):  # A: R1 forward at 100 (20 bases), R2 reverse ending at 220
        rows.append((f"a{k}", 0x1 | 0x2 | 0x40 | 0x20, 100, "20M", 200, "0/A"))
        rows.append((f"a{k}", 0x1 | 0x2 | 0x80 | 0x10, 200, "20M", 100, "0/A"))
    for k in range(3):  # B: 15 bases; R1 reverse ending at 220, R2 forward at 100
        rows.append((f"b{k}", 0x1 | 0x2 | 0x40 | 0x10, 205, "15M", 100, "0/B"))
        rows.append((f"b{k}", 0x1 | 0x2 | 0x80 | 0x20, 100, "15M", 205, "0/B"))
    rows.sort(key=lambda row: row[2])
    path = tmp_path / "duplex.bam"
    with pysam.AlignmentFile(str(path), "wb", header=header) as out:
        for name, flag, start, cigar, mate_start, mi in rows:
            record = pysam.AlignedSegment(out.header)
            record.query_name, record.flag = name, flag
            record.reference_id, record.reference_start = 0, start
            record.next_reference_id, record.next_reference_start = 0, mate_start
            record.mapping_quality, record.cigarstring = 60, cigar
            record.query_sequence = _aligned_bases(start, record.cigartuples or [])
            record.query_qualities = pysam.qualitystring_to_array("?" * record.query_length)
            record.set_tag("MI", mi)
            record.set_tag("RX", "AAA-CCC" if mi.endswith("A") else "CCC-AAA")
            out.write(record)
    stats = call_consensus_bam(path, tmp_path / "c.bam", params=ConsensusParams())
    assert stats.n_reads_filtered_alignment == 0
    assert stats.n_duplex_molecules == 1
    records = _records(tmp_path / "c.bam")
    assert [(r.reference_start, r.cigarstring) for r in records] == [(100, "15M"), (205, "15M")]
    for record in records:
        assert record.get_tag("aD") == 3 and record.get_tag("bD") == 3
        assert min(record.query_qualities) > 40  # duplex: both strands' evidence


def _one_pair(path: Path, r2_bases: str, r2_qual: int) -> Path:
    """One template of family 7: R1 forward at 100 (20 bases, Q30), R2 reverse at 110 (20
    bases), so reference 110-119 is read by both mates: R1's columns 10-19, R2's 0-9."""
    header = {"HD": {"VN": "1.6", "SO": "coordinate"}, "SQ": [{"SN": "c1", "LN": 400}]}
    with pysam.AlignmentFile(str(path), "wb", header=header) as out:
        for flag, start, mate, bases, qual in (
            (0x1 | 0x2 | 0x40 | 0x20, 100, 110, _REFERENCE[100:120], 30),
            (0x1 | 0x2 | 0x80 | 0x10, 110, 100, r2_bases, r2_qual),
        ):
            record = pysam.AlignedSegment(out.header)
            record.query_name, record.flag = "t1", flag
            record.reference_id, record.reference_start = 0, start
            record.next_reference_id, record.next_reference_start = 0, mate
            record.mapping_quality, record.cigarstring = 60, "20M"
            record.query_sequence = bases
            record.query_qualities = pysam.qualitystring_to_array(chr(qual + 33) * 20)
            record.set_tag("MI", "7")
            record.set_tag("RX", "AAACCC")
            out.write(record)
    return path


def _overlap_column(path: Path, overlap: str, tmp_path: Path) -> list[tuple[str, int]]:
    """(base, quality) of R1 and R2 consensus at reference 112."""
    out = tmp_path / f"{overlap}.bam"
    call_consensus_bam(path, out, params=ConsensusParams(overlap=overlap))
    seen = []
    for record in _records(out):
        column = record.get_reference_positions(full_length=True).index(112)
        seen.append((record.query_sequence[column], record.query_qualities[column]))
    return seen


def _other(base: str) -> str:
    return {"A": "C", "C": "G", "G": "T", "T": "A"}[base]


@pytest.mark.parametrize(
    ("r2_change", "r2_qual", "per_read_pair", "per_consensus"),
    [
        # agreement: fgbio adds the qualities (Q30 + Q30 = Q60) before the one-read consensus,
        # whose worse prior then caps it: 1e-6 + 1e-4 -> Q39.96 -> 39 in both mates; per
        # consensus each mate is a Q30 read alone (1e-3 + 1e-4 -> 29) and agreement keeps 29
        ("same", 30, ("ref", 39), ("ref", 29)),
        # disagreement Q30 vs Q20: the better base at Q10 in both mates (fgbio), then
        # 0.1 + 1e-4 -> Q9.996 -> 9; per consensus, two consensus calls that differ -> N
        ("differ", 20, ("ref", 9), ("N", 2)),
        # disagreement at equal qualities: N at Q2 in both, either way
        ("differ", 30, ("N", 2), ("N", 2)),
    ],
)
def test_overlapping_mates_per_read_pair_or_per_consensus(
    tmp_path: Path,
    r2_change: str,
    r2_qual: int,
    per_read_pair: tuple[str, int],
    per_consensus: tuple[str, int],
) -> None:
    r2 = list(_REFERENCE[110:130])
    if r2_change == "differ":
        r2[2] = _other(r2[2])  # reference 112
    bam = _one_pair(tmp_path / "pair.bam", "".join(r2), r2_qual)
    for overlap, (base, qual) in (
        ("per_read_pair", per_read_pair),
        ("per_consensus", per_consensus),
    ):
        expected = _REFERENCE[112] if base == "ref" else base
        assert _overlap_column(bam, overlap, tmp_path) == [(expected, qual)] * 2, overlap
