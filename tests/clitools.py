"""Driving the CLI in tests: invoke a command, build `run` arguments, check the fixes it names."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer.main
from typer.testing import CliRunner

from precise_mrd.cli import app

runner = CliRunner()


def run_cli(args: list[str]) -> Any:
    result = runner.invoke(app, args, catch_exceptions=False)
    result.cli_args = args  # NB: the command, for the check of the options a fix names
    return result


def options_of(command: str) -> set[str]:
    """Every option name (``--x`` and ``--no-x``) of one CLI command."""
    group = typer.main.get_command(app)
    params = group.commands[command].params  # type: ignore[attr-defined]
    return {name for param in params for name in (*param.opts, *param.secondary_opts)}


def assert_fix_names_only_real_options(command: str, message: str) -> None:
    """The options an error message names (outside `backquoted` commands of other tools)
    exist for the command that printed it."""
    prose = re.sub(r"`[^`]*`", "", message)
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", prose))
    assert named <= options_of(command), (
        f"{command} has no {named - options_of(command)}: {message}"
    )


def run_args(sample: Any, out: Path, **replace: Path) -> list[str]:
    paths = {
        "bam": sample.bam_path,
        "reference": sample.reference_path,
        "variants": sample.vcf_path,
    }
    paths.update(replace)
    return [
        "run",
        "--bam",
        str(paths["bam"]),
        "--reference",
        str(paths["reference"]),
        "--variants",
        str(paths["variants"]),
        "--out",
        str(out),
    ]
