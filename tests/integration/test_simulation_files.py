"""The simulator's files, read back with pysam: formats, determinism and agreement with truth."""

from __future__ import annotations

import gzip
import json
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pysam
import pytest

from precise_mrd.core.simulate import SimulationParams
from precise_mrd.pipeline import simulation
from precise_mrd.pipeline.simulation import SimulationOutputs, simulate_sample

CLEAN = {
    "artifact_rate": 0.0,
    "pcr_error_rate": 0.0,
    "umi_error_rate": 0.0,
    "high_base_quality": 93,
    "low_quality_fraction_start": 0.0,
    "low_quality_fraction_end": 0.0,
}
TOP_FLAGS, BOTTOM_FLAGS = {99, 147}, {83, 163}


@dataclass(frozen=True)
class Read:
    name: str
    flag: int
    start: int
    end: int
    tlen: int
    sequence: str
    rx: str


def reads_of(path: Path) -> Iterator[Read]:
    with pysam.AlignmentFile(str(path), "rb") as bam:
        for r in bam:
            assert r.query_sequence is not None and r.reference_end is not None
            yield Read(
                r.query_name or "",
                r.flag,
                r.reference_start,
                r.reference_end,
                r.template_length,
                r.query_sequence,
                str(r.get_tag("RX")),
            )


Molecules = dict[tuple[int, int, str], list[tuple[str, str]]]


def molecules_at(path: Path, chrom: str, start0: int) -> Molecules:
    """(read name, base at ``start0``) per molecule, keyed by fragment start, end, UMI pair."""
    bases: Molecules = defaultdict(list)
    with pysam.AlignmentFile(str(path), "rb") as bam:
        for r in bam.fetch(chrom, start0, start0 + 1):
            assert r.query_sequence is not None and r.reference_end is not None
            fragment_start = min(r.reference_start, r.next_reference_start)
            a, b = str(r.get_tag("RX")).split("-")
            key = (
                fragment_start,
                fragment_start + abs(r.template_length),
                "-".join(sorted((a, b))),
            )
            bases[key].append((r.query_name or "", r.query_sequence[start0 - r.reference_start]))
    return bases


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> SimulationOutputs:
    out = tmp_path_factory.mktemp("smoke")
    return simulate_sample(out, SimulationParams.preset("smoke"), write_fastq=True)


def test_writes_every_file_and_nothing_else(smoke: SimulationOutputs) -> None:
    names = sorted(p.name for p in smoke.out_dir.iterdir())
    assert names == sorted(
        [
            "reference.fa",
            "reference.fa.fai",
            "reads.bam",
            "reads.bam.bai",
            "variants.vcf",
            "truth.json",
            "reads_R1.fastq.gz",
            "reads_R2.fastq.gz",
        ]
    )
    assert smoke.bam_index_path.exists() and smoke.reference_index_path.exists()


def test_same_seed_gives_identical_bytes_other_seed_differs(
    smoke: SimulationOutputs, tmp_path: Path
) -> None:
    again = simulate_sample(tmp_path / "again", SimulationParams.preset("smoke"), write_fastq=True)
    for path in smoke.out_dir.iterdir():
        assert path.read_bytes() == (again.out_dir / path.name).read_bytes(), path.name
    other = simulate_sample(tmp_path / "other", SimulationParams.preset("smoke", seed=1))
    for name in ("reads.bam", "reference.fa", "variants.vcf", "truth.json"):
        assert (other.out_dir / name).read_bytes() != (smoke.out_dir / name).read_bytes(), name


def test_bam_is_sorted_indexed_paired_and_tagged(smoke: SimulationOutputs) -> None:
    with pysam.AlignmentFile(str(smoke.bam_path), "rb") as bam:
        assert bam.header.to_dict()["HD"]["SO"] == "coordinate"
        assert bam.header.to_dict()["RG"][0]["ID"] == "SIM"
        records = list(bam)
        assert bam.mapped == len(records) == smoke.n_records == 2 * smoke.n_read_pairs
    keys = [(r.reference_id, r.reference_start) for r in records]
    assert keys == sorted(keys)
    mates: dict[str, list[pysam.AlignedSegment]] = defaultdict(list)
    for r in records:
        assert r.flag in TOP_FLAGS | BOTTOM_FLAGS
        assert r.mapping_quality == 60 and r.cigarstring == f"{r.query_length}M"
        assert r.has_tag("RX") and r.get_tag("RG") == "SIM"
        assert r.get_tag("MC") == f"{r.query_length}M"  # mates have equal, trimmed lengths
        assert r.query_qualities is not None and len(r.query_qualities) == r.query_length
        mates[r.query_name or ""].append(r)
    assert all(len(pair) == 2 for pair in mates.values())
    for first, second in mates.values():
        assert {first.is_read1, second.is_read1} == {True, False}
        assert first.next_reference_start == second.reference_start
        assert second.next_reference_start == first.reference_start
        assert first.template_length == -second.template_length != 0
        assert first.get_tag("RX") == second.get_tag("RX")
        forward = first if not first.is_reverse else second
        reverse = second if forward is first else first
        assert forward.template_length > 0 and not forward.is_reverse and reverse.is_reverse
        assert reverse.reference_end == forward.reference_start + forward.template_length
    # the index answers region queries exactly like a scan
    truth = json.loads(smoke.truth_path.read_text())
    for variant in truth["variants"][:3]:
        start0 = variant["pos"] - 1
        with pysam.AlignmentFile(str(smoke.bam_path), "rb") as bam:
            fetched = sum(1 for _ in bam.fetch(variant["chrom"], start0, start0 + 1))
        scanned = sum(
            1
            for r in records
            if r.reference_name == variant["chrom"]
            and r.reference_start <= start0 < (r.reference_end or 0)
        )
        assert fetched == scanned > 0


