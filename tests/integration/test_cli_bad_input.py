"""Bad input gets one line naming the file and the fix, exit status 2, no traceback, no output.

One test per kind of mistake a user makes, run through the real CLI entry point.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from typing import Any

import pysam
import pytest

from clitools import assert_fix_names_only_real_options, run_args, run_cli
from precise_mrd.cli_support import EXIT_USER_ERROR


def _assert_clean_user_error(result: Any, *, names: str, out: Path) -> None:
    assert result.exit_code == EXIT_USER_ERROR, result.output
    message = result.stderr.strip()
    assert message.startswith("error: "), message
    assert "\n" not in message, f"expected one line, got: {message}"
    assert "Traceback" not in result.output + result.stderr
    assert names in message, f"{names!r} not named in: {message}"
    assert "fix:" in message
    assert_fix_names_only_real_options(result.cli_args[0], message)
    assert not out.exists() or not any(out.iterdir()), "partial output left behind"
    leftovers = [p.name for p in out.parent.iterdir() if ".partial-" in p.name]
    assert leftovers == []


def _write_bam_variant(
    source: Path, target: Path, *, keep_tags: bool = True, reverse: bool = False
) -> Path:
    with pysam.AlignmentFile(str(source), "rb") as reader:
        header = reader.header.to_dict()
        records = list(reader)
    if reverse:
        records.reverse()
        header["HD"]["SO"] = "unsorted"
    with pysam.AlignmentFile(str(target), "wb", header=header) as writer:
        for record in records:
            if not keep_tags:
                record.set_tag("RX", None)
            writer.write(record)
    return target


def test_missing_reads_file(smoke_sample: Any, tmp_path: Path) -> None:
    missing = tmp_path / "nope.bam"
    result = run_cli(run_args(smoke_sample, tmp_path / "out", bam=missing))
    _assert_clean_user_error(result, names="nope.bam", out=tmp_path / "out")


def test_unreadable_reference_is_a_directory(smoke_sample: Any, tmp_path: Path) -> None:
    directory = tmp_path / "ref_dir.fa"
    directory.mkdir()
    result = run_cli(run_args(smoke_sample, tmp_path / "out", reference=directory))
    _assert_clean_user_error(result, names="ref_dir.fa", out=tmp_path / "out")


def test_file_that_is_not_a_bam(smoke_sample: Any, tmp_path: Path) -> None:
    fake = tmp_path / "fake.bam"
    fake.write_text("this is not a BAM file\n")
    result = run_cli(run_args(smoke_sample, tmp_path / "out", bam=fake))
    _assert_clean_user_error(result, names="fake.bam", out=tmp_path / "out")


def test_bam_without_umis(smoke_sample: Any, tmp_path: Path) -> None:
    bam = _write_bam_variant(smoke_sample.bam_path, tmp_path / "no_umi.bam", keep_tags=False)
    pysam.index(str(bam))
    result = run_cli(run_args(smoke_sample, tmp_path / "out", bam=bam))
    _assert_clean_user_error(result, names="no_umi.bam", out=tmp_path / "out")
    assert "umi" in result.stderr.lower()


def test_unsorted_bam(smoke_sample: Any, tmp_path: Path) -> None:
    bam = _write_bam_variant(smoke_sample.bam_path, tmp_path / "unsorted.bam", reverse=True)
    result = run_cli(run_args(smoke_sample, tmp_path / "out", bam=bam))
    _assert_clean_user_error(result, names="unsorted.bam", out=tmp_path / "out")
    assert "sort" in result.stderr.lower()


def test_truncated_bam(smoke_sample: Any, tmp_path: Path) -> None:
    data = Path(smoke_sample.bam_path).read_bytes()
    truncated = tmp_path / "truncated.bam"
    truncated.write_bytes(data[: len(data) // 2])
    result = run_cli(run_args(smoke_sample, tmp_path / "out", bam=truncated))
    _assert_clean_user_error(result, names="truncated.bam", out=tmp_path / "out")


def _rewrite_vcf(source: Path, target: Path, edit: Any) -> Path:
    lines = source.read_text().splitlines()
    body = [edit(line) if not line.startswith("#") else line for line in lines]
    target.write_text("\n".join(line for line in body if line is not None) + "\n")
    return target


def test_vcf_contig_absent_from_reference(smoke_sample: Any, tmp_path: Path) -> None:
    vcf = _rewrite_vcf(
        smoke_sample.vcf_path,
        tmp_path / "other_contig.vcf",
        lambda line: "chrUnknown\t" + line.split("\t", 1)[1],
    )
    result = run_cli(run_args(smoke_sample, tmp_path / "out", variants=vcf))
    _assert_clean_user_error(result, names="other_contig.vcf", out=tmp_path / "out")
    assert "chrUnknown" in result.stderr


def test_vcf_ref_not_matching_reference(smoke_sample: Any, tmp_path: Path) -> None:
    def swap_ref(line: str) -> str:
        fields = line.split("\t")
        fields[3] = {"A": "C", "C": "G", "G": "T", "T": "A"}[fields[3]]
        if fields[4] == fields[3]:
            fields[4] = {"A": "C", "C": "G", "G": "T", "T": "A"}[fields[3]]
        return "\t".join(fields)

    vcf = _rewrite_vcf(smoke_sample.vcf_path, tmp_path / "bad_ref.vcf", swap_ref)
    result = run_cli(run_args(smoke_sample, tmp_path / "out", variants=vcf))
    _assert_clean_user_error(result, names="bad_ref.vcf", out=tmp_path / "out")


def test_empty_variant_list(smoke_sample: Any, tmp_path: Path) -> None:
    vcf = _rewrite_vcf(smoke_sample.vcf_path, tmp_path / "empty.vcf", lambda line: None)
    result = run_cli(run_args(smoke_sample, tmp_path / "out", variants=vcf))
    _assert_clean_user_error(result, names="empty.vcf", out=tmp_path / "out")


def _fastq_args(sample: Any, r1: Path, r2: Path, out: Path, structure: str) -> list[str]:
    return [
        "run",
        "--fastq",
        str(r1),
        str(r2),
        "--read-structure",
        structure,
        "--reference",
        str(sample.reference_path),
        "--variants",
        str(sample.vcf_path),
        "--out",
        str(out),
    ]


def _read_structure_of(sample: Any) -> str:
    truth = json.loads(Path(sample.truth_path).read_text())
    umi_length = truth["params"]["umi_length"]
    return f"{umi_length}M+T {umi_length}M+T"


def test_fastq_pair_of_unequal_length(smoke_sample: Any, tmp_path: Path) -> None:
    r2_short = tmp_path / "short_R2.fastq.gz"
    with gzip.open(smoke_sample.fastq_r2_path, "rt") as source, gzip.open(r2_short, "wt") as target:
        lines = source.read().splitlines()
        target.write("\n".join(lines[: len(lines) // 2 // 4 * 4]) + "\n")
    args = _fastq_args(
        smoke_sample,
        smoke_sample.fastq_r1_path,
        r2_short,
        tmp_path / "out",
        _read_structure_of(smoke_sample),
    )
    result = run_cli(args)
    _assert_clean_user_error(result, names="short_R2.fastq.gz", out=tmp_path / "out")


def test_read_structure_that_does_not_fit_the_reads(smoke_sample: Any, tmp_path: Path) -> None:
    r1, r2 = (tmp_path / "r1.fastq.gz", tmp_path / "r2.fastq.gz")
    shutil.copy(smoke_sample.fastq_r1_path, r1)
    shutil.copy(smoke_sample.fastq_r2_path, r2)
    args = _fastq_args(smoke_sample, r1, r2, tmp_path / "out", "8M500T 8M500T")
    result = run_cli(args)
    _assert_clean_user_error(result, names="r1.fastq.gz", out=tmp_path / "out")


@pytest.mark.parametrize("structure", ["8X142T 8M142T", "8M142T"])
def test_malformed_read_structure(smoke_sample: Any, tmp_path: Path, structure: str) -> None:
    args = _fastq_args(
        smoke_sample,
        smoke_sample.fastq_r1_path,
        smoke_sample.fastq_r2_path,
        tmp_path / "out",
        structure,
    )
    result = run_cli(args)
    assert result.exit_code == EXIT_USER_ERROR
    assert "Traceback" not in result.output + result.stderr
    assert "read" in result.stderr.lower() and "fix:" in result.stderr


def test_out_holding_an_earlier_run_is_refused_then_replaced_with_force(
    smoke_sample: Any, tmp_path: Path
) -> None:
    out = tmp_path / "results"
    out.mkdir()
    earlier = {"report.html": "earlier run", "notes.txt": "the user's own notes"}
    for name, text in earlier.items():
        (out / name).write_text(text)
    refused = run_cli(run_args(smoke_sample, out))
    assert refused.exit_code == EXIT_USER_ERROR, refused.output
    message = refused.stderr.strip()
    assert "\n" not in message and "Traceback" not in refused.output
    assert str(out) in message and "--force" in message and "not empty" in message
    assert {p.name: p.read_text() for p in out.iterdir()} == earlier  # nothing touched
    replaced = run_cli([*run_args(smoke_sample, out), "--force"])
    assert replaced.exit_code == 0, replaced.output
    names = {p.name for p in out.iterdir()}
    assert "notes.txt" not in names, "the earlier run is replaced whole, not merged"
    assert {"report.html", "metrics.json", "sample_call.json"} <= names
    assert (out / "report.html").read_text() != "earlier run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"], "no staging left behind"


def test_an_empty_out_directory_is_used(smoke_sample: Any, tmp_path: Path) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    result = run_cli(run_args(smoke_sample, out))
    assert result.exit_code == 0, result.output
    assert (out / "sample_call.json").is_file()


def test_out_that_is_a_file(smoke_sample: Any, tmp_path: Path) -> None:
    out = tmp_path / "results"
    out.write_text("not a directory")
    result = run_cli([*run_args(smoke_sample, out), "--force"])
    _assert_clean_user_error(result, names=str(out), out=tmp_path / "never")
    assert out.read_text() == "not a directory"
