"""The report and the tables say what was measured: a p-value at the bootstrap floor is a bound,
and no variant's p-value is printed as 0."""

from __future__ import annotations

import csv

import pytest

from precise_mrd.core.simulate import SimulationParams
from precise_mrd.pipeline.params import PipelineParams
from precise_mrd.pipeline.run import RunInputs, run_pipeline
from precise_mrd.pipeline.simulation import simulate_sample


@pytest.fixture(scope="module")
def strong_positive(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("strong")
    sample = simulate_sample(
        out / "sample", SimulationParams.preset("smoke", seed=3, tumor_fraction=0.2)
    )
    inputs = RunInputs(
        reference_path=sample.reference_path,
        variants_path=sample.vcf_path,
        bam_path=sample.bam_path,
    )
    return run_pipeline(inputs, PipelineParams(), out / "run")


def test_a_p_value_at_the_bootstrap_floor_reads_as_a_bound(strong_positive) -> None:  # type: ignore[no-untyped-def]
    call = strong_positive.sample_call
    assert call["decision"] == "positive"
    assert call["p_value"] == pytest.approx(1 / (call["n_bootstrap"] + 1))
    html = (strong_positive.out_dir / "report.html").read_text()
    assert "p &lt; 5.0e-04 (bootstrap floor)" in html
    assert "p = 5.00e-04" not in html


def test_no_variant_p_value_is_zero(strong_positive) -> None:  # type: ignore[no-untyped-def]
    with open(strong_positive.out_dir / "variants.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    p_values = [float(row["p_value"]) for row in rows]
    assert len(p_values) == 10
    assert min(p_values) > 0.0
    assert min(p_values) < 1e-16  # a 20% tumour fraction: tails below what 1 - P(S < x) can show