def test_reads_match_the_reference_and_vcf(smoke: SimulationOutputs) -> None:
    with pysam.FastaFile(str(smoke.reference_path)) as fasta:
        with pysam.VariantFile(str(smoke.vcf_path)) as vcf:
            records = list(vcf)
            for record in records:
                assert fasta.fetch(record.chrom, record.start, record.stop) == record.ref
                assert record.info["TAF"] == pytest.approx(0.5)
        mismatches = bases = 0
        for read in reads_of(smoke.bam_path):
            reference = fasta.fetch("chr1", read.start, read.end)
            mismatches += sum(a != b for a, b in zip(read.sequence, reference, strict=True))
            bases += len(reference)
    assert len(records) == 10
    assert 0 < mismatches / bases < 0.01  # sequencing errors, damage, PCR errors, variants


def test_duplex_pairs_carry_swapped_umis(smoke: SimulationOutputs) -> None:
    strands: dict[tuple[int, int], dict[str, set[str]]] = defaultdict(
        lambda: {"top": set(), "bottom": set()}
    )
    for read in reads_of(smoke.bam_path):
        if read.tlen > 0:
            strand = "top" if read.flag in TOP_FLAGS else "bottom"
            strands[(read.start, read.start + read.tlen)][strand].add(read.rx)
    both = [s for s in strands.values() if s["top"] and s["bottom"]]
    assert len(both) > 0.5 * len(strands)
    swapped = sum(
        any("-".join(reversed(rx.split("-"))) in s["bottom"] for rx in s["top"]) for s in both
    )
    assert swapped > 0.95 * len(both)


def test_truth_counts_match_the_reads(tmp_path: Path) -> None:
    params = SimulationParams.preset("smoke", tumor_fraction=0.2, **CLEAN)
    out = simulate_sample(tmp_path, params)
    truth = json.loads(out.truth_path.read_text())
    assert truth["tumor_fraction"] == 0.2 and "tumour" in truth["tumor_fraction_definition"]
    assert truth["read_structure"] == {"r1": "8M142T", "r2": "8M142T"}
    for variant in truth["variants"]:
        molecules = molecules_at(out.bam_path, variant["chrom"], variant["pos"] - 1)
        seen = [{base for _, base in reads} for reads in molecules.values()]
        alt = sum(variant["alt"] in bases for bases in seen)
        assert all(bases <= {variant["ref"], variant["alt"]} for bases in seen)
        assert all(len(bases) == 1 for bases in seen)  # error-free: all reads agree
        assert len(molecules) == variant["n_molecules_sequenced"]
        assert alt == variant["n_mutant_molecules_sequenced"]
    assert sum(v["n_mutant_molecules"] for v in truth["variants"]) > 50


def absorb_umi_errors(molecules: Molecules) -> Molecules:
    """Fold each single-pair molecule into a bigger one at the same fragment 1 UMI edit away."""

    def near(a: str, b: str) -> bool:
        return sum(x != y for x, y in zip(a, b, strict=True)) <= 1 or (
            sum(x != y for x, y in zip(a, "-".join(reversed(b.split("-"))), strict=True)) <= 1
        )

    def n_pairs(reads: list[tuple[str, str]]) -> int:
        return len({name for name, _ in reads})

    kept = {key: reads for key, reads in molecules.items() if n_pairs(reads) > 1}
    for (start, end, umi), bases in molecules.items():
        if n_pairs(bases) == 1:
            parent = next(
                (k for k in kept if k[:2] == (start, end) and near(k[2], umi)),
                (start, end, umi),
            )
            kept.setdefault(parent, []).extend(bases)
    return kept


def test_truth_counts_match_noisy_reads_within_errors(smoke: SimulationOutputs) -> None:
    truth = json.loads(smoke.truth_path.read_text())
    for variant in truth["variants"]:
        raw = molecules_at(smoke.bam_path, variant["chrom"], variant["pos"] - 1)
        molecules = absorb_umi_errors(raw)
        assert len(raw) > len(molecules)  # UMI errors were injected
        majority_alt = sum(
            Counter(b for _, b in reads).most_common(1)[0][0] == variant["alt"]
            for reads in molecules.values()
        )
        # after folding UMI errors back, counts agree up to rare two-error coincidences
        assert abs(len(molecules) - variant["n_molecules_sequenced"]) <= 2
        assert abs(majority_alt - variant["n_mutant_molecules_sequenced"]) <= 1


