"""In-process FASTQ alignment on simulated read pairs with known origin.

Run as a script for the throughput figure:
``PYTHONPATH=src .venv/bin/python tests/integration/test_align.py 50000``.
"""

from __future__ import annotations

import gzip
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pysam
import pytest

from precise_mrd.core.errors import InputDataError, InputFileError
from precise_mrd.core.read_structure import ReadStructure
from precise_mrd.io.fasta import write_fasta
from precise_mrd.io.fastq import FastqPairWriter
from precise_mrd.pipeline.align import AlignStats, align_fastq_pair

UMI_LENGTH = 8
READ_LENGTH = 150
STRUCTURE = ReadStructure.parse(f"{UMI_LENGTH}M{READ_LENGTH - UMI_LENGTH}T")
_COMPLEMENT = str.maketrans("ACGT", "TGCA")


@dataclass(frozen=True)
class TruePair:
    """Where a simulated pair came from: R1's 5' end (0-based) and strand, and its UMIs."""

    chrom: str
    r1_five_prime: int
    r1_is_reverse: bool
    umi1: str
    umi2: str


def _random_bases(rng: np.random.Generator, n: int) -> str:
    return "".join(np.array(list("ACGT"))[rng.integers(0, 4, n)])


def _with_errors(rng: np.random.Generator, seq: str, error_rate: float) -> str:
    bases = np.array(list(seq))
    hit = rng.random(len(bases)) < error_rate
    bases[hit] = np.array(list("ACGT"))[rng.integers(0, 4, int(hit.sum()))]
    return "".join(bases)


def simulate_pairs(
    directory: Path,
    rng: np.random.Generator,
    n_pairs: int,
    contig_lengths: dict[str, int],
    error_rate: float = 0.005,
) -> tuple[Path, Path, Path, dict[str, TruePair]]:
    """A random reference and FR read pairs from it; UMIs are the first 8 bases of each read."""
    contigs = {name: _random_bases(rng, length) for name, length in contig_lengths.items()}
    reference_path = directory / "ref.fa"
    write_fasta(reference_path, contigs)
    names = list(contigs)
    template_length = READ_LENGTH - UMI_LENGTH
    truth: dict[str, TruePair] = {}
    r1_path, r2_path = directory / "reads_R1.fastq.gz", directory / "reads_R2.fastq.gz"
    quality = "I" * READ_LENGTH
    with FastqPairWriter(r1_path, r2_path) as writer:
        for index in range(n_pairs):
            chrom = names[int(rng.integers(0, len(names)))]
            fragment_length = int(np.clip(rng.normal(200, 40), template_length + 10, 400))
            start = int(rng.integers(0, len(contigs[chrom]) - fragment_length))
            top = contigs[chrom][start : start + fragment_length]
            bottom = top.translate(_COMPLEMENT)[::-1]
            is_reverse = bool(rng.random() < 0.5)
            first, second = (bottom, top) if is_reverse else (top, bottom)
            umi1, umi2 = _random_bases(rng, UMI_LENGTH), _random_bases(rng, UMI_LENGTH)
            seq1 = umi1 + _with_errors(rng, first[:template_length], error_rate)
            seq2 = umi2 + _with_errors(rng, second[:template_length], error_rate)
            name = f"pair{index}"
            writer.write(name, seq1, quality, seq2, quality)
            five_prime = start + fragment_length - 1 if is_reverse else start
            truth[name] = TruePair(chrom, five_prime, is_reverse, umi1, umi2)
    return r1_path, r2_path, reference_path, truth


def _align(directory: Path, n_pairs: int, threads: int = 1) -> tuple[AlignStats, Path, dict]:
    rng = np.random.default_rng(20240611)
    r1, r2, reference, truth = simulate_pairs(
        directory, rng, n_pairs, {"chrA": 60_000, "chrB": 40_000}
    )
    out = directory / "aligned.bam"
    stats = align_fastq_pair(
        r1,
        r2,
        reference_path=reference,
        read_structures=(STRUCTURE, STRUCTURE),
        out_bam_path=out,
        threads=threads,
    )
    return stats, out, truth


def _unclipped_five_prime(read: pysam.AlignedSegment) -> int:
    cigar = read.cigartuples or []
    if read.is_reverse:
        clip = cigar[-1][1] if cigar and cigar[-1][0] == pysam.CSOFT_CLIP else 0
        return int(read.reference_end) - 1 + clip
    clip = cigar[0][1] if cigar and cigar[0][0] == pysam.CSOFT_CLIP else 0
    return int(read.reference_start) - clip


