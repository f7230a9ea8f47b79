"""group_bam on small seeded paired-end BAMs built in code (duplex, skips, outputs)."""

from __future__ import annotations

import collections
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pysam
import pytest

from precise_mrd.core.errors import InputDataError, InputFileError
from precise_mrd.pipeline.group import GroupStats, group_bam

READ_LENGTH = 50
HEADER = {"HD": {"VN": "1.6", "SO": "coordinate"}, "SQ": [{"SN": "chr1", "LN": 1_000_000}]}


@dataclass(frozen=True)
class Molecule:
    start: int  # 0-based left end of the fragment
    length: int
    umi_a: str
    umi_b: str
    n_top: int  # read pairs from the top strand (R1 forward at the left end, RX "A-B")
    n_bottom: int  # read pairs from the bottom strand (R1 reverse at the right end, RX "B-A")


def write_pairs(
    path: Path, molecules: list[Molecule], *, extra: list[dict[str, object]] = ()
) -> Path:  # type: ignore[assignment]
    """Write the read pairs of ``molecules`` (plus raw ``extra`` records) coordinate-sorted."""
    records: list[dict[str, object]] = []
    serial = 0
    for molecule in molecules:
        left = molecule.start
        right = molecule.start + molecule.length - READ_LENGTH
        for is_top, n_pairs in ((True, molecule.n_top), (False, molecule.n_bottom)):
            umi = (
                f"{molecule.umi_a}-{molecule.umi_b}"
                if is_top
                else f"{molecule.umi_b}-{molecule.umi_a}"
            )
            for _ in range(n_pairs):
                name = f"t{serial}"
                serial += 1
                for is_read1 in (True, False):
                    at_left = is_read1 == is_top
                    flag = 0x1 | 0x2 | (0x40 if is_read1 else 0x80)
                    flag |= 0x20 if at_left else 0x10
                    records.append(
                        {
                            "name": name,
                            "flag": flag,
                            "pos": left if at_left else right,
                            "mate_pos": right if at_left else left,
                            "tlen": molecule.length if at_left else -molecule.length,
                            "umi": umi,
                        }
                    )
    records.extend(extra)
    records.sort(key=lambda r: (r["pos"], r["name"]))  # type: ignore[return-value]
    with pysam.AlignmentFile(str(path), "wb", header=HEADER) as out:
        for record in records:
            read = pysam.AlignedSegment(out.header)
            read.query_name = str(record["name"])
            read.flag = int(record["flag"])  # type: ignore[call-overload]
            read.reference_id = 0
            read.reference_start = int(record["pos"])  # type: ignore[call-overload]
            read.mapping_quality = int(record.get("mapq", 60))  # type: ignore[call-overload]
            read.cigarstring = str(record.get("cigar", f"{READ_LENGTH}M"))
            read.query_sequence = "A" * READ_LENGTH
            read.query_qualities = pysam.qualitystring_to_array("I" * READ_LENGTH)
            read.next_reference_id = 0
            read.next_reference_start = int(record["mate_pos"])  # type: ignore[call-overload]
            read.template_length = int(record["tlen"])  # type: ignore[call-overload]
            if record.get("umi"):
                read.set_tag("RX", str(record["umi"]))
            read.set_tag("MC", f"{READ_LENGTH}M")
            out.write(read)
    pysam.index(str(path))
    return path


def mi_by_template(path: Path) -> dict[str, set[str]]:
    result: dict[str, set[str]] = collections.defaultdict(set)
    with pysam.AlignmentFile(str(path)) as bam:
        for read in bam.fetch(until_eof=True):
            result[read.query_name].add(str(read.get_tag("MI")))
    return result


def random_umi(rng: np.random.Generator, n: int = 6) -> str:
    return "".join(rng.choice(list("ACGT"), n))


