"""End-to-end consensus on grouped BAMs simulated from known molecules (tests/builders.py)."""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pysam
import pytest

from precise_mrd.core.consensus import ConsensusParams
from precise_mrd.core.errors import InputDataError, InputFileError
from precise_mrd.pipeline.consensus import ConsensusStats, call_consensus_bam

sys.path.insert(0, str(Path(__file__).parents[1]))
from builders import GroupedBam, GroupedBamSpec, build_grouped_bam

SPEC = GroupedBamSpec(
    n_contigs=2,
    contig_length=4_000,
    n_loci=3,
    molecules_per_locus=40,
    read_length=100,
    min_fragment_length=120,
    max_fragment_length=260,
    mean_family_size=4.0,
    min_family_size=3,
    pcr_error_rate=0.002,
    strand_artefact_fraction=0.5,
    single_strand_fraction=0.2,
    minority_alignment_rate=0.03,
)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[GroupedBam, Path, ConsensusStats]:
    directory = tmp_path_factory.mktemp("consensus")
    grouped = build_grouped_bam(directory / "grouped.bam", SPEC, np.random.default_rng(2024))
    out = directory / "out" / "consensus.bam"
    stats = call_consensus_bam(grouped.path, out, params=ConsensusParams())
    return grouped, out, stats


def _records(path: Path) -> list[pysam.AlignedSegment]:
    with pysam.AlignmentFile(str(path)) as bam:
        return list(bam.fetch(until_eof=True))


def _truth_at(grouped: GroupedBam, record: pysam.AlignedSegment) -> list[tuple[int, int, str]]:
    """(query index, reference position, true base) of every aligned column of ``record``."""
    contig = grouped.contigs[record.reference_name]
    return [(q, r, contig[r]) for q, r in record.get_aligned_pairs(matches_only=True)]


def test_output_is_sorted_indexed_and_paired(run: tuple[GroupedBam, Path, ConsensusStats]) -> None:
    grouped, out, stats = run
    assert Path(f"{out}.bai").is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == ["consensus.bam", "consensus.bam.bai"]
    records = _records(out)
    with pysam.AlignmentFile(str(out)) as bam:
        assert bam.header.to_dict()["HD"]["SO"] == "coordinate"
        assert bam.count(grouped.molecules[0].contig) > 0  # the index answers region queries
    keys = [(r.reference_id, r.reference_start) for r in records]
    assert keys == sorted(keys)
    by_name: dict[str, list[pysam.AlignedSegment]] = defaultdict(list)
    for record in records:
        by_name[record.query_name].append(record)
    assert len(by_name) == len(grouped.molecules) == stats.n_molecules
    assert stats.n_consensus_reads_out == len(records) == 2 * len(grouped.molecules)
    for name, (first, second) in by_name.items():
        r1, r2 = (first, second) if first.is_read1 else (second, first)
        assert r1.is_read1 and r2.is_read2 and r1.is_proper_pair and r2.is_proper_pair
        assert r1.get_tag("MI") == name and "/" not in name
        assert r1.next_reference_start == r2.reference_start
        assert r2.next_reference_start == r1.reference_start
        assert r1.is_reverse != r2.is_reverse
        assert r1.mate_is_reverse == r2.is_reverse
        assert r1.template_length == -r2.template_length != 0
        molecule = grouped.molecules[int(name)]
        assert abs(r1.template_length) == len(molecule.sequence)
        assert r1.get_tag("RX") == f"{molecule.umi_a}-{molecule.umi_b}"


def test_consensus_equals_the_true_molecule(run: tuple[GroupedBam, Path, ConsensusStats]) -> None:
    grouped, out, _ = run
    n_called = n_no_call = n_wrong_confident = 0
    for record in _records(out):
        molecule = grouped.molecules[int(record.query_name)]
        artefact_positions = {molecule.start + p for p in molecule.strand_a_artefacts}
        quals = record.query_qualities
        for q, ref, truth in _truth_at(grouped, record):
            base = record.query_sequence[q]
            if ref in artefact_positions:
                continue  # checked in the duplex tests below
            if base == "N":
                n_no_call += 1
                continue
            n_called += 1
            if base != truth and quals[q] >= 20:
                n_wrong_confident += 1
    assert n_called > 20_000
    assert n_wrong_confident == 0
    assert n_no_call / (n_called + n_no_call) < 0.01


