"""Shared fixtures: simulated samples written once per test session (per xdist worker)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def smoke_sample(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A smoke-preset sample with FASTQ, tumour fraction 1e-3 (seed 11)."""
    from precise_mrd.core.simulate import SimulationParams
    from precise_mrd.pipeline.simulation import simulate_sample

    out_dir = tmp_path_factory.mktemp("smoke_sample")
    params = SimulationParams.preset("smoke", seed=11, tumor_fraction=1e-3)
    return simulate_sample(out_dir, params, write_fastq=True)
