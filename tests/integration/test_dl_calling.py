"""Deep-learning artefact scorer: encoding, shipped networks, training, filtering, CLI, errors."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from precise_mrd.core.errors import ConfigError, InputFileError
from precise_mrd.core.simulate import SimulationParams
from precise_mrd.io.fasta import open_reference
from precise_mrd.io.vcf import read_variants
from precise_mrd.ml import deep
from precise_mrd.ml.features import (
    FEATURE_NAMES,
    MISSING_BASE,
    WINDOW_FLANK,
    WINDOW_ROWS,
    extract_observations,
)
from precise_mrd.ml.scoring import apply_ml_filter
from precise_mrd.pipeline.consensus import group_and_call_consensus
from precise_mrd.pipeline.evidence import collect_evidence
from precise_mrd.pipeline.params import PipelineParams
from precise_mrd.pipeline.run import consensus_params_from
from precise_mrd.pipeline.simulation import simulate_sample
from precise_mrd.training import TrainingConfig, train_models

WIDTH = 2 * WINDOW_FLANK + 1
COL = {name: i for i, name in enumerate(FEATURE_NAMES)}


def _windows(n: int, rng: np.random.Generator) -> np.ndarray:
    ref = rng.integers(0, 4, size=(n, WIDTH))
    out = np.stack([ref.copy(), np.full((n, WIDTH), 37), ref]).transpose(1, 0, 2)
    out[:, 0, WINDOW_FLANK] = (ref[:, WINDOW_FLANK] + 1) % 4  # the scored alt
    return out.astype(np.uint8)


def _features(n: int, rng: np.random.Generator) -> np.ndarray:
    x = np.zeros((n, len(FEATURE_NAMES)))
    x[:, COL["base_quality"]] = 37
    x[:, COL["family_size"]] = rng.integers(2, 10, n)
    x[:, COL["read_end_distance"]] = rng.integers(5, 70, n)
    x[:, COL["mapping_quality"]] = 60
    x[:, COL["fragment_length"]] = rng.integers(120, 200, n)
    x[:, COL["sbs96_class"]] = rng.integers(0, 96, n)
    return x


def test_encoding_of_a_hand_made_window() -> None:
    window = np.zeros((1, len(WINDOW_ROWS), WIDTH), dtype=np.uint8)
    window[0, 0] = 0  # molecule: all A
    window[0, 0, 0] = MISSING_BASE  # first position not covered
    window[0, 0, WINDOW_FLANK] = 3  # centre: T (the scored alt)
    window[0, 1] = 40
    window[0, 1, 0] = 0
    window[0, 2] = 0  # reference: all A
    x = deep.encode_sequences(window)[0]
    ch = {name: i for i, name in enumerate(deep.CHANNELS)}
    assert x.shape == (len(deep.CHANNELS), WIDTH)
    assert x[ch["covered"], 0] == 0 and x[ch["covered"], 1:].all()
    assert x[ch["base_A"], 0] == 0  # not covered: no base one-hot
    assert x[ch["base_T"], WINDOW_FLANK] == 1 and x[ch["base_A"], WINDOW_FLANK] == 0
    assert x[ch["quality"], 1] == pytest.approx(1.0)
    assert x[ch["mismatch"]].sum() == 1 and x[ch["mismatch"], WINDOW_FLANK] == 1
    assert x[ch["centre"]].sum() == 1 and x[ch["centre"], WINDOW_FLANK] == 1
    assert (x[ch["ref_A"]] == 1).all()


def test_scalars_are_scale_free_and_one_hot() -> None:
    x = _features(50, np.random.default_rng(0))
    raw = deep.raw_scalars(x)
    assert raw.shape == (50, len(deep.SCALAR_NAMES))
    subs = raw[:, [i for i, n in enumerate(deep.SCALAR_NAMES) if n.startswith("substitution_")]]
    assert (subs.sum(axis=1) == 1).all()
    scaled = deep.Scaler.fit(raw).transform(raw)
    assert np.abs(scaled.mean(axis=0)).max() < 1e-4


@pytest.mark.parametrize("model_type", deep.DL_MODEL_TYPES)
def test_shipped_networks_are_small_verified_and_deterministic(model_type: str) -> None:
    loaded = deep.load_network(model_type)
    card = loaded.card
    assert card["model_type"] == model_type and card["library_versions"]["torch"].startswith(
        deep.TORCH_VERSION
    )
    path = deep.MODELS_DIR / card["file"]
    assert path.stat().st_size < 1_000_000  # a few hundred kB at most
    assert card["n_parameters"] < 20_000
    metrics = card["holdout_metrics"]
    assert metrics["roc_auc"] > 0.9 and metrics["n_real"] > 100
    rng = np.random.default_rng(1)
    table_windows, features = _windows(300, rng), _features(300, rng)
    p1 = deep.network_probability(loaded.network, loaded.scaler, table_windows, features)
    p2 = deep.network_probability(loaded.network, loaded.scaler, table_windows, features, 64)
    assert ((p1 >= 0) & (p1 <= 1)).all()
    np.testing.assert_allclose(p1, p2, rtol=1e-5, atol=1e-6)  # batching does not change scores


def test_tampered_or_mismatched_network_is_refused(tmp_path: Path) -> None:
    name = deep.dl_model_name("cnn")
    for suffix in (".npz", ".json"):
        shutil.copy(deep.MODELS_DIR / f"{name}{suffix}", tmp_path / f"{name}{suffix}")
    path = tmp_path / f"{name}.npz"
    assert deep.load_network("cnn", model_path=path).threshold > 0
    card = json.loads(path.with_suffix(".json").read_text())
    card["channels"] = card["channels"][:-1]
    path.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(InputFileError, match="channels"):
        deep.load_network("cnn", model_path=path)
    data = bytearray(path.read_bytes())
    data[200] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(InputFileError, match="SHA-256"):
        deep.load_network("cnn", model_path=path)
    with pytest.raises(InputFileError, match="missing"):
        deep.load_network("cnn", model_path=tmp_path / "nothing.npz")
    with pytest.raises(ConfigError, match="unknown model type"):
        deep.load_network("transformer")


def test_network_learns_a_signal_only_the_window_carries(tmp_path: Path) -> None:
    """Artefacts here differ from real rows only by a second mismatch next to the centre."""
    rng = np.random.default_rng(5)
    n = 1200
    windows, features = _windows(n, rng), _features(n, rng)
    labels = rng.integers(0, 2, n)
    art = np.flatnonzero(labels == 1)
    nxt = WINDOW_FLANK + 1
    windows[art, 0, nxt] = (windows[art, 2, nxt] + 2) % 4
    train, test = np.arange(n) < 900, np.arange(n) >= 900
    network, scaler = deep.train_network(
        "cnn", windows[train], features[train], labels[train], seed=3, epochs=15
    )
    p = deep.network_probability(network, scaler, windows[test], features[test])
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(labels[test], p) > 0.95
    # saved and loaded, it scores identically
    path = deep.save_network(network, scaler, tmp_path, "artefact_cnn_v1", {"model_type": "cnn"})
    loaded = deep.load_network("cnn", model_path=path)
    p2 = deep.network_probability(loaded.network, loaded.scaler, windows[test], features[test])
    np.testing.assert_allclose(p, p2, rtol=1e-5, atol=1e-6)


def test_training_is_reproducible_by_seed() -> None:
    rng = np.random.default_rng(2)
    windows, features = _windows(300, rng), _features(300, rng)
    labels = rng.integers(0, 2, 300)
    a, sa = deep.train_network("cnn_lstm", windows, features, labels, seed=9, epochs=2)
    b, sb = deep.train_network("cnn_lstm", windows, features, labels, seed=9, epochs=2)
    np.testing.assert_array_equal(
        deep.network_probability(a, sa, windows, features),
        deep.network_probability(b, sb, windows, features),
    )


def test_without_torch_the_error_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    with pytest.raises(ConfigError) as raised:
        deep.load_network("cnn")
    assert raised.value.path == "dl_model_type"
    assert "pip install 'precise-mrd[dl]'" in raised.value.fix
    assert "torch==2.13.0" in raised.value.fix


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, Path]:
    out = tmp_path_factory.mktemp("dl-sample")
    params = SimulationParams.preset(
        "smoke", seed=31, tumor_fraction=0.05, artifact_rate=1e-3, molecules_per_locus=300
    )
    sim = simulate_sample(out, params)
    consensus = out / "consensus.bam"
    group_and_call_consensus(
        sim.bam_path, consensus, params=consensus_params_from(PipelineParams()), strategy="paired"
    )
    return consensus, sim.reference_path, sim.vcf_path, sim.bam_path


def test_windows_hold_the_molecule_and_the_reference(
    sample: tuple[Path, Path, Path, Path],
) -> None:
    consensus, reference, vcf, _ = sample
    genome = open_reference(reference)
    variants = read_variants(vcf, genome)
    plain = extract_observations(consensus, reference, variants, np.random.default_rng(0))
    table = extract_observations(
        consensus, reference, variants, np.random.default_rng(0), with_windows=True
    )
    assert plain.windows is None and table.windows is not None
    np.testing.assert_array_equal(plain.features, table.features)  # windows change nothing else
    w = table.windows
    assert w.shape == (len(table), len(WINDOW_ROWS), WIDTH)
    # the centre is always the scored alternate, never the reference
    assert (w[:, 0, WINDOW_FLANK] != w[:, 2, WINDOW_FLANK]).all()
    # at a tracked variant, the reference row is the reference sequence around it
    codes = {b: i for i, b in enumerate("ACGT")}
    for i, v in enumerate(variants):
        rows = np.flatnonzero((table.kind == 0) & (table.variant_index == i))
        text = genome.fetch(v.chrom, v.start0 - WINDOW_FLANK, v.start0 + WINDOW_FLANK + 1)
        expected = [codes.get(c, MISSING_BASE) for c in text.upper()]
        assert (w[rows, 2] == expected).all()
        assert (w[rows, 0, WINDOW_FLANK] == codes[v.alt]).all()
        assert (table.features[rows, COL["base_quality"]] == w[rows, 1, WINDOW_FLANK]).all()
    # off the centre, covered consensus bases nearly always match the reference
    off = np.ones(WIDTH, dtype=bool)
    off[WINDOW_FLANK] = False
    base, ref = w[:, 0][:, off], w[:, 2][:, off]
    covered = (base != MISSING_BASE) & (ref != MISSING_BASE)
    assert covered.mean() > 0.8
    assert (base[covered] != ref[covered]).mean() < 0.01


def test_dl_filter_on_real_evidence(sample: tuple[Path, Path, Path, Path]) -> None:
    consensus, reference, vcf, _ = sample
    variants = read_variants(vcf, open_reference(reference))
    evidence = collect_evidence(consensus, reference, variants)
    for model_type in deep.DL_MODEL_TYPES:
        filtered = apply_ml_filter(evidence, consensus, reference, variants, model_type)
        assert sum(vc.alt for vc in filtered.variants) > 0  # TF 0.05 signal survives
        for before, after in zip(evidence.variants, filtered.variants, strict=True):
            assert after.alt <= before.alt and after.informative <= before.informative
        kept = apply_ml_filter(evidence, consensus, reference, variants, model_type, threshold=1.0)
        assert kept.variants == evidence.variants


def test_train_model_writes_networks_next_to_a_tabular_model(tmp_path: Path) -> None:
    config = TrainingConfig(n_samples=4, n_holdout=2, seed=3, n_variants=6, molecules_per_locus=250)
    paths = train_models(tmp_path, model_types=("random_forest", "cnn"), config=config)
    assert [p.name for p in paths] == ["artefact_random_forest_v1.joblib", "artefact_cnn_v1.npz"]
    cards = [json.loads(p.with_suffix(".json").read_text()) for p in paths]
    # one simulated training set: the same held-out rows for both
    assert cards[0]["holdout_metrics"]["n_real"] == cards[1]["holdout_metrics"]["n_real"]
    assert cards[1]["training"]["holdout_seeds"] == [5, 6]
    loaded = deep.load_network("cnn", model_path=paths[1])
    assert 0.0 < loaded.threshold < 1.0


def _run(args: list[str]) -> Any:
    from typer.testing import CliRunner

    from precise_mrd.cli import app

    return CliRunner().invoke(app, args)


def test_cli_run_with_dl_model(sample: tuple[Path, Path, Path, Path], tmp_path: Path) -> None:
    _, reference, vcf, bam = sample
    base = ["run", "--bam", str(bam), "--reference", str(reference), "--variants", str(vcf)]
    result = _run([*base, "--out", str(tmp_path / "dl"), "--dl-model", "cnn"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "dl" / "metrics.json").read_text())
    ml = metrics["ml_filter"]
    assert ml["model_type"] == "cnn" and ml["kind"] == "deep_learning"
    assert 0 < ml["informative_after"] <= ml["informative_before"] and ml["seconds"] > 0
    call = json.loads((tmp_path / "dl" / "sample_call.json").read_text())
    assert call["decision"] == "positive"
    report = (tmp_path / "dl" / "report.html").read_text()
    assert "Artefact filter (deep learning: cnn)" in report
    both = _run(
        [*base, "--out", str(tmp_path / "both"), "--dl-model", "cnn", "--ml-model", "ensemble"]
    )
    assert both.exit_code == 2 and "one artefact filter" in both.stderr
    assert not (tmp_path / "both").exists()


def test_cli_dl_model_without_torch_says_how_to_install(
    sample: tuple[Path, Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, reference, vcf, bam = sample
    monkeypatch.setitem(sys.modules, "torch", None)
    result = _run(
        [
            "run",
            "--bam",
            str(bam),
            "--reference",
            str(reference),
            "--variants",
            str(vcf),
            "--out",
            str(tmp_path / "no-torch"),
            "--dl-model",
            "cnn_lstm",
        ]
    )
    assert result.exit_code == 2
    assert "--dl-model" in result.stderr and "pip install 'precise-mrd[dl]'" in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "no-torch").exists()


def test_config_cannot_ask_for_both_filters() -> None:
    with pytest.raises(ConfigError, match="choose one"):
        PipelineParams.from_mapping({"ml": {"use_ml_calling": True, "use_deep_learning": True}})
    params = PipelineParams.from_mapping({"ml": {"use_deep_learning": True}})
    assert params.ml.filter_model == "cnn"
    assert PipelineParams().ml.filter_model is None


def test_train_model_rejects_an_unknown_type_naming_every_valid_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        train_models(tmp_path, model_types=("transformer",))
    assert raised.value.path == "model_type"
    assert "cnn_lstm" in raised.value.fix and "ensemble" in raised.value.fix
    assert not any(tmp_path.iterdir())  # nothing simulated or written