def test_duplex_removes_single_strand_artefacts(
    run: tuple[GroupedBam, Path, ConsensusStats],
) -> None:
    grouped, out, _ = run
    seen_duplex = seen_single = 0
    for record in _records(out):
        molecule = grouped.molecules[int(record.query_name)]
        if not molecule.strand_a_artefacts:
            continue
        position = molecule.start + molecule.strand_a_artefacts[0]
        column = {r: q for q, r in record.get_aligned_pairs(matches_only=True)}.get(position)
        if column is None:
            continue
        base = record.query_sequence[column]
        quality = record.query_qualities[column]
        truth = grouped.contigs[record.reference_name][position]
        if molecule.n_b > 0:
            seen_duplex += 1
            # strand A says artefact, strand B says truth: N, or a weak call either way
            assert base == "N" or quality <= 15, (record.query_name, base, quality)
        else:
            seen_single += 1
            # one strand only: the artefact is invisible and called confidently, as expected
            assert base != truth and quality >= 30
    assert seen_duplex >= 20 and seen_single >= 3


def test_depth_tags_match_the_input_reads(run: tuple[GroupedBam, Path, ConsensusStats]) -> None:
    grouped, out, stats = run
    # reads per (molecule, end, strand, cigar) in the grouped input
    family: Counter[tuple[str, int, str, str]] = Counter()
    with pysam.AlignmentFile(str(grouped.path)) as bam:
        for read in bam:
            molecule, strand = str(read.get_tag("MI")).split("/")
            end = int(read.is_read2) ^ int(strand == "B")
            family[(molecule, end, strand, read.cigarstring or "")] += 1
    n_checked = 0
    for record in _records(out):
        name, end = record.query_name, int(record.is_read2)
        # NB: 95M5S (a clipped 3' or 5' end) simplifies to 100M, so fgbio keeps those reads too
        counts = {s: family[(name, end, s, "100M")] + family[(name, end, s, "95M5S")] for s in "AB"}
        molecule = grouped.molecules[int(name)]
        a_depth, b_depth = record.get_tag("aD"), record.get_tag("bD")
        assert record.get_tag("cD") == a_depth + b_depth
        assert record.get_tag("cM") <= record.get_tag("cD")
        assert 0.0 <= record.get_tag("cE") < 0.1
        if molecule.n_b == 0:
            assert b_depth == 0 and record.get_tag("bM") == 0
        assert (a_depth, b_depth) == (counts["A"], counts["B"])
        n_checked += 1
    assert n_checked == stats.n_consensus_reads_out
    n_single = sum(1 for m in grouped.molecules if m.n_b == 0)
    assert stats.n_simplex_molecules == n_single
    assert stats.n_duplex_molecules == len(grouped.molecules) - n_single
    assert stats.n_reads_filtered_alignment == 0
    assert sum(stats.family_size_histogram.values()) == len(grouped.molecules)


def test_overlapping_mates_agree(run: tuple[GroupedBam, Path, ConsensusStats]) -> None:
    _, out, _ = run
    by_name: dict[str, list[pysam.AlignedSegment]] = defaultdict(list)
    for record in _records(out):
        by_name[record.query_name].append(record)
    n_shared = 0
    for first, second in by_name.values():
        one = {r: first.query_sequence[q] for q, r in first.get_aligned_pairs(matches_only=True)}
        for q, r in second.get_aligned_pairs(matches_only=True):
            if r in one:
                n_shared += 1
                assert one[r] == second.query_sequence[q]
    assert n_shared > 1_000