def test_duplex_strands_share_the_molecule_and_get_a_and_b(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    molecules = [
        Molecule(1000 + 7 * i, 160 + i, random_umi(rng), random_umi(rng), 3, 2) for i in range(20)
    ]
    bam = write_pairs(tmp_path / "in.bam", molecules)
    stats = group_bam(bam, tmp_path / "out.bam", strategy="paired")
    assert stats.n_molecules == 20
    assert stats.family_size_histogram == {5: 20}
    labels = mi_by_template(tmp_path / "out.bam")
    assert all(len(mi) == 1 for mi in labels.values())  # mates agree
    per_molecule: dict[str, set[str]] = collections.defaultdict(set)
    for (mi,) in labels.values():
        number, strand = mi.split("/")
        per_molecule[number].add(strand)
    assert len(per_molecule) == 20
    assert all(strands == {"A", "B"} for strands in per_molecule.values())
    # top-strand templates (R1 forward) are /A
    with pysam.AlignmentFile(str(tmp_path / "out.bam")) as out:
        for read in out.fetch(until_eof=True):
            if read.is_read1:
                assert str(read.get_tag("MI")).endswith("/B" if read.is_reverse else "/A")


def test_directional_keeps_strands_apart_and_absorbs_umi_errors(tmp_path: Path) -> None:
    molecule = Molecule(5000, 170, "AAAAAA", "CCCCCC", 4, 4)
    # one pair with an error in the A part, same position: absorbed (4 >= 2*1-1)
    error = Molecule(5000, 170, "AAAAAT", "CCCCCC", 1, 0)
    bam = write_pairs(tmp_path / "in.bam", [molecule, error])
    stats = group_bam(bam, tmp_path / "single.bam", strategy="directional")
    # non-duplex: the two strands are two bundles, each one molecule
    assert stats.n_bundles == 2
    assert stats.n_molecules == 2
    assert sorted(stats.family_size_histogram.items()) == [(4, 1), (5, 1)]
    duplex = group_bam(bam, tmp_path / "duplex.bam", strategy="paired")
    assert duplex.n_bundles == 1
    assert duplex.n_molecules == 1
    identity = group_bam(bam, tmp_path / "identity.bam", strategy="identity")
    assert identity.n_molecules == 3


def test_molecules_at_other_positions_stay_apart(tmp_path: Path) -> None:
    same_umi = [
        Molecule(100, 150, "ACGTAC", "GGTTAA", 2, 0),
        Molecule(101, 150, "ACGTAC", "GGTTAA", 2, 0),
    ]
    bam = write_pairs(tmp_path / "in.bam", same_umi)
    stats = group_bam(bam, tmp_path / "out.bam", strategy="edit")
    assert stats.n_molecules == 2


def test_soft_clips_are_undone_to_find_the_5_prime_end(tmp_path: Path) -> None:
    # a forward read at 105 with 5 soft-clipped bases starts (unclipped) at 100, like one at 100
    base = {"flag": 0, "mate_pos": -1, "tlen": 0, "umi": "ACGTAC"}
    extra = [
        {**base, "name": "plain", "pos": 100},
        {**base, "name": "clipped", "pos": 105, "cigar": f"5S{READ_LENGTH - 5}M"},
    ]
    bam = write_pairs(tmp_path / "in.bam", [], extra=extra)
    stats = group_bam(bam, tmp_path / "out.bam")
    assert stats.n_bundles == 1
    assert stats.n_molecules == 1


def test_skipped_reads_are_counted_by_reason(tmp_path: Path) -> None:
    base = {"mate_pos": -1, "tlen": 0, "umi": "ACGTAC"}
    extra = [
        {**base, "name": "sec", "pos": 10, "flag": 0x100},
        {**base, "name": "sup", "pos": 11, "flag": 0x800},
        {**base, "name": "qc", "pos": 12, "flag": 0x200},
        {**base, "name": "lowq", "pos": 13, "flag": 0, "mapq": 3},
        {**base, "name": "noumi", "pos": 14, "flag": 0, "umi": ""},
        {**base, "name": "ok", "pos": 15, "flag": 0},
    ]
    bam = write_pairs(tmp_path / "in.bam", [], extra=extra)
    stats = group_bam(bam, tmp_path / "out.bam", min_mapq=10)
    assert stats.n_reads_in == 6
    assert stats.n_reads_out == 1
    assert stats.n_reads_skipped_by_reason == {
        "unmapped": 0,
        "secondary": 1,
        "supplementary": 1,
        "qc_fail": 1,
        "low_mapq": 1,
        "no_umi": 1,
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "in.bam",
        "in.bam.bai",
        "out.bam",
        "out.bam.bai",
    ]


def test_group_out_tsv_has_umi_tools_columns(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    bam = write_pairs(
        tmp_path / "in.bam", [Molecule(200, 160, random_umi(rng), random_umi(rng), 2, 1)]
    )
    group_bam(bam, tmp_path / "out.bam", group_out_path=tmp_path / "g.tsv")
    lines = (tmp_path / "g.tsv").read_text().splitlines()
    assert lines[0].split("\t") == [
        "read_id",
        "contig",
        "position",
        "gene",
        "umi",
        "umi_count",
        "final_umi",
        "final_umi_count",
        "unique_id",
    ]
    assert len(lines) == 1 + 6


def test_non_duplex_umi_with_paired_strategy_is_refused(tmp_path: Path) -> None:
    base = {"flag": 0, "mate_pos": -1, "tlen": 0, "umi": "ACGTAC"}
    bam = write_pairs(tmp_path / "in.bam", [], extra=[{**base, "name": "r", "pos": 5}])
    with pytest.raises(InputDataError, match="not a duplex UMI"):
        group_bam(bam, tmp_path / "out.bam", strategy="paired")
    assert not (tmp_path / "out.bam").exists()


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="does not exist"):
        group_bam(tmp_path / "missing.bam", tmp_path / "out.bam")
    base = {"flag": 0, "mate_pos": -1, "tlen": 0, "umi": ""}
    bam = write_pairs(tmp_path / "in.bam", [], extra=[{**base, "name": "r", "pos": 5}])
    with pytest.raises(InputFileError, match="has no UMI"):
        group_bam(bam, tmp_path / "out.bam")
    with pytest.raises(ValueError, match="strategy must be one of"):
        group_bam(bam, tmp_path / "out.bam", strategy="unique")


def test_group_stats_validation() -> None:
    with pytest.raises(ValueError, match="must equal n_reads_in"):
        GroupStats(n_reads_in=3, n_reads_out=1, n_reads_skipped_by_reason={"unmapped": 1})
    with pytest.raises(ValueError, match="every molecule"):
        GroupStats(n_reads_in=1, n_reads_out=1, n_molecules=2, family_size_histogram={1: 1})


def test_regrouping_a_grouped_bam_keeps_one_mi_per_read(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    bam = write_pairs(
        tmp_path / "in.bam", [Molecule(300, 150, random_umi(rng), random_umi(rng), 2, 2)]
    )
    group_bam(bam, tmp_path / "once.bam", strategy="paired")
    group_bam(tmp_path / "once.bam", tmp_path / "twice.bam", strategy="directional")
    with pysam.AlignmentFile(str(tmp_path / "twice.bam")) as out:
        for read in out.fetch(until_eof=True):
            assert [tag for tag, _ in read.get_tags()].count("MI") == 1
            assert "/" not in str(read.get_tag("MI"))


def test_bam_cut_inside_a_block_is_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    molecules = [
        Molecule(100 + 3 * i, 150, random_umi(rng), random_umi(rng), 3, 3) for i in range(400)
    ]
    bam = write_pairs(tmp_path / "in.bam", molecules)
    data = bam.read_bytes()
    eof = data[-28:]
    bam.write_bytes(data[: len(data) // 2] + eof)
    with pytest.raises(InputFileError, match=r"in\.bam: is (truncated|corrupt)"):
        group_bam(bam, tmp_path / "out.bam")
    assert not (tmp_path / "out.bam").exists()


def test_empty_and_unmapped_only_bams_give_valid_empty_output(tmp_path: Path) -> None:
    empty = write_pairs(tmp_path / "empty.bam", [])
    stats = group_bam(empty, tmp_path / "out.bam")
    assert (stats.n_reads_in, stats.n_reads_out, stats.n_molecules) == (0, 0, 0)
    with pysam.AlignmentFile(str(tmp_path / "out.bam")) as out:
        assert out.check_index()
        assert list(out.fetch(until_eof=True)) == []
    base = {"mate_pos": -1, "tlen": 0, "umi": "ACGTAC", "flag": 0x4}
    unmapped = write_pairs(tmp_path / "unmapped.bam", [], extra=[{**base, "name": "u", "pos": 0}])
    stats = group_bam(unmapped, tmp_path / "out2.bam")
    assert stats.n_reads_skipped_by_reason["unmapped"] == 1
    assert stats.n_reads_out == 0


def test_reads_on_several_contigs_keep_their_order(tmp_path: Path) -> None:
    header = {
        "HD": {"VN": "1.6", "SO": "coordinate"},
        "SQ": [{"SN": "chr1", "LN": 10_000}, {"SN": "chr2", "LN": 10_000}],
    }
    path = tmp_path / "two.bam"
    with pysam.AlignmentFile(str(path), "wb", header=header) as out:
        for i, (tid, pos, umi) in enumerate([(0, 10, "AAAA"), (0, 10, "AAAT"), (1, 10, "AAAA")]):
            read = pysam.AlignedSegment(out.header)
            read.query_name = f"r{i}"
            read.reference_id = tid
            read.reference_start = pos
            read.cigarstring = "10M"
            read.query_sequence = "A" * 10
            read.set_tag("RX", umi)
            out.write(read)
    stats = group_bam(path, tmp_path / "out.bam", strategy="directional")
    # chr1:10 holds AAAA and AAAT (1 >= 2*1-1: one molecule); chr2:10 is another bundle
    assert (stats.n_bundles, stats.n_molecules) == (2, 2)
    with pysam.AlignmentFile(str(tmp_path / "out.bam")) as out:
        rows = [
            (r.reference_name, r.query_name, r.get_tag("MI")) for r in out.fetch(until_eof=True)
        ]
    assert [row[:2] for row in rows] == [("chr1", "r0"), ("chr1", "r1"), ("chr2", "r2")]
    assert rows[0][2] == rows[1][2] != rows[2][2]
