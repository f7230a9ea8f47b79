"""Calling on read-level simulator output: real BAMs through the whole pipeline.

The count-level tests (test_calling_performance.py) check calibration with hundreds of replicates;
these check that the same holds when the counts come from reads, UMIs, consensus and the evidence
stage, with damage, PCR and sequencing errors switched on. Replicates are few (each sample is a
real BAM), so the bounds are binomial tests rather than point targets.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scipy import stats

from precise_mrd.core.simulate import SimulationParams
from precise_mrd.pipeline.params import PipelineParams
from precise_mrd.pipeline.run import RunInputs, run_pipeline
from precise_mrd.pipeline.simulation import simulate_sample

SAMPLE_SHAPE = {"n_variants": 20, "molecules_per_locus": 1000, "mean_family_size": 3.0}
PARAMS = PipelineParams.from_mapping({"calling": {"n_bootstrap": 500}})


def _call(tmp_path: Path, seed: int, tumor_fraction: float) -> dict[str, object]:
    sample_params = SimulationParams.preset(
        "smoke", seed=seed, tumor_fraction=tumor_fraction, artifact_rate=1e-4, **SAMPLE_SHAPE
    )
    sample = simulate_sample(tmp_path / f"sample{seed}", sample_params)
    inputs = RunInputs(
        reference_path=sample.reference_path,
        variants_path=sample.vcf_path,
        bam_path=sample.bam_path,
    )
    result = run_pipeline(inputs, PARAMS.with_overrides(seed=seed), tmp_path / f"run{seed}")
    truth = json.loads(sample.truth_path.read_text())
    assert truth["tumor_fraction"] == tumor_fraction
    return result.sample_call


@pytest.mark.slow
def test_blanks_from_reads_are_rarely_positive(tmp_path: Path) -> None:
    n_blanks = 12
    calls = [_call(tmp_path, 5000 + i, 0.0) for i in range(n_blanks)]
    n_positive = sum(call["decision"] == "positive" for call in calls)
    # a valid alpha=0.05 test: this many false positives or more is a < 1% event
    assert stats.binom.sf(n_positive - 1, n_blanks, 0.05) > 0.01, n_positive
    assert all(call["decision"] != "undetermined" for call in calls)


@pytest.mark.slow
def test_tumour_fraction_1e3_from_reads_is_detected_and_covered(tmp_path: Path) -> None:
    tumor_fraction = 1e-3  # ~10 expected alt molecules over 20 x 1000 molecules at AF 0.5
    calls = [_call(tmp_path, 6000 + i, tumor_fraction) for i in range(6)]
    detected = sum(call["decision"] == "positive" for call in calls)
    covered = sum(
        call["tumor_fraction_ci"][0] <= tumor_fraction <= call["tumor_fraction_ci"][1]  # type: ignore[index]
        for call in calls
    )
    assert detected >= 5, [call["p_value"] for call in calls]
    assert covered >= 4, [call["tumor_fraction_ci"] for call in calls]