@pytest.mark.parametrize("threads", [1, 2])
def test_alignment_places_simulated_pairs_and_keeps_umis(tmp_path: Path, threads: int) -> None:
    stats, out, truth = _align(tmp_path, 1500, threads=threads)
    assert stats.n_pairs == 1500
    assert stats.n_mapped_pairs >= 0.95 * 1500
    assert out.exists() and Path(f"{out}.bai").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files
    with pysam.AlignmentFile(str(out)) as bam:
        assert bam.header.to_dict()["HD"]["SO"] == "coordinate"
        records = list(bam.fetch(until_eof=True))
        assert bam.check_index()
        placed_unmapped = sum(1 for r in records if r.is_unmapped and r.reference_id >= 0)
        n_placed = bam.count("chrA") + bam.count("chrB")
        assert n_placed == 2 * stats.n_pairs - stats.n_unmapped + placed_unmapped
    assert len(records) == 3000  # unmapped reads are kept
    keys = [(r.reference_id, r.reference_start) for r in records if not r.is_unmapped]
    assert keys == sorted(keys)
    correct = 0
    for read in records:
        true = truth[read.query_name]
        assert read.get_tag("RX") == f"{true.umi1}-{true.umi2}"
        assert read.query_length == READ_LENGTH - UMI_LENGTH  # UMI bases removed
        if read.is_read1 and not read.is_unmapped:
            correct += (
                read.reference_name == true.chrom
                and read.is_reverse == true.r1_is_reverse
                and _unclipped_five_prime(read) == true.r1_five_prime
            )
    assert correct >= 0.95 * 1500
    proper = [r for r in records if r.is_proper_pair]
    assert len(proper) >= 0.95 * 3000
    for read in proper:
        assert read.has_tag("MC") and read.next_reference_id == read.reference_id
        assert read.template_length != 0
        assert read.mate_is_reverse != read.is_reverse


def test_read_fields_match_samtools_fixmate_view_of_mates(tmp_path: Path) -> None:
    """TLEN, MC and mate positions agree between the two records of every mapped pair."""
    _stats, out, _truth = _align(tmp_path, 300)
    by_name: dict[str, list[pysam.AlignedSegment]] = {}
    with pysam.AlignmentFile(str(out)) as bam:
        for read in bam.fetch(until_eof=True):
            by_name.setdefault(str(read.query_name), []).append(read)
    n_checked = 0
    for first, second in by_name.values():
        if first.is_unmapped or second.is_unmapped:
            continue
        assert first.template_length == -second.template_length
        assert first.next_reference_start == second.reference_start
        assert second.next_reference_start == first.reference_start
        assert first.get_tag("MC") == second.cigarstring
        assert first.get_tag("MQ") == second.mapping_quality
        left = min(first.reference_start, second.reference_start)
        right = max(int(first.reference_end), int(second.reference_end))
        assert abs(first.template_length) == right - left
        n_checked += 1
    assert n_checked >= 280


def test_unequal_fastq_pair_is_an_input_error_naming_the_short_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    r1, r2, reference, _truth = simulate_pairs(tmp_path, rng, 20, {"chrA": 5_000})
    lines = gzip.decompress(r2.read_bytes()).decode().splitlines(keepends=True)
    short_r2 = tmp_path / "short_R2.fastq"
    short_r2.write_text("".join(lines[:-4]))
    with pytest.raises(InputFileError, match=r"short_R2\.fastq: ended after 19 records"):
        align_fastq_pair(
            r1,
            short_r2,
            reference_path=reference,
            read_structures=(STRUCTURE, STRUCTURE),
            out_bam_path=tmp_path / "x.bam",
        )
    assert not (tmp_path / "x.bam").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_read_structure_longer_than_reads_is_an_input_error(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    r1, r2, reference, _truth = simulate_pairs(tmp_path, rng, 5, {"chrA": 5_000})
    too_long = ReadStructure.parse("8M200T")
    with pytest.raises(InputDataError, match=r"reads_R1\.fastq\.gz: record 1 .* 8M200T needs"):
        align_fastq_pair(
            r1,
            r2,
            reference_path=reference,
            read_structures=(too_long, STRUCTURE),
            out_bam_path=tmp_path / "x.bam",
        )
    assert not (tmp_path / "x.bam").exists()


def test_empty_fastq_pair_is_an_input_error(tmp_path: Path) -> None:
    rng = np.random.default_rng(10)
    _r1, _r2, reference, _truth = simulate_pairs(tmp_path, rng, 1, {"chrA": 5_000})
    empty1, empty2 = tmp_path / "e_R1.fq", tmp_path / "e_R2.fq"
    empty1.write_text("")
    empty2.write_text("")
    with pytest.raises(InputFileError, match=r"e_R1\.fq: contains no reads"):
        align_fastq_pair(
            empty1,
            empty2,
            reference_path=reference,
            read_structures=(STRUCTURE, STRUCTURE),
            out_bam_path=tmp_path / "x.bam",
        )
    assert not (tmp_path / "x.bam").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_missing_reference_is_an_input_error(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    r1, r2, _reference, _truth = simulate_pairs(tmp_path, rng, 5, {"chrA": 5_000})
    with pytest.raises(InputFileError, match=r"nope\.fa: reference FASTA does not exist"):
        align_fastq_pair(
            r1,
            r2,
            reference_path=tmp_path / "nope.fa",
            read_structures=(STRUCTURE, STRUCTURE),
            out_bam_path=tmp_path / "x.bam",
        )


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    for n_threads in (1, 2):
        with tempfile.TemporaryDirectory() as scratch:
            result, _out, _truth = _align(Path(scratch), n, threads=n_threads)
            print(
                f"threads={n_threads} pairs={result.n_pairs} mapped={result.n_mapped_pairs} "
                f"proper={result.n_proper_pairs} seconds={result.seconds:.2f} "
                f"pairs/s={result.pairs_per_second:,.0f}"
            )
