"""The UMI strategy is chosen from the reads (`auto`), and `run` takes the options users tune most.

`auto` (the default) groups duplex UMIs `A-B` with `paired` and single-strand UMIs with
`directional`; a BAM mixing both is a clear error. The strategy used is recorded in metrics.json
and the report. Every error's fix names only options of the command that printed it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pysam
import pytest

from clitools import assert_fix_names_only_real_options, run_args, run_cli
from precise_mrd.cli_support import EXIT_USER_ERROR


def _retagged(source: Path, target: Path, *, single_every: int) -> Path:
    """``source`` with the RX of every ``single_every``-th read (1: all) cut to its first half."""
    with pysam.AlignmentFile(str(source), "rb") as reader:
        header = reader.header.to_dict()
        with pysam.AlignmentFile(str(target), "wb", header=header) as writer:
            for i, record in enumerate(reader):
                if i % single_every == 0:
                    record.set_tag("RX", str(record.get_tag("RX")).split("-")[0])
                writer.write(record)
    pysam.index(str(target))
    return target


@pytest.fixture(scope="module")
def single_strand_bam(smoke_sample: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("single_strand")
    return _retagged(smoke_sample.bam_path, directory / "single.bam", single_every=1)


def _metrics(out: Path) -> dict[str, Any]:
    return dict(json.loads((out / "metrics.json").read_text()))


def test_defaults_group_single_strand_umis_directionally(
    smoke_sample: Any, single_strand_bam: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = run_cli(run_args(smoke_sample, out, bam=single_strand_bam))
    assert result.exit_code == 0, result.output + result.stderr
    metrics = _metrics(out)
    assert metrics["grouping"]["strategy"] == "directional"
    assert metrics["summary"]["umi_strategy"] == "directional"
    assert metrics["summary"]["duplex_rate"] == 0.0
    assert metrics["summary"]["molecules"] > 1000
    assert "summary.umi_strategy" in (out / "report.html").read_text()


def test_defaults_group_duplex_umis_as_pairs(smoke_sample: Any, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli(run_args(smoke_sample, out))
    assert result.exit_code == 0, result.stderr
    metrics = _metrics(out)
    assert metrics["grouping"]["strategy"] == "paired"
    assert metrics["summary"]["duplex_rate"] > 0.5


def test_a_bam_mixing_duplex_and_single_strand_umis_is_refused(
    smoke_sample: Any, tmp_path: Path
) -> None:
    mixed = _retagged(smoke_sample.bam_path, tmp_path / "mixed.bam", single_every=7)
    result = run_cli(run_args(smoke_sample, tmp_path / "out", bam=mixed))
    assert result.exit_code == EXIT_USER_ERROR, result.output
    # NB: the run's own log lines may share stderr (a test before may have set up logging)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    message = errors[0]
    assert "mixed.bam" in message and "mixes duplex UMIs" in message, message
    assert "--strategy paired" in message
    assert_fix_names_only_real_options("run", message)
    assert not (tmp_path / "out").exists()


def test_paired_on_single_strand_umis_says_to_use_run_strategy(
    smoke_sample: Any, single_strand_bam: Path, tmp_path: Path
) -> None:
    args = [*run_args(smoke_sample, tmp_path / "out", bam=single_strand_bam), "--strategy"]
    result = run_cli([*args, "paired"])
    assert result.exit_code == EXIT_USER_ERROR
    message = next(line for line in result.stderr.splitlines() if line.startswith("error: "))
    assert "is not a duplex UMI 'A-B' but strategy 'paired' needs one" in message
    assert "--strategy directional" in message
    assert_fix_names_only_real_options("run", message)


@pytest.mark.parametrize(
    ("values", "expected"),
    [(["3"], [3, 3, 3]), (["2", "1"], [2, 1, 1]), (["3", "2", "1"], [3, 2, 1])],
)
def test_run_takes_one_two_or_three_min_reads(
    smoke_sample: Any, tmp_path: Path, values: list[str], expected: list[int]
) -> None:
    out = tmp_path / "out"
    flags = [part for value in values for part in ("--min-reads", value)]
    result = run_cli([*run_args(smoke_sample, out), *flags, "--max-edits", "0"])
    assert result.exit_code == 0, result.stderr
    config = (out / "config.yaml").read_text()
    assert "min_reads:\n  - " + "\n  - ".join(map(str, expected)) in config, config
    assert "max_edits: 0" in config


def test_consensus_takes_a_single_min_reads(smoke_sample: Any, tmp_path: Path) -> None:
    grouped = tmp_path / "grouped.bam"
    grouping = run_cli(["group", "--bam", str(smoke_sample.bam_path), "--out", str(grouped)])
    assert grouping.exit_code == 0, grouping.stderr
    result = run_cli(
        ["consensus", "--bam", str(grouped), "--out", str(tmp_path / "c.bam"), "--min-reads", "3"]
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["n_molecules"] > 0


@pytest.mark.parametrize(
    "args",
    [
        ["group", "--bam", "missing.bam", "--out", "x.bam"],
        ["consensus", "--bam", "missing.bam", "--out", "x.bam"],
        ["consensus", "--bam", "{reads}", "--out", "x.bam", "--min-reads", "0"],
        ["group", "--bam", "{reads}", "--out", "x.bam", "--strategy", "paired", "--umi-tag", "XX"],
    ],
    ids=["group-missing", "consensus-missing", "consensus-min-reads-0", "group-no-umi-tag"],
)
def test_the_fixes_of_other_commands_name_their_own_options(
    smoke_sample: Any, tmp_path: Path, args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    args = [arg.replace("{reads}", str(smoke_sample.bam_path)) for arg in args]
    result = run_cli(args)
    assert result.exit_code == EXIT_USER_ERROR, result.output
    assert "Traceback" not in result.stderr
    message = next(line for line in result.stderr.splitlines() if line.startswith("error: "))
    assert "fix:" in message
    assert_fix_names_only_real_options(args[0], message)
