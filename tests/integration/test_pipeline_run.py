"""The whole pipeline on simulated samples written as real files (BAM and FASTQ paths)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pysam
import pytest
import yaml

from precise_mrd.core.simulate import SimulationParams
from precise_mrd.pipeline.artifacts import ARTIFACTS
from precise_mrd.pipeline.params import PipelineParams
from precise_mrd.pipeline.run import RunInputs, run_pipeline
from precise_mrd.pipeline.simulation import simulate_sample

SAMPLE_CALL_KEYS = {
    "decision",
    "p_value",
    "tumor_fraction",
    "tumor_fraction_ci",
    "informative_molecules",
    "n_variants",
    "n_variants_with_alt",
    "personal_lod",
    "qc",
    "thresholds",
    "config_hash",
    "versions",
}
VARIANT_COLUMNS = {
    "chrom",
    "pos",
    "ref",
    "alt",
    "ref_context",
    "informative_simplex",
    "alt_simplex",
    "informative_duplex",
    "alt_duplex",
    "background_rate_simplex",
    "background_rate_duplex",
    "p_value",
    "q_value",
    "filters",
}


@pytest.fixture(scope="module")
def positive_sample(tmp_path_factory: pytest.TempPathFactory) -> Any:
    params = SimulationParams.preset("smoke", seed=21, tumor_fraction=0.02)
    return simulate_sample(tmp_path_factory.mktemp("positive"), params, write_fastq=True)


@pytest.fixture(scope="module")
def blank_sample(tmp_path_factory: pytest.TempPathFactory) -> Any:
    params = SimulationParams.preset("smoke", seed=22, tumor_fraction=0.0)
    return simulate_sample(tmp_path_factory.mktemp("blank"), params)


def _run_bam(sample: Any, out: Path, **overrides: Any) -> Any:
    inputs = RunInputs(
        reference_path=sample.reference_path,
        variants_path=sample.vcf_path,
        bam_path=sample.bam_path,
    )
    return run_pipeline(inputs, PipelineParams(**overrides), out)


def test_positive_sample_writes_every_artifact_and_calls_positive(
    positive_sample: Any, tmp_path: Path
) -> None:
    stages: list[tuple[str, float]] = []
    inputs = RunInputs(
        reference_path=positive_sample.reference_path,
        variants_path=positive_sample.vcf_path,
        bam_path=positive_sample.bam_path,
    )
    result = run_pipeline(
        inputs,
        PipelineParams(seed=3),
        tmp_path / "out",
        progress=lambda s, f: stages.append((s, f)),
    )

    for name in ARTIFACTS.values():
        assert (tmp_path / "out" / name).is_file(), name
    assert [p.name for p in tmp_path.iterdir()] == ["out"], "staging directory left behind"
    fractions = [fraction for _, fraction in stages]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)

    call = json.loads((tmp_path / "out" / "sample_call.json").read_text())
    assert set(call) >= SAMPLE_CALL_KEYS
    assert call["decision"] == "positive"
    truth = json.loads(Path(positive_sample.truth_path).read_text())
    low, high = call["tumor_fraction_ci"]
    assert low <= truth["tumor_fraction"] <= high
    assert call["p_value"] < 0.01
    assert call == result.sample_call

    with pysam.AlignmentFile(str(tmp_path / "out" / "consensus.bam")) as bam:
        assert bam.has_index()
        first = next(iter(bam))
        assert first.has_tag("MI") and first.has_tag("cD")

    header = (tmp_path / "out" / "variants.tsv").read_text().splitlines()[0].split("\t")
    assert set(header) >= VARIANT_COLUMNS
    table = pq.read_table(tmp_path / "out" / "variants.parquet")
    assert table.num_rows == truth_variant_count(truth)

    config_text = (tmp_path / "out" / "config.yaml").read_text()
    resolved = PipelineParams.from_mapping(yaml.safe_load(config_text))
    assert config_text.splitlines()[0] == f"# config_hash: {resolved.config_hash}"
    assert call["config_hash"] == resolved.config_hash

    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["consensus"]["n_duplex_molecules"] > 0
    summary = metrics["summary"]
    assert 0.5 < summary["duplex_rate"] <= 1.0
    assert summary["on_target_rate"] > 0.95  # every simulated fragment covers a variant
    assert summary["mean_family_size"] > 1.0
    assert summary["informative_molecules"] == call["informative_molecules"]
    assert set(metrics["timings_seconds"]) >= {"consensus", "evidence", "calling"}
    report = (tmp_path / "out" / "report.html").read_text()
    assert "POSITIVE" in report.upper() and "data:image/png;base64," in report
    assert "off (statistical caller only)" in report
    assert "stage consensus finished" in (tmp_path / "out" / "run.log").read_text()


def truth_variant_count(truth: dict[str, Any]) -> int:
    return len(truth["variants"])


def test_blank_sample_is_not_positive(blank_sample: Any, tmp_path: Path) -> None:
    result = _run_bam(blank_sample, tmp_path / "out")
    assert result.sample_call["decision"] in {"negative", "undetermined"}
    assert result.sample_call["p_value"] > 0.01
    assert result.sample_call["tumor_fraction_ci"][0] == 0.0


def test_same_seed_same_call(blank_sample: Any, tmp_path: Path) -> None:
    first = _run_bam(blank_sample, tmp_path / "a", seed=5).sample_call
    second = _run_bam(blank_sample, tmp_path / "b", seed=5).sample_call
    drop = {"versions"}
    assert {k: v for k, v in first.items() if k not in drop} == {
        k: v for k, v in second.items() if k not in drop
    }


def test_fastq_input_aligned_in_process_agrees_with_bam(
    positive_sample: Any, tmp_path: Path
) -> None:
    truth = json.loads(Path(positive_sample.truth_path).read_text())
    structures = truth["read_structure"]
    inputs = RunInputs(
        reference_path=positive_sample.reference_path,
        variants_path=positive_sample.vcf_path,
        fastq_paths=(positive_sample.fastq_r1_path, positive_sample.fastq_r2_path),
        read_structures=f"{structures['r1']} {structures['r2']}",
    )
    from_fastq = run_pipeline(inputs, PipelineParams(seed=3), tmp_path / "fq").sample_call
    from_bam = _run_bam(positive_sample, tmp_path / "bam", seed=3).sample_call
    assert from_fastq["decision"] == from_bam["decision"] == "positive"
    ratio = from_fastq["informative_molecules"] / from_bam["informative_molecules"]
    assert 0.9 < ratio < 1.1


def test_ml_filter_from_the_cli_runs_end_to_end(positive_sample: Any, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from precise_mrd.cli import app

    out = tmp_path / "ml"
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--bam",
            str(positive_sample.bam_path),
            "--reference",
            str(positive_sample.reference_path),
            "--variants",
            str(positive_sample.vcf_path),
            "--out",
            str(out),
            "--ml-model",
            "ensemble",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    ml = metrics["ml_filter"]
    assert ml["model_type"] == "ensemble"
    assert 0 < ml["informative_after"] <= ml["informative_before"]
    assert ml["alt_after"] <= ml["alt_before"]
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["ml"]["use_ml_calling"] is True
    call = json.loads((out / "sample_call.json").read_text())
    assert call["decision"] == "positive"  # TF 0.02: the filter must not remove the tumour signal
