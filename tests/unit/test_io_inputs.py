"""Validated input readers: reference FASTA, variants (VCF/TSV/CSV), BED targets, paired FASTQ.

Every bad input must raise an InputError whose one-line message names the file and a fix.
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from precise_mrd.core.errors import InputDataError, InputError, InputFileError
from precise_mrd.core.read_structure import ReadStructure
from precise_mrd.core.records import Variant
from precise_mrd.io import fasta as fasta_module
from precise_mrd.io.bed import read_bed
from precise_mrd.io.fasta import ReferenceGenome, open_reference, write_fasta
from precise_mrd.io.fastq import FastqPairWriter, read_fastq_pairs
from precise_mrd.io.vcf import read_variant_set, read_variants, write_vcf

VCF_HEAD = "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"


def _one_line(error: InputError, file_name: str) -> str:
    message = str(error)
    assert "\n" not in message
    assert file_name in message
    assert "; fix: " in message
    return message


@pytest.fixture
def contigs() -> dict[str, str]:
    rng = np.random.default_rng(11)
    return {
        name: "".join(np.array(list("ACGT"))[rng.integers(0, 4, length)])
        for name, length in (("chr1", 500), ("chr2", 300))
    }


@pytest.fixture
def reference(tmp_path: Path, contigs: dict[str, str]) -> Iterator[ReferenceGenome]:
    write_fasta(tmp_path / "ref.fa", contigs)
    with open_reference(tmp_path / "ref.fa") as opened:
        yield opened


# --- reference FASTA -------------------------------------------------------------------------


def test_reference_reads_uppercase_and_builds_missing_index(tmp_path: Path) -> None:
    path = tmp_path / "lower.fa"
    path.write_text(">c1 some description\nacgtac\ngtn\n>c2\nTTTT\n")
    with open_reference(path) as reference:
        assert Path(f"{path}.fai").exists()
        assert reference.contig_lengths == {"c1": 9, "c2": 4}
        assert reference.contigs == ("c1", "c2")
        assert reference.fetch("c1", 4, 8) == "ACGT"
        assert reference.fetch("c1", -3, 2) == "AC"  # clipped to the contig
        assert reference.base_at("c1", 8) == "N"
        assert reference.trinucleotide("c1", 1) == "ACG"
        assert reference.trinucleotide("c1", 0) == "NAC"
        assert reference.trinucleotide("c2", 3) == "TTN"
        assert "c2" in reference and "c3" not in reference
        with pytest.raises(IndexError):
            reference.base_at("c2", 4)


def test_reference_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="does not exist") as caught:
        open_reference(tmp_path / "absent.fa")
    _one_line(caught.value, "absent.fa")


def test_reference_not_fasta(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("chr1 100 200\n")
    with pytest.raises(InputFileError, match="is not FASTA") as caught:
        open_reference(path)
    _one_line(caught.value, "notes.txt")


def test_reference_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty.fa"
    path.write_text("")
    with pytest.raises(InputFileError, match="is empty") as caught:
        open_reference(path)
    _one_line(caught.value, "empty.fa")


def test_reference_plain_gzip_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "ref.fa.gz"
    path.write_bytes(gzip.compress(b">c1\nACGT\n"))
    with pytest.raises(InputFileError, match="not with bgzip") as caught:
        open_reference(path)
    assert "bgzip" in _one_line(caught.value, "ref.fa.gz").split("; fix: ")[1]


def test_reference_without_index_in_readonly_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ref.fa"
    path.write_text(">c1\nACGT\n")
    # NB: tests may run as root, for whom chmod does not block writes; fake the permission check.
    monkeypatch.setattr(fasta_module.os, "access", lambda *_args: False)
    with pytest.raises(InputFileError, match="not writable") as caught:
        open_reference(path)
    assert "samtools faidx" in _one_line(caught.value, "ref.fa")
    assert not Path(f"{path}.fai").exists()


# --- variants ----------------------------------------------------------------------------------


def _vcf(contigs: dict[str, str], rows: list[str]) -> str:
    return VCF_HEAD + "".join(row + "\n" for row in rows)


def _snv(contigs: dict[str, str], chrom: str, pos: int) -> tuple[str, str]:
    ref = contigs[chrom][pos - 1]
    return ref, "ACGT"[("ACGT".index(ref) + 1) % 4]


def test_vcf_round_trip_through_writer(tmp_path: Path, reference: ReferenceGenome) -> None:
    ref, alt = reference.base_at("chr2", 9), "A" if reference.base_at("chr2", 9) != "A" else "C"
    written = [Variant("chr2", 10, ref, alt, 0.125)]
    write_vcf(tmp_path / "v.vcf", written, reference.contig_lengths)
    assert read_variants(tmp_path / "v.vcf", reference) == written


def test_vcf_af_sources_split_and_skips(
    tmp_path: Path, contigs: dict[str, str], reference: ReferenceGenome
) -> None:
    r1, a1 = _snv(contigs, "chr1", 10)
    r2, _ = _snv(contigs, "chr1", 20)
    alts2 = [b for b in "ACGT" if b != r2][:2]
    r3, a3 = _snv(contigs, "chr2", 5)
    r4, a4 = _snv(contigs, "chr1", 30)
    r5, a5 = _snv(contigs, "chr1", 40)
    r6, a6 = _snv(contigs, "chr1", 50)
    rows = [
        f"chr2\t5\t.\t{r3}\t{a3}\t.\tPASS\tDP=10\tGT:AF\t0/1:0.2",  # FORMAT AF
        f"chr1\t10\t.\t{r1}\t{a1}\t.\tPASS\tTAF=0.4;AF=0.9",  # TAF wins over AF
        f"chr1\t20\t.\t{r2}\t{alts2[0]},{alts2[1]}\t.\t.\tAF=0.3,0.1",  # split, AF Number=A
        f"chr1\t30\t.\t{r4}\t{a4}\t.\tPASS\t.",  # default AF
        f"chr1\t40\t.\t{r5}\t{a5}T\t.\tPASS\t.",  # indel
        f"chr1\t50\t.\t{r6}{contigs['chr1'][50]}\t{a6}A\t.\tPASS\t.",  # MNV
        f"chr1\t60\t.\t{contigs['chr1'][59]}\tA\t.\tLowQual\t.",  # filtered
    ]
    path = tmp_path / "tumour.vcf.gz"
    path.write_bytes(gzip.compress(_vcf(contigs, rows).encode()))
    result = read_variant_set(path, reference)
    assert result.variants == (
        Variant("chr1", 10, r1, a1, 0.4),
        Variant("chr1", 20, r2, alts2[0], 0.3),
        Variant("chr1", 20, r2, alts2[1], 0.1),
        Variant("chr1", 30, r4, a4, 0.5),
        Variant("chr2", 5, r3, a3, 0.2),
    )
    assert sorted(record.reason for record in result.skipped) == [
        "FILTER LowQual",
        "MNV",
        "indel",
    ]
    assert result.skipped_summary() == "1 FILTER LowQual, 1 MNV, 1 indel"


def test_read_variants_logs_skipped_records(
    tmp_path: Path,
    contigs: dict[str, str],
    reference: ReferenceGenome,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ref, alt = _snv(contigs, "chr1", 10)
    path = tmp_path / "v.vcf"
    path.write_text(
        _vcf(contigs, [f"chr1\t10\t.\t{ref}\t{alt}\t.\t.\t.", "chr1\t12\t.\tA\tAT\t.\t.\t."])
    )
    with caplog.at_level(logging.WARNING, logger="precise_mrd.io.vcf"):
        assert len(read_variants(path, reference)) == 1
    assert "skipped 1 record(s)" in caplog.text and "indel" in caplog.text


@pytest.mark.parametrize(("delimiter", "suffix"), [("\t", "tsv"), (",", "csv")])
def test_variant_table(
    tmp_path: Path,
    contigs: dict[str, str],
    reference: ReferenceGenome,
    delimiter: str,
    suffix: str,
) -> None:
    ref1, alt1 = _snv(contigs, "chr2", 7)
    ref2, alt2 = _snv(contigs, "chr1", 100)
    rows = [
        ["#Chrom", "Pos", "Ref", "Alt", "af", "gene"],
        ["chr2", "7", ref1.lower(), alt1, "0.05", "TP53"],
        ["chr1", "100", ref2, alt2, "", "KRAS"],
    ]
    path = tmp_path / f"variants.{suffix}"
    path.write_text("".join(delimiter.join(row) + "\n" for row in rows))
    assert read_variants(path, reference) == [
        Variant("chr1", 100, ref2, alt2, 0.5),
        Variant("chr2", 7, ref1, alt1, 0.05),
    ]


def test_variants_missing_file(tmp_path: Path, reference: ReferenceGenome) -> None:
    with pytest.raises(InputFileError, match="does not exist") as caught:
        read_variants(tmp_path / "none.vcf", reference)
    _one_line(caught.value, "none.vcf")


def test_variants_unreadable_truncated_gzip(
    tmp_path: Path, contigs: dict[str, str], reference: ReferenceGenome
) -> None:
    ref, alt = _snv(contigs, "chr1", 10)
    whole = gzip.compress(_vcf(contigs, [f"chr1\t10\t.\t{ref}\t{alt}\t.\t.\t."] * 50).encode())
    path = tmp_path / "cut.vcf.gz"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(InputFileError, match="truncated or corrupt") as caught:
        read_variants(path, reference)
    _one_line(caught.value, "cut.vcf.gz")


def test_variants_binary_file(tmp_path: Path, reference: ReferenceGenome) -> None:
    path = tmp_path / "reads.bam"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(InputFileError, match="not text") as caught:
        read_variants(path, reference)
    _one_line(caught.value, "reads.bam")


def test_variants_with_no_usable_snv(
    tmp_path: Path, contigs: dict[str, str], reference: ReferenceGenome
) -> None:
    path = tmp_path / "indels.vcf"
    path.write_text(_vcf(contigs, ["chr1\t12\t.\tA\tAT\t.\t.\t.", "chr1\t20\t.\tAC\tA\t.\t.\t."]))
    with pytest.raises(InputDataError, match=r"no usable SNV \(skipped: 2 indel\)") as caught:
        read_variants(path, reference)
    _one_line(caught.value, "indels.vcf")
    header_only = tmp_path / "header.vcf"
    header_only.write_text(VCF_HEAD)
    with pytest.raises(InputDataError, match="no usable SNV"):
        read_variants(header_only, reference)


def test_variants_contig_absent_suggests_chr_prefix(
    tmp_path: Path, contigs: dict[str, str], reference: ReferenceGenome
) -> None:
    ref, alt = _snv(contigs, "chr1", 10)
    path = tmp_path / "nochr.vcf"
    path.write_text(_vcf(contigs, [f"1\t10\t.\t{ref}\t{alt}\t.\t.\t."]))
    with pytest.raises(InputDataError) as caught:
        read_variants(path, reference)
    message = _one_line(caught.value, "nochr.vcf")
    assert "line 3: contig '1' is not in reference ref.fa (contigs: chr1, chr2)" in message
    assert "the reference calls it 'chr1': add the 'chr' prefix" in message


def test_variants_contig_absent_without_prefix_match(
    tmp_path: Path, contigs: dict[str, str], reference: ReferenceGenome
) -> None:
    path = tmp_path / "other.tsv"
    path.write_text("CHROM\tPOS\tREF\tALT\nchrX\t10\tA\tC\n")
    with pytest.raises(InputDataError, match="contig 'chrX' is not in reference") as caught:
        read_variants(path, reference)
    assert "same genome build" in _one_line(caught.value, "other.tsv")


def test_variants_ref_mismatch_names_position_and_bases(
    tmp_path: Path, contigs: dict[str, str], reference: ReferenceGenome
) -> None:
    true_ref, _ = _snv(contigs, "chr1", 42)
    wrong_ref = "ACGT"[("ACGT".index(true_ref) + 2) % 4]
    alt = next(b for b in "ACGT" if b not in (true_ref, wrong_ref))
    path = tmp_path / "hg19.vcf"
    path.write_text(_vcf(contigs, [f"chr1\t42\t.\t{wrong_ref}\t{alt}\t.\t.\t."]))
    with pytest.raises(InputDataError) as caught:
        read_variants(path, reference)
    message = _one_line(caught.value, "hg19.vcf")
    assert f"chr1:42 VCF REF {wrong_ref} vs reference {true_ref}" in message
    assert "genome build" in message


def test_variants_duplicate(
    tmp_path: Path, contigs: dict[str, str], reference: ReferenceGenome
) -> None:
    ref, alt = _snv(contigs, "chr1", 10)
    row = f"chr1\t10\t.\t{ref}\t{alt}\t.\t.\t."
    path = tmp_path / "dup.vcf"
    path.write_text(_vcf(contigs, [row, row]))
    with pytest.raises(InputDataError, match=r"line 4: chr1:10 .* duplicates line 3") as caught:
        read_variants(path, reference)
    _one_line(caught.value, "dup.vcf")


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ("chr1 10 . A C . . .", "line 3: malformed VCF record"),
        ("chr1\tten\t.\tA\tC\t.\t.\t.", "line 3: POS 'ten' is not an integer"),
        ("chr1\t10\t.\tA\tC\t.\t.\tTAF=1.5", "line 3: tumour AF 1.5 is outside"),
        ("chr1\t10\t.\tA\tQ\t.\t.\t.", "line 3: allele 'Q'"),
    ],
)
def test_variants_malformed_line(
    tmp_path: Path, contigs: dict[str, str], reference: ReferenceGenome, row: str, problem: str
) -> None:
    path = tmp_path / "bad.vcf"
    path.write_text(_vcf(contigs, [row]))
    with pytest.raises(InputError, match=problem) as caught:
        read_variants(path, reference)
    _one_line(caught.value, "bad.vcf")


def test_variants_unknown_format(tmp_path: Path, reference: ReferenceGenome) -> None:
    path = tmp_path / "list.txt"
    path.write_text("gene\tprotein\nTP53\tR175H\n")
    with pytest.raises(InputFileError, match="neither a VCF '#CHROM' header") as caught:
        read_variants(path, reference)
    _one_line(caught.value, "list.txt")


# --- BED -----------------------------------------------------------------------------------------


def test_bed_is_validated_sorted_and_merged(tmp_path: Path, reference: ReferenceGenome) -> None:
    path = tmp_path / "targets.bed.gz"
    text = "track name=x\n# comment\nchr2\t10\t20\nchr1\t5\t15\tamp1\nchr1\t12\t30\nchr1\t30\t40\n"
    path.write_bytes(gzip.compress(text.encode()))
    assert read_bed(path, reference) == [("chr1", 5, 40), ("chr2", 10, 20)]


@pytest.mark.parametrize(
    ("text", "error", "problem"),
    [
        ("chr3\t1\t5\n", InputDataError, "contig 'chr3' is not in reference"),
        ("chr1\t10\t5\n", InputDataError, "is empty or negative"),
        ("chr2\t10\t301\n", InputDataError, "end 301 is past the end of chr2"),
        ("chr1\t10\n", InputFileError, "line 1: malformed BED line"),
        ("chr1\tx\t10\n", InputFileError, "are not integers"),
        ("# nothing\n", InputDataError, "contains no intervals"),
    ],
)
def test_bed_errors(
    tmp_path: Path, reference: ReferenceGenome, text: str, error: type[InputError], problem: str
) -> None:
    path = tmp_path / "t.bed"
    path.write_text(text)
    with pytest.raises(error, match=problem) as caught:
        read_bed(path, reference)
    _one_line(caught.value, "t.bed")


def test_bed_missing_file(tmp_path: Path, reference: ReferenceGenome) -> None:
    with pytest.raises(InputFileError, match="does not exist"):
        read_bed(tmp_path / "x.bed", reference)


# --- paired FASTQ --------------------------------------------------------------------------------


def _write_pair(directory: Path, n: int, suffix: str = ".fastq.gz") -> tuple[Path, Path]:
    r1, r2 = directory / f"s_R1{suffix}", directory / f"s_R2{suffix}"
    with FastqPairWriter(r1, r2) as writer:
        for index in range(n):
            writer.write(
                f"read{index}", "ACGTACGTAC" + "T" * index, "I" * (10 + index), "GGCC", "FFFF"
            )
    return r1, r2


def test_fastq_pairs_read_plain_and_gzip_and_ignore_suffixes_and_comments(tmp_path: Path) -> None:
    r1, r2 = _write_pair(tmp_path, 3)
    pairs = list(read_fastq_pairs(r1, r2))
    assert [(a.name, b.name) for a, b in pairs] == [
        ("read0", "read0"),
        ("read1", "read1"),
        ("read2", "read2"),
    ]
    assert pairs[2][0].seq == "ACGTACGTACTT" and pairs[2][0].qual == "I" * 12
    plain1, plain2 = tmp_path / "p1.fq", tmp_path / "p2.fq"
    plain1.write_text("@m1 1:N:0:ACGT\nACGT\n+\nIIII\n")
    plain2.write_text("@m1/2 extra words\nTTTT\n+m1\nFFFF\n\n")
    ((read1, read2),) = list(read_fastq_pairs(plain1, plain2))
    assert (read1.name, read2.name, read2.seq) == ("m1", "m1", "TTTT")


@pytest.mark.parametrize("short_side", [1, 2])
def test_fastq_pair_unequal_record_counts(tmp_path: Path, short_side: int) -> None:
    r1, r2 = _write_pair(tmp_path, 5, suffix=".fastq")
    short = r1 if short_side == 1 else r2
    short.write_text("".join(short.read_text().splitlines(keepends=True)[:12]))
    with pytest.raises(InputFileError, match="ended after 3 records while") as caught:
        list(read_fastq_pairs(r1, r2))
    message = _one_line(caught.value, short.name)
    assert message.startswith(str(short))


def test_fastq_mismatched_names(tmp_path: Path) -> None:
    r1, r2 = tmp_path / "a_R1.fq", tmp_path / "a_R2.fq"
    r1.write_text("@x/1\nACGT\n+\nIIII\n@y/1\nACGT\n+\nIIII\n")
    r2.write_text("@x/2\nACGT\n+\nIIII\n@z/2\nACGT\n+\nIIII\n")
    with pytest.raises(
        InputFileError, match=r"record 2 is named 'z' but its mate in a_R1\.fq is 'y'"
    ):
        list(read_fastq_pairs(r1, r2))


def test_fastq_read_shorter_than_read_structure(tmp_path: Path) -> None:
    r1, r2 = _write_pair(tmp_path, 4)
    structures = (ReadStructure.parse("8M4T"), ReadStructure.parse("2M+T"))
    with pytest.raises(
        InputDataError,
        match=r"record 1 \(read0\) has 10 bases but read structure 8M4T needs at least 12",
    ) as caught:
        list(read_fastq_pairs(r1, r2, read_structures=structures))
    _one_line(caught.value, "s_R1.fastq.gz")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("@a\nACGT\nIIII\n", "record 1 .* is malformed"),
        ("read\nACGT\n+\nIIII\n", "record 1 .* is malformed"),
        ("@a\nACGT\n+\nIII\n", "record 1 \\(a\\) has 4 bases but 3 qualities"),
    ],
)
def test_fastq_malformed_records(tmp_path: Path, text: str, problem: str) -> None:
    good = tmp_path / "good.fq"
    good.write_text("@a\nACGT\n+\nIIII\n")
    bad = tmp_path / "bad.fq"
    bad.write_text(text)
    with pytest.raises(InputFileError, match=problem) as caught:
        list(read_fastq_pairs(good, bad))
    _one_line(caught.value, "bad.fq")


def test_fastq_missing_and_truncated_gzip(tmp_path: Path) -> None:
    r1, r2 = _write_pair(tmp_path, 200)
    with pytest.raises(InputFileError, match="FASTQ file does not exist"):
        read_fastq_pairs(r1, tmp_path / "gone.fq")
    data = r2.read_bytes()
    r2.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputFileError, match="gzip stream is truncated or corrupt") as caught:
        list(read_fastq_pairs(r1, r2))
    _one_line(caught.value, "s_R2.fastq.gz")