def test_conflicting_mates_become_n(tmp_path: Path) -> None:
    spec = replace(
        SPEC,
        n_loci=1,
        molecules_per_locus=3,
        strand_artefact_fraction=0.0,
        minority_alignment_rate=0.0,
        single_strand_fraction=0.0,
        pcr_error_rate=0.0,
        min_fragment_length=150,
        max_fragment_length=150,
    )
    grouped = build_grouped_bam(tmp_path / "g.bam", spec, np.random.default_rng(3))
    molecule = grouped.molecules[0]
    position = molecule.start + 75  # covered by both ends of a 150-bp fragment with 100-bp reads
    truth = grouped.contigs[molecule.contig][position]
    other = "A" if truth != "A" else "C"
    edited = tmp_path / "edited.bam"
    with (
        pysam.AlignmentFile(str(grouped.path)) as bam,
        pysam.AlignmentFile(str(edited), "wb", template=bam) as writer,
    ):
        for read in bam:
            mi, strand = str(read.get_tag("MI")).split("/")
            end = int(read.is_read2) ^ int(strand == "B")
            if mi == str(molecule.molecule_id) and end == 1:  # every read of the R2 end
                column = position - read.reference_start
                sequence, quals = read.query_sequence or "", read.query_qualities
                read.query_sequence = sequence[:column] + other + sequence[column + 1 :]
                quals[column] = 40
                read.query_qualities = quals
            writer.write(read)
    out = tmp_path / "c.bam"
    call_consensus_bam(edited, out, params=ConsensusParams())
    n_conflicts = 0
    for record in _records(out):
        column = {r: q for q, r in record.get_aligned_pairs(matches_only=True)}.get(position)
        if record.query_name == str(molecule.molecule_id):
            assert column is not None
            assert record.query_sequence[column] == "N"
            assert record.query_qualities[column] == 2
            n_conflicts += 1
        elif column is not None:
            assert record.query_sequence[column] == truth
    assert n_conflicts == 2  # the R1 and the R2 record of the edited molecule


def test_min_reads_filters_molecules(tmp_path: Path) -> None:
    spec = replace(SPEC, minority_alignment_rate=0.0, min_family_size=1, mean_family_size=2.5)
    grouped = build_grouped_bam(tmp_path / "g.bam", spec, np.random.default_rng(9))
    params = ConsensusParams(min_reads=(4, 2, 1))
    stats = call_consensus_bam(grouped.path, tmp_path / "c.bam", params=params)
    expected = [
        m.n_a + m.n_b >= 4 and max(m.n_a, m.n_b) >= 2 and min(m.n_a, m.n_b) >= 1
        for m in grouped.molecules
    ]
    assert 0 < sum(expected) < len(expected)
    assert stats.n_molecules_filtered_min_reads == expected.count(False)
    names = {r.query_name for r in _records(tmp_path / "c.bam")}
    assert names == {
        str(m.molecule_id) for m, ok in zip(grouped.molecules, expected, strict=True) if ok
    }
    assert stats.duplex_family_size_histogram == dict(
        sorted(Counter((m.n_a, m.n_b) for m in grouped.molecules).items())
    )


def test_single_end_simplex(tmp_path: Path) -> None:
    spec = replace(
        SPEC,
        is_paired=False,
        is_duplex=False,
        strand_artefact_fraction=0.0,
        minority_alignment_rate=0.0,
        single_strand_fraction=0.0,
    )
    grouped = build_grouped_bam(tmp_path / "g.bam", spec, np.random.default_rng(5))
    out = tmp_path / "c.bam"
    stats = call_consensus_bam(grouped.path, out, params=ConsensusParams(), threads=2)
    records = _records(out)
    assert len(records) == len(grouped.molecules) == stats.n_simplex_molecules
    for record in records:
        assert not record.is_paired and not record.has_tag("aD")
        molecule = grouped.molecules[int(record.query_name)]
        assert record.reference_start == molecule.start
        assert record.get_tag("cD") == molecule.n_a
        called = [
            (record.query_sequence[q], t)
            for q, _, t in _truth_at(grouped, record)
            if record.query_sequence[q] != "N"
        ]
        assert sum(b != t for b, t in called) == 0


