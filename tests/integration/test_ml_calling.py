"""ML artefact filter end to end: train a tiny model, load it hash-checked, filter real evidence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from precise_mrd.core.background import BackgroundModel, sbs96_index
from precise_mrd.core.calling import CallingParams, call_sample
from precise_mrd.core.errors import ConfigError, InputDataError, InputFileError
from precise_mrd.core.simulate import SimulationParams
from precise_mrd.io.fasta import open_reference
from precise_mrd.io.vcf import read_variants
from precise_mrd.ml.ensemble import (
    MODEL_TYPES,
    _require,
    artefact_probability,
    build_model,
    load_model,
    save_model,
)
from precise_mrd.ml.features import FEATURE_NAMES
from precise_mrd.ml.scoring import apply_ml_filter
from precise_mrd.pipeline.consensus import group_and_call_consensus
from precise_mrd.pipeline.evidence import collect_evidence
from precise_mrd.pipeline.params import PipelineParams
from precise_mrd.pipeline.run import consensus_params_from
from precise_mrd.pipeline.simulation import simulate_sample
from precise_mrd.training import (
    TrainingConfig,
    balanced_rows,
    choose_threshold,
    label_rows,
    train_model,
)

COL = {name: i for i, name in enumerate(FEATURE_NAMES)}


def _synthetic(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Clean duplex observations (label 0) against low-quality, read-end, single-strand ones (1)."""
    x = np.zeros((2 * n, len(FEATURE_NAMES)))
    y = np.repeat([0, 1], n)
    clean, art = slice(0, n), slice(n, 2 * n)
    x[clean, COL["base_quality"]] = rng.integers(80, 94, n)
    x[art, COL["base_quality"]] = rng.integers(30, 45, n)
    # most clean molecules are duplex; clean simplex ones exist too, artefacts are single-strand
    x[clean, COL["is_duplex"]] = rng.random(n) < 0.7
    x[clean, COL["min_strand_depth"]] = x[clean, COL["is_duplex"]] * rng.integers(2, 6, n)
    x[clean, COL["read_end_distance"]] = rng.integers(20, 70, n)
    x[art, COL["read_end_distance"]] = rng.integers(0, 5, n)
    x[:, COL["family_size"]] = rng.integers(1, 10, 2 * n)
    x[:, COL["mapping_quality"]] = 60
    x[:, COL["fragment_length"]] = rng.normal(165, 20, 2 * n)
    x[:, COL["sbs96_class"]] = rng.integers(0, 96, 2 * n)
    x[:, COL["substitution"]] = x[:, COL["sbs96_class"]] // 16
    return x, y


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(5)
    x, y = _synthetic(rng, 300)
    model = build_model("random_forest", seed=1)
    model.fit(x, y)
    out = tmp_path_factory.mktemp("model")
    return save_model(
        model, out, "artefact_random_forest_v1", {"model_type": "random_forest", "threshold": 0.5}
    )


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_every_model_type_separates_obvious_artefacts(model_type: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    x, y = _synthetic(rng, 200)
    model = build_model(model_type, seed=2)
    model.fit(x, y)
    path = save_model(
        model, tmp_path, f"artefact_{model_type}_v1", {"model_type": model_type, "threshold": 0.5}
    )
    loaded = load_model(model_type, model_path=path)
    x_new, y_new = _synthetic(np.random.default_rng(12), 100)
    p = artefact_probability(loaded.estimator, x_new)
    assert p[y_new == 1].min() > p[y_new == 0].max()
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["feature_names"] == list(FEATURE_NAMES)
    assert "sklearn" in card["library_versions"]
    assert path.stat().st_size < 5_000_000


def test_tampered_model_file_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    copy = tmp_path / tiny_model.name
    copy.write_bytes(tiny_model.read_bytes() + b"\0")
    copy.with_suffix(".json").write_text(tiny_model.with_suffix(".json").read_text())
    with pytest.raises(InputFileError, match="SHA-256"):
        load_model("random_forest", model_path=copy)


def test_missing_optional_library_names_the_extra() -> None:
    with pytest.raises(ConfigError, match=r"pip install precise-mrd\[ml\]"):
        _require("precise_mrd_no_such_module", "xgboost")
    with pytest.raises(ConfigError, match="unknown model type"):
        build_model("svm", seed=0)


def test_balanced_rows_and_threshold() -> None:
    labels = np.array([0] * 10 + [1] * 100)
    classes = np.array([sbs96_index("ACG", "T")] * 10 + [sbs96_index("ATA", "C")] * 100)
    rows = balanced_rows(labels, classes, np.random.default_rng(0))
    assert (labels[rows] == 0).sum() == (labels[rows] == 1).sum() == 10
    assert choose_threshold(np.linspace(0, 1, 101), 0.9) == pytest.approx(0.9)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    out = tmp_path_factory.mktemp("ml-sample")
    params = SimulationParams.preset(
        "smoke", seed=21, tumor_fraction=0.05, artifact_rate=1e-3, molecules_per_locus=300
    )
    sim = simulate_sample(out, params)
    consensus = out / "consensus.bam"
    group_and_call_consensus(
        sim.bam_path, consensus, params=consensus_params_from(PipelineParams()), strategy="paired"
    )
    return consensus, sim.reference_path, sim.vcf_path


def test_apply_ml_filter_returns_valid_evidence(
    sample: tuple[Path, Path, Path], tiny_model: Path
) -> None:
    consensus, reference, vcf = sample
    variants = read_variants(vcf, open_reference(reference))
    evidence = collect_evidence(consensus, reference, variants)
    filtered = apply_ml_filter(
        evidence, consensus, reference, variants, "random_forest", model_path=tiny_model
    )
    assert len(filtered.variants) == len(evidence.variants)
    for before, after in zip(evidence.variants, filtered.variants, strict=True):
        assert after.variant == before.variant
        assert after.n_simplex <= before.n_simplex and after.n_duplex <= before.n_duplex
        assert after.alt <= before.alt
        # NB: a duplex molecule counts on both strands (sO 3), a single-strand one on its own
        assert after.n_forward + after.n_reverse == after.n_simplex + 2 * after.n_duplex
    bg, bg0 = filtered.background, evidence.background
    assert (bg.opportunities <= bg0.opportunities).all()
    assert bg.opportunities.sum() > 0.5 * bg0.opportunities.sum()
    # a real sample at TF 0.05 keeps mutant molecules through the filter
    assert sum(vc.alt for vc in filtered.variants) > 0
    call, _ = call_sample(
        filtered.variants,
        BackgroundModel.fit(bg),
        CallingParams(
            n_bootstrap=200,
            compute_personal_lod=False,
            min_informative_molecules=10,
            min_background_opportunities=100,
        ),
        np.random.default_rng(0),
    )
    assert call.decision == "positive"
    # threshold 1.0 keeps everything: the counts are exactly the evidence stage's
    kept = apply_ml_filter(
        evidence,
        consensus,
        reference,
        variants,
        "random_forest",
        model_path=tiny_model,
        threshold=1.0,
    )
    assert kept.variants == evidence.variants
    np.testing.assert_array_equal(kept.background.errors, bg0.errors)


def test_apply_ml_filter_rejects_mismatched_variants(
    sample: tuple[Path, Path, Path], tiny_model: Path
) -> None:
    consensus, reference, vcf = sample
    variants = read_variants(vcf, open_reference(reference))
    evidence = collect_evidence(consensus, reference, variants)
    with pytest.raises(InputDataError, match="do not match"):
        apply_ml_filter(evidence, consensus, reference, variants[:-1], model_path=tiny_model)


def test_label_rows_uses_blank_status_and_truth_only_for_labels(
    sample: tuple[Path, Path, Path],
) -> None:
    from precise_mrd.ml.features import KIND_BACKGROUND_ERROR, extract_observations

    consensus, reference, vcf = sample
    variants = read_variants(vcf, open_reference(reference))
    table = extract_observations(consensus, reference, variants, np.random.default_rng(0))
    has = np.ones(len(variants) + 1, dtype=bool)
    rows, labels = label_rows(table, has, is_blank=False)
    assert (labels[table.kind[rows] == KIND_BACKGROUND_ERROR] == 1).all()
    assert (labels[table.is_alt[rows] & (table.kind[rows] == 0)] == 0).all()
    rows_b, labels_b = label_rows(table, has, is_blank=True)
    assert (labels_b == 1).all() and rows_b.size >= rows.size - (labels == 0).sum()


def test_train_model_on_tiny_simulated_set_writes_a_loadable_model(tmp_path: Path) -> None:
    config = TrainingConfig(n_samples=4, n_holdout=2, seed=3, n_variants=6, molecules_per_locus=250)
    path = train_model(tmp_path / "out", model_type="random_forest", config=config)
    assert path.name == "artefact_random_forest_v1.joblib"
    loaded = load_model("random_forest", model_path=path)
    card = loaded.card
    assert card["training"]["train_seeds"] == [3, 4]
    assert card["training"]["holdout_seeds"] == [5, 6]  # held out by sample
    metrics = card["holdout_metrics"]
    assert metrics["n_real"] > 0 and metrics["n_artefact"] > 0
    assert metrics["roc_auc"] > 0.6  # better than chance on unseen samples
    assert 0.0 < loaded.threshold < 1.0


def test_train_model_command_is_registered() -> None:
    import typer
    from typer.testing import CliRunner

    from precise_mrd.cli_ml import register

    app = typer.Typer()
    register(app)

    @app.command()
    def other() -> None:  # a second command keeps typer from collapsing to a single command
        pass

    result = CliRunner().invoke(app, ["train-model", "--help"])
    assert result.exit_code == 0
    for option in ("--out", "--model-type", "--n-samples", "--seed"):
        assert option in result.output
