"""Validation on a tiny simulated dilution series through the real pipeline, and the lob/lod CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from scipy import stats
from typer.testing import CliRunner

from precise_mrd.cli_validation import register
from precise_mrd.core.errors import InputDataError, InputFileError
from precise_mrd.core.lod import lob_nonparametric, lod_probit
from precise_mrd.pipeline.validation import (
    ValidationSample,
    limit_of_blank_from_csv,
    limit_of_detection_from_csv,
    run_validation,
    summarise,
)

# --------------------------------------------------------------------------- run_validation


@pytest.fixture(scope="module")
def validation(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """10 blanks + 2 levels x 2 replicates, 5 loci x 300 molecules, 2 worker processes."""
    progress: list[float] = []
    result = run_validation(
        tmp_path_factory.mktemp("validation"),
        tumor_fractions=(0.0, 1e-3, 5e-2),
        replicates=2,
        blank_replicates=10,
        molecules_per_locus=300,
        n_variants=5,
        seed=3,
        workers=2,
        progress=lambda _, fraction: progress.append(fraction),
    )
    return result, progress


def test_validation_writes_json_and_html_with_the_contract_keys(validation: Any) -> None:
    result, progress = validation
    document = json.loads(result.json_path.read_text())
    for key in ("lob", "lod95", "lod95_ci", "specificity", "auc", "linearity", "samples"):
        assert key in document
    assert len(document["samples"]) == 14
    assert document["design"]["blank_replicates"] == 10
    html = result.html_path.read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert html.count("data:image/png;base64,") >= 3  # detection, QQ, linearity, ROC
    assert "Limit of blank" in html and "LoD95" in html
    assert "http://" not in html and "https://" not in html  # self-contained
    assert sorted(p.name for p in result.out_dir.iterdir()) == [
        "validation.html",
        "validation.json",
    ]
    assert progress[0] == 0.0 and progress[-1] == 1.0 and progress == sorted(progress)


def test_validation_figures_are_sane(validation: Any) -> None:
    result, _ = validation
    summary = result.summary
    # blanks: the caller controls false positives (alpha 0.05 on 10 blanks: <= 2 by far)
    assert summary["n_blanks"] == 10
    assert summary["specificity"] >= 0.8
    assert summary["lob"] is not None and 0.0 <= summary["lob"] < 1e-3
    # the LoB is the EP17 rank estimate of the blanks' TF estimates, recomputed here
    blanks = [s.tumor_fraction_estimate for s in result.samples if s.is_blank]
    assert summary["lob"] == lob_nonparametric(blanks).lob
    assert 0.0 <= summary["auc"] <= 1.0
    # TF 0.05 over 1,500 molecules is ~37 alt molecules: always detected, near-perfect AUC
    rates = {row["concentration"]: row["rate"] for row in summary["detection"]}
    assert rates[5e-2] == 1.0
    assert rates[5e-2] >= rates[1e-3]
    assert summary["auc_by_level"]["0.05"]["auc"] == 1.0
    high = [s.tumor_fraction_estimate for s in result.samples if s.tumor_fraction == 5e-2]
    assert all(0.01 < estimate < 0.2 for estimate in high)
    calibration = {point["alpha"]: point for point in summary["type1_calibration"]}
    assert calibration[0.05]["n"] == 10


def test_validation_is_reproducible_by_seed_for_any_worker_count(
    validation: Any, tmp_path: Path
) -> None:
    result, _ = validation
    again = run_validation(
        tmp_path,
        tumor_fractions=(0.0, 5e-2),
        replicates=1,
        blank_replicates=1,
        molecules_per_locus=300,
        n_variants=5,
        seed=3,
        workers=1,
    )
    # same seed, same plan: sample 0 (first blank) must match the 2-worker run exactly
    first = result.samples[0]
    assert again.samples[0].seed == first.seed
    assert again.samples[0].p_value == first.p_value
    assert again.samples[0].tumor_fraction_estimate == first.tumor_fraction_estimate
    # one blank is too few for a rank LoB: reported, not raised
    assert again.summary["lob"] is None
    assert "too few blank results" in again.summary["lob_status"]


def _sample(index: int, tf: float, positive: bool, estimate: float, p: float) -> ValidationSample:
    return ValidationSample(
        index=index,
        tumor_fraction=tf,
        replicate=0,
        seed=index,
        decision="positive" if positive else "negative",
        p_value=p,
        tumor_fraction_estimate=estimate,
        tumor_fraction_ci=(0.0, max(estimate, 1e-3)),
        personal_lod=1e-4,
        informative_molecules=10_000,
        alt_molecules=0,
        seconds=1.0,
    )


def test_summarise_reports_a_separated_series_honestly() -> None:
    # every level all-or-nothing: probit not estimable, empirical LoD still reported
    samples = [_sample(i, 0.0, False, 0.0, 1.0) for i in range(10)]
    samples += [_sample(10 + i, 1e-4, False, 0.0, 0.6) for i in range(3)]
    samples += [_sample(20 + i, 1e-3, True, 1.1e-3, 1e-4) for i in range(3)]
    summary = summarise(samples)
    assert summary["lod95"] is None and summary["lod95_ci"] == [None, None]
    assert "completely separated" in summary["lod95_status"]
    assert summary["lod95_empirical"] == 1e-3
    assert summary["specificity"] == 1.0
    assert summary["auc"] == 0.5  # lowest level (1e-4) scores tie the blanks


def test_summarise_fits_a_probit_when_detection_is_graded() -> None:
    rng = np.random.default_rng(4)
    samples = [_sample(i, 0.0, False, 0.0, rng.random()) for i in range(20)]
    levels = [3e-5, 1e-4, 3e-4, 1e-3, 3e-3]
    index = 100
    for level in levels:
        probability = stats.norm.cdf(5.0 + 1.5 * np.log10(level))
        for _ in range(12):
            index += 1
            hit = bool(rng.random() < probability)
            samples.append(_sample(index, level, hit, level * rng.uniform(0.5, 1.5), 0.5))
    summary = summarise(samples)
    expected = lod_probit(
        [s.tumor_fraction for s in samples[20:]], [s.is_detected for s in samples[20:]]
    )
    assert summary["lod95"] == pytest.approx(expected.lod)
    assert summary["lod95_status"].startswith("fitted")
    assert 0.8 < summary["linearity"]["slope"] < 1.2
    assert summary["linearity"]["r_squared"] > 0.95


# --------------------------------------------------------------------------- lob / lod from CSV


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_lob_csv_with_two_lots(tmp_path: Path) -> None:
    rows = ["value,lot"] + [f"{v},A" for v in range(1, 61)] + [f"{2 * v},B" for v in range(1, 61)]
    result = limit_of_blank_from_csv(_write(tmp_path / "blanks.csv", "\n".join(rows) + "\n"))
    assert result["per_lot"] == {"A": 57.5, "B": 115.0}
    assert result["lob"] == 115.0 and result["n"] == 120 and result["method"] == "nonparametric"


def test_lod_csv_matches_the_core_probit(tmp_path: Path) -> None:
    rng = np.random.default_rng(10)
    concentration = np.repeat([1e-5, 3e-5, 1e-4, 3e-4, 1e-3], 10)
    detected = rng.random(concentration.size) < stats.norm.cdf(6 + 1.5 * np.log10(concentration))
    text = "concentration,detected\n" + "".join(
        f"{c},{'true' if d else 'false'}\n" for c, d in zip(concentration, detected, strict=True)
    )
    result = limit_of_detection_from_csv(_write(tmp_path / "dilution.csv", text))
    assert result["lod95"] == pytest.approx(lod_probit(concentration, detected).lod)


@pytest.mark.parametrize(
    ("content", "error", "message"),
    [
        (None, InputFileError, "measurements file not found"),
        ("values\n1\n", InputDataError, "has no 'value' column (columns: values)"),
        ("value\n1\nabc\n", InputDataError, "row 3: 'value' is 'abc', not a finite number"),
        ("value\n", InputDataError, "no data rows"),
        ("value\n1\n2\n", InputDataError, "too few blank results"),
    ],
)
def test_lob_csv_errors_name_file_problem_and_fix(
    tmp_path: Path, content: str | None, error: type[Exception], message: str
) -> None:
    path = tmp_path / "blanks.csv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(error) as raised:
        limit_of_blank_from_csv(path)
    text = str(raised.value)
    assert text.startswith(str(path)) and message in text and "; fix: " in text


def test_lod_csv_rejects_bad_detected_flags(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv", "concentration,detected\n1e-4,1\n1e-3,maybe\n")
    with pytest.raises(InputDataError, match=r"row 3: 'detected' is 'maybe'"):
        limit_of_detection_from_csv(path)


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_cli_lob_prints_json(cli: typer.Typer, tmp_path: Path) -> None:
    rows = "value\n" + "".join(f"{v}\n" for v in range(1, 61))
    result = CliRunner().invoke(
        cli, ["lob", "--measurements", str(_write(tmp_path / "b.csv", rows))]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["lob"] == 57.5 and payload["n"] == 60 and payload["method"] == "nonparametric"
    assert payload["per_lot"] == {"all": 57.5}


def test_cli_lob_parametric_and_lot_column(cli: typer.Typer, tmp_path: Path) -> None:
    rows = "value,batch\n" + "".join(f"{v % 7},{'X' if v % 2 else 'Y'}\n" for v in range(40))
    path = _write(tmp_path / "b.csv", rows)
    result = CliRunner().invoke(
        cli, ["lob", "--measurements", str(path), "--lot-column", "batch", "--parametric"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["method"] == "parametric" and set(payload["per_lot"]) == {"X", "Y"}
    assert payload["lob"] == max(payload["per_lot"].values())


def test_cli_lod_prints_json(cli: typer.Typer, tmp_path: Path) -> None:
    rows = "concentration,detected\n" + "".join(
        f"{c},{d}\n"
        for c, d in [(1, 0), (1, 0), (1, 1), (2, 0), (2, 1), (2, 1), (4, 1), (4, 0), (4, 1)]
        + [(8, 1)] * 3
    )
    result = CliRunner().invoke(
        cli, ["lod", "--measurements", str(_write(tmp_path / "d.csv", rows))]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["lod95"] > 0 and len(payload["ci"]) == 2 and "probit" in payload["method"]


def test_cli_bad_csv_is_one_line_and_exit_2(cli: typer.Typer, tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv", "conc,detected\n1,1\n")
    result = CliRunner().invoke(cli, ["lod", "--measurements", str(path)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: {path}: has no 'concentration' column")
    missing = CliRunner().invoke(cli, ["lob", "--measurements", str(tmp_path / "nope.csv")])
    assert missing.exit_code == 2 and "not found" in missing.stderr


def test_cli_validate_runs_a_tiny_series(cli: typer.Typer, tmp_path: Path) -> None:
    out = tmp_path / "val"
    args = ["validate", "--out", str(out), "--replicates", "1", "--blank-replicates", "1"]
    args += ["--molecules-per-locus", "200", "--tumor-fractions", "0,0.05", "--workers", "1"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output + result.stderr
    payload = json.loads(result.stdout)
    assert payload["json"] == str(out / "validation.json")
    assert payload["specificity"] in (0.0, 1.0) and payload["lob"] is None
    assert json.loads((out / "validation.json").read_text())["design"]["n_samples"] == 2
    bad = CliRunner().invoke(cli, ["validate", "--out", str(out), "--tumor-fractions", "0,x"])
    assert bad.exit_code == 2 and "--tumor-fractions" in bad.stderr


def test_cli_validate_with_an_artefact_filter(cli: typer.Typer, tmp_path: Path) -> None:
    """Every sample of the series is called with the chosen filter (a DL network here)."""
    out = tmp_path / "val-dl"
    args = ["validate", "--out", str(out), "--replicates", "1", "--blank-replicates", "1"]
    args += ["--molecules-per-locus", "200", "--tumor-fractions", "0,0.05", "--workers", "1"]
    result = CliRunner().invoke(cli, [*args, "--dl-model", "cnn"])
    assert result.exit_code == 0, result.output + result.stderr
    assert json.loads(result.stdout)["artefact_filter"] == "cnn"
    document = json.loads((out / "validation.json").read_text())
    plain = run_validation(
        tmp_path / "val-plain",
        tumor_fractions=(0.0, 0.05),
        replicates=1,
        blank_replicates=1,
        molecules_per_locus=200,
        workers=1,
    )
    assert plain.summary["design"]["artefact_filter"] is None
    assert (
        document["design"]["pipeline_config_hash"]
        != plain.summary["design"]["pipeline_config_hash"]
    )
    # the filter drops molecules: fewer informative molecules than the same samples unfiltered
    filtered = [row["informative_molecules"] for row in document["samples"]]
    unfiltered = [s.informative_molecules for s in plain.samples]
    assert all(f < u for f, u in zip(filtered, unfiltered, strict=True))
    assert "artefact filter: cnn" in (out / "validation.html").read_text()
    both = CliRunner().invoke(cli, [*args, "--dl-model", "cnn", "--ml-model", "ensemble"])
    assert both.exit_code == 2 and "one artefact filter" in both.stderr