def test_bad_inputs_raise_precise_errors(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="does not exist"):
        call_consensus_bam(tmp_path / "missing.bam", tmp_path / "c.bam", params=ConsensusParams())
    not_bam = tmp_path / "x.bam"
    not_bam.write_text("hello")
    with pytest.raises(InputFileError, match="not a readable BAM"):
        call_consensus_bam(not_bam, tmp_path / "c.bam", params=ConsensusParams())
    header = {"HD": {"VN": "1.6", "SO": "coordinate"}, "SQ": [{"SN": "chr1", "LN": 1000}]}
    for problem, positions, tag in (
        ("not coordinate-sorted", [500, 100], True),
        ("no MI tag", [100, 500], False),
    ):
        path = tmp_path / f"bad_{tag}.bam"
        with pysam.AlignmentFile(str(path), "wb", header=header) as writer:
            for i, pos in enumerate(positions):
                read = pysam.AlignedSegment(writer.header)
                read.query_name, read.flag, read.reference_id = f"r{i}", 0, 0
                read.reference_start, read.cigarstring = pos, "4M"
                read.query_sequence, read.query_qualities = (
                    "ACGT",
                    pysam.qualitystring_to_array("IIII"),
                )
                if tag:
                    read.set_tag("MI", str(i))
                writer.write(read)
        with pytest.raises((InputFileError, InputDataError), match=problem):
            call_consensus_bam(path, tmp_path / "c.bam", params=ConsensusParams())
    assert not (tmp_path / "c.bam").exists()
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_overlap_reconciliation_follows_the_cigar_through_deletions_and_insertions() -> None:
    from precise_mrd.pipeline.consensus_alignment import CigarTable as _CigarTable
    from precise_mrd.pipeline.consensus_batch import _reconcile_pairs

    cigars = _CigarTable()
    # R1 50M at 100 covers 100..149; R2 at 130: 10M (130..139) 2D 5M (142..146) 3I 32M (147..178)
    ids = np.array([cigars.intern("50M"), cigars.intern("10M2D5M3I32M")])
    starts = np.array([100, 130])
    lengths = np.array([50, 50])
    rng = np.random.default_rng(1)
    bases = np.repeat(rng.integers(0, 4, size=(1, 60)).astype(np.uint8), 2, axis=0)
    r1_ref = 100 + np.arange(50)
    r2_query_of_ref = {130 + i: i for i in range(10)}
    r2_query_of_ref |= {142 + i: 10 + i for i in range(5)}
    r2_query_of_ref |= {147 + i: 18 + i for i in range(32)}
    for col, ref in enumerate(r1_ref):  # make R2 carry R1's bases at every shared position
        if ref in r2_query_of_ref:
            bases[1, r2_query_of_ref[ref]] = bases[0, col]
    conflict_ref = 143
    bases[1, r2_query_of_ref[conflict_ref]] = (bases[0, conflict_ref - 100] + 1) % 4
    quals = np.full((2, 60), 40, dtype=np.uint8)
    depths = np.full((2, 60), 3, dtype=np.int32)
    before = bases.copy()
    _reconcile_pairs(np.array([0]), starts, ids, lengths, cigars, bases, quals, depths)
    changed = np.argwhere(bases != before)
    assert sorted(map(tuple, changed.tolist())) == [(0, 43), (1, r2_query_of_ref[conflict_ref])]
    assert bases[0, 43] == bases[1, 11] == 4 and quals[0, 43] == quals[1, 11] == 2
    # the inserted R2 bases (query 15..17) and the R1 bases over the deletion are untouched
    assert np.array_equal(bases[1, 15:18], before[1, 15:18])
    assert np.array_equal(bases[0, 40:42], before[0, 40:42])