def test_family_sizes_and_fragment_lengths_from_the_bam(tmp_path: Path) -> None:
    params = SimulationParams.preset(
        "smoke", tumor_fraction=0.5, molecules_per_locus=600, mean_family_size=4.0, **CLEAN
    )
    out = simulate_sample(tmp_path, params)
    truth = json.loads(out.truth_path.read_text())
    families: Counter[tuple[int, int, str, bool]] = Counter()
    for read in reads_of(out.bam_path):
        if read.flag & 64:  # count pairs once, by R1
            start = read.start if read.tlen > 0 else read.end + read.tlen
            families[(start, abs(read.tlen), read.rx, read.flag in TOP_FLAGS)] += 1
    r, mu = params.family_size_dispersion, params.mean_family_size
    p_zero = (r / (r + mu)) ** r
    observed = np.mean(list(families.values()))
    assert observed == pytest.approx(mu / (1 - p_zero), rel=0.05)
    assert len(families) == pytest.approx(
        2 * truth["totals"]["n_molecules"] * (1 - p_zero), rel=0.03
    )
    # tumour (alt-carrying) molecules are shorter than the rest
    alt_lengths: list[int] = []
    ref_lengths: list[int] = []
    for variant in truth["variants"]:
        for (start, end, _), bases in molecules_at(
            out.bam_path, variant["chrom"], variant["pos"] - 1
        ).items():
            (alt_lengths if bases[0][1] == variant["alt"] else ref_lengths).append(end - start)
    assert len(alt_lengths) > 200
    assert np.median(alt_lengths) < np.median(ref_lengths) - 8


def test_damage_is_strand_specific_in_the_bam(tmp_path: Path) -> None:
    params = SimulationParams.preset(
        "smoke", tumor_fraction=0.0, n_variants=4, **{**CLEAN, "artifact_rate": 0.005}
    )
    out = simulate_sample(tmp_path, params)
    changes: dict[str, Counter[str]] = {"top": Counter(), "bottom": Counter()}
    with pysam.FastaFile(str(out.reference_path)) as fasta:
        contig = fasta.fetch("chr1")
    for read in reads_of(out.bam_path):
        strand = "top" if read.flag in TOP_FLAGS else "bottom"
        for offset, base in enumerate(read.sequence):
            ref = contig[read.start + offset]
            if base != ref:
                position = read.start + offset
                change = f"{ref}>{base}"
                if change == "C>T" and contig[position : position + 2] == "CG":
                    change += "CpG"
                if change == "G>A" and contig[position - 1 : position + 1] == "CG":
                    change += "CpG"
                changes[strand][change] += 1
    assert set(changes["top"]) == {"C>TCpG", "G>T"}
    assert set(changes["bottom"]) == {"G>ACpG", "C>A"}
    truth = json.loads(out.truth_path.read_text())
    assert truth["artifacts"]["n_damage_oxidation"] > 0
    assert truth["artifacts"]["n_damage_deamination"] > 0


def test_fastq_pairs_carry_the_umi_prefix(smoke: SimulationOutputs) -> None:
    assert smoke.fastq_r1_path is not None and smoke.fastq_r2_path is not None

    def records(path: Path) -> list[tuple[str, str, str]]:
        with gzip.open(path, "rt") as handle:
            lines = handle.read().splitlines()
        return [(lines[i][1:-2], lines[i + 1], lines[i + 3]) for i in range(0, len(lines), 4)]

    r1, r2 = records(smoke.fastq_r1_path), records(smoke.fastq_r2_path)
    assert len(r1) == len(r2) == smoke.n_read_pairs
    bam: dict[tuple[str, bool], Read] = {
        (read.name, bool(read.flag & 64)): read for read in reads_of(smoke.bam_path)
    }
    umi, length = 8, 8 + 142
    for (name1, seq1, qual1), (name2, seq2, qual2) in zip(r1, r2, strict=True):
        assert name1 == name2
        assert len(seq1) == len(qual1) == len(seq2) == len(qual2) == length
        record1, record2 = bam[(name1, True)], bam[(name1, False)]
        assert record1.rx == f"{seq1[:umi]}-{seq2[:umi]}"
        template = seq1[umi : umi + len(record1.sequence)]
        if record1.flag & 16:
            template = template[::-1].translate(str.maketrans("ACGT", "TGCA"))
        assert template == record1.sequence
        assert len(record2.sequence) == len(record1.sequence)


def test_a_crash_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_index(*args: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(simulation.pysam, "index", broken_index)
    with pytest.raises(OSError, match="disk full"):
        simulate_sample(tmp_path, SimulationParams.preset("smoke", n_variants=2))
    assert list(tmp_path.iterdir()) == []
