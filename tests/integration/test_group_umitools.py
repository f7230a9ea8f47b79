"""Golden agreement with UMI-tools 1.1.x on its own real reads (../shared/data/umi-tools).

What must agree is the partition of reads into groups (which reads share a group), not the group
numbers. Read names repeat in chr19.bam, so a partition is compared as the multiset of groups,
each group the sorted list of its read names.
"""

from __future__ import annotations

import collections
import gzip
from pathlib import Path

import pysam
import pytest

from precise_mrd.pipeline.group import GROUP_TSV_COLUMNS, group_bam

DATA = Path(__file__).parents[2].parent / "shared" / "data" / "umi-tools"

pytestmark = pytest.mark.shared_data

# (input BAM, options, UMI-tools' --group-out for the same reads)
GOLDEN = [
    ("chr19.bam", {"strategy": "directional", "umi_from_read_name": True}, "group_dir_py3.tsv.gz"),
    ("chr19.bam", {"strategy": "adjacency", "umi_from_read_name": True}, "group_adj_py3.tsv.gz"),
    ("chr19.bam", {"strategy": "identity", "umi_from_read_name": True}, "group_uniq_py3.tsv.gz"),
    ("chr19_tag.bam", {"strategy": "directional", "umi_tag": "RX"}, "group_dir_py3.tsv.gz"),
    ("chr19_tag.bam", {"strategy": "adjacency", "umi_tag": "RX"}, "group_adj_py3.tsv.gz"),
]


def groups_of(tsv_path: Path) -> dict[str, list[str]]:
    """unique_id -> read names, from a --group-out TSV (gzip or plain)."""
    opener = gzip.open if tsv_path.suffix == ".gz" else open
    groups: dict[str, list[str]] = collections.defaultdict(list)
    with opener(tsv_path, "rt") as handle:
        header = handle.readline().rstrip("\n").split("\t")
        assert tuple(header) == GROUP_TSV_COLUMNS
        for line in handle:
            fields = line.rstrip("\n").split("\t")
            groups[fields[8]].append(fields[0])
    return groups


def n_reads_in_differing_groups(ours: dict[str, list[str]], theirs: dict[str, list[str]]) -> int:
    """Reads whose group (as a sorted tuple of names) has no identical group on the other side."""
    our_groups = collections.Counter(tuple(sorted(g)) for g in ours.values())
    their_groups = collections.Counter(tuple(sorted(g)) for g in theirs.values())
    only_theirs = their_groups - our_groups
    return sum(len(group) * n for group, n in only_theirs.items())


@pytest.mark.parametrize(("bam_name", "options", "golden_name"), GOLDEN)
def test_partition_equals_umi_tools(
    tmp_path: Path, bam_name: str, options: dict[str, object], golden_name: str
) -> None:
    out_bam = tmp_path / "grouped.bam"
    tsv = tmp_path / "groups.tsv"
    stats = group_bam(DATA / bam_name, out_bam, group_out_path=tsv, **options)  # type: ignore[arg-type]
    theirs = groups_of(DATA / golden_name)
    ours = groups_of(tsv)
    n_reads = sum(len(g) for g in theirs.values())
    assert n_reads == 55_197 == stats.n_reads_in == stats.n_reads_out
    assert stats.n_molecules == len(theirs)
    differing = n_reads_in_differing_groups(ours, theirs)
    assert differing == 0, f"{differing} of {n_reads} reads are grouped differently"
    # the BAM carries the same partition in MI, stays sorted and is indexed
    by_mi: dict[str, list[str]] = collections.defaultdict(list)
    last = -1
    with pysam.AlignmentFile(str(out_bam)) as bam:
        assert bam.check_index()
        for read in bam.fetch(until_eof=True):
            assert read.reference_start >= last
            last = read.reference_start
            by_mi[str(read.get_tag("MI"))].append(read.query_name)
    assert n_reads_in_differing_groups(by_mi, theirs) == 0


def test_tag_and_read_name_give_the_same_partition(tmp_path: Path) -> None:
    group_bam(
        DATA / "chr19.bam",
        tmp_path / "a.bam",
        umi_from_read_name=True,
        group_out_path=tmp_path / "a.tsv",
    )
    group_bam(DATA / "chr19_tag.bam", tmp_path / "b.bam", group_out_path=tmp_path / "b.tsv")
    assert (
        n_reads_in_differing_groups(groups_of(tmp_path / "a.tsv"), groups_of(tmp_path / "b.tsv"))
        == 0
    )


def test_paired_end_mates_share_a_molecule(tmp_path: Path) -> None:
    out_bam = tmp_path / "paired_grouped.bam"
    stats = group_bam(DATA / "paired.bam", out_bam, umi_from_read_name=True, strategy="directional")
    skipped = stats.n_reads_skipped_by_reason
    assert skipped["secondary"] == 5601
    assert skipped["unmapped"] > 0
    mi_by_name: dict[str, set[str]] = collections.defaultdict(set)
    n_mates = collections.Counter[str]()
    with pysam.AlignmentFile(str(out_bam)) as bam:
        for read in bam.fetch(until_eof=True):
            assert not (read.is_secondary or read.is_supplementary or read.is_unmapped)
            mi_by_name[read.query_name].add(str(read.get_tag("MI")))
            n_mates[read.query_name] += 1
    assert sum(n_mates.values()) == stats.n_reads_out
    both = [name for name, n in n_mates.items() if n == 2]
    assert len(both) > 500
    assert all(len(mi_by_name[name]) == 1 for name in both)
    # templates, not reads, are counted: a family size is a number of read pairs or singletons
    assert sum(size * n for size, n in stats.family_size_histogram.items()) == len(n_mates)
