"""Train an artefact classifier on simulator output, held out by sample.

Samples alternate between blanks (TF = 0) and high-TF samples (default TF 0.05), each with its own
seed, with damage artefacts switched up (``artifact_rate`` 1e-3). Labels:

* **artefact (1)**: every alt observation at a tracked variant in a blank, and every background
  mismatch in any sample (no contamination is simulated, so a non-reference base off the tracked
  positions is an error: damage, PCR or sequencing);
* **real (0)**: alt observations at tracked variants of high-TF samples where ``truth.json`` says
  mutant molecules were sequenced.

Label noise left: some "real" rows are artefacts that happen to hit the alt at a locus with mutant
molecules (about ``e / (TF*AF)`` of them, ~2-4% here); and background errors and tracked variants
have different SBS-class mixes, so artefact rows are re-weighted per class to the class mix of the
real rows (the class alone then says nothing about the label; only its interactions do).

The same rows train the deep-learning networks (:mod:`precise_mrd.ml.deep`, model types ``cnn``
and ``cnn_lstm``, which also see each row's sequence window), so every model type's held-out
figures are on the same held-out samples.

The truth file is read only to build labels, never as a feature. Samples with index
``>= n_samples - n_holdout`` (different seeds) are held out for the metrics in the model card.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from precise_mrd.core.background import N_CLASSES
from precise_mrd.core.errors import ConfigError
from precise_mrd.core.records import Variant
from precise_mrd.ml.deep import (
    DL_MODEL_TYPES,
    dl_model_name,
    network_probability,
    require_torch,
    save_network,
    train_network,
)
from precise_mrd.ml.ensemble import (
    MODEL_TYPES,
    MODEL_VERSION,
    artefact_probability,
    build_model,
    model_name,
    save_model,
)
from precise_mrd.ml.features import (
    KIND_BACKGROUND_ERROR,
    KIND_VARIANT,
    ObservationTable,
    extract_observations,
)

if TYPE_CHECKING:
    from precise_mrd.pipeline.simulation import SimulationOutputs

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class TrainingConfig:
    """Size of the simulated training set (smoke scale by default: a few minutes on 2 cores)."""

    n_samples: int = 8
    n_holdout: int = 2
    seed: int = 1
    positive_tumor_fraction: float = 0.05
    artifact_rate: float = 1e-3
    n_variants: int = 30
    molecules_per_locus: int = 800
    min_real_retention: float = 0.9

    def __post_init__(self) -> None:
        if self.n_samples < 4 or not 2 <= self.n_holdout <= self.n_samples - 2:
            raise ConfigError(
                "train.n_samples",
                f"need n_samples >= 4 and 2 <= n_holdout <= n_samples - 2; got "
                f"{self.n_samples} and {self.n_holdout}",
                "use e.g. --n-samples 8",
            )
        if not 0.0 < self.positive_tumor_fraction <= 1.0:
            raise ConfigError(
                "train.positive_tumor_fraction",
                f"must be in (0, 1]; got {self.positive_tumor_fraction}",
                "use e.g. 0.05",
            )
        if not 0.0 < self.min_real_retention < 1.0:
            raise ConfigError(
                "train.min_real_retention",
                f"must be in (0, 1); got {self.min_real_retention}",
                "use e.g. 0.9",
            )


@dataclass(frozen=True)
class LabelledSample:
    """Training rows of one simulated sample."""

    seed: int
    tumor_fraction: float
    features: FloatArray
    windows: npt.NDArray[np.uint8]
    labels: npt.NDArray[np.int64]
    classes: npt.NDArray[np.int64]


@dataclass(frozen=True)
class ConsensusSample:
    """A simulated sample taken through the default consensus stage."""

    sim: SimulationOutputs
    consensus_path: Path
    variants: list[Variant]


def simulate_consensus_sample(
    work_dir: Path,
    seed: int,
    tumor_fraction: float,
    *,
    artifact_rate: float,
    n_variants: int,
    molecules_per_locus: int,
    sample_name: str,
) -> ConsensusSample:
    """Simulate a ``smoke``-preset sample and build its consensus BAM with the default pipeline
    settings (shared by training and ``benchmarks/ml_vs_statistical.py``)."""
    from precise_mrd.core.simulate import SimulationParams
    from precise_mrd.io.fasta import open_reference
    from precise_mrd.io.vcf import read_variants
    from precise_mrd.pipeline.consensus import group_and_call_consensus
    from precise_mrd.pipeline.params import PipelineParams
    from precise_mrd.pipeline.run import consensus_params_from
    from precise_mrd.pipeline.simulation import simulate_sample

    params = SimulationParams.preset(
        "smoke",
        seed=seed,
        tumor_fraction=tumor_fraction,
        artifact_rate=artifact_rate,
        n_variants=n_variants,
        molecules_per_locus=molecules_per_locus,
        sample_name=sample_name,
    )
    sim = simulate_sample(work_dir, params)
    consensus = work_dir / "consensus.bam"
    pipeline = PipelineParams()
    group_and_call_consensus(
        sim.bam_path,
        consensus,
        params=consensus_params_from(pipeline),
        strategy=pipeline.umi.strategy,
    )
    variants = read_variants(sim.vcf_path, open_reference(sim.reference_path))
    return ConsensusSample(sim, consensus, variants)


def simulate_labelled_sample(
    work_dir: Path, seed: int, tumor_fraction: float, config: TrainingConfig
) -> LabelledSample:
    """Simulate, build the consensus BAM, extract observations and label them."""
    sample = simulate_consensus_sample(
        work_dir,
        seed,
        tumor_fraction,
        artifact_rate=config.artifact_rate,
        n_variants=config.n_variants,
        molecules_per_locus=config.molecules_per_locus,
        sample_name=f"TRAIN{seed}",
    )
    sim, consensus, variants = sample.sim, sample.consensus_path, sample.variants
    table = extract_observations(
        consensus, sim.reference_path, variants, np.random.default_rng(seed), with_windows=True
    )
    assert table.windows is not None
    truth = json.loads(sim.truth_path.read_text())
    mutant = {t["key"]: int(t["n_mutant_molecules_sequenced"]) > 0 for t in truth["variants"]}
    has_mutants = np.array([mutant.get(v.key, False) for v in variants] + [False])
    rows, labels = label_rows(table, has_mutants, is_blank=tumor_fraction == 0.0)
    return LabelledSample(
        seed=seed,
        tumor_fraction=tumor_fraction,
        features=table.features[rows],
        windows=table.windows[rows],
        labels=labels,
        classes=table.sbs_class[rows],
    )


def label_rows(
    table: ObservationTable, variant_has_mutants: npt.NDArray[np.bool_], *, is_blank: bool
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Row indices and labels (1 artefact, 0 real) of a sample's observations (module docstring).

    ``variant_has_mutants[i]``: truth says variant ``i`` has sequenced mutant molecules.
    """
    at_variant = (table.kind == KIND_VARIANT) & table.is_alt
    artefact = table.kind == KIND_BACKGROUND_ERROR
    real = np.zeros(len(table), dtype=bool)
    if is_blank:
        artefact |= at_variant
    else:
        real = at_variant & variant_has_mutants[table.variant_index]
    rows = np.flatnonzero(artefact | real)
    return rows, artefact[rows].astype(np.int64)


def class_balance_weights(
    labels: npt.NDArray[np.int64], classes: npt.NDArray[np.int64]
) -> FloatArray:
    """Weights giving artefact rows the SBS-class mix of the real rows (equal total weight)."""
    real = np.bincount(classes[labels == 0], minlength=N_CLASSES) + 0.5
    art = np.bincount(classes[labels == 1], minlength=N_CLASSES) + 0.5
    w = np.ones(labels.size)
    ratio = (real / real.sum()) / (art / art.sum())
    w[labels == 1] = np.clip(ratio[classes[labels == 1]], 0.05, 20.0)
    w[labels == 1] *= (labels == 0).sum() / max(w[labels == 1].sum(), 1e-9)
    return w


def balanced_rows(
    labels: npt.NDArray[np.int64], classes: npt.NDArray[np.int64], rng: np.random.Generator
) -> npt.NDArray[np.int64]:
    """All real rows plus as many artefact rows, drawn with replacement by their class weights.

    A weighted resample instead of ``sample_weight`` so that every model type (including the
    scaled logistic regression inside the ensemble) sees the same balanced set.
    """
    weights = class_balance_weights(labels, classes)
    real = np.flatnonzero(labels == 0)
    art = np.flatnonzero(labels == 1)
    drawn = rng.choice(art, size=real.size, replace=True, p=weights[art] / weights[art].sum())
    return np.sort(np.concatenate([real, drawn]))


def choose_threshold(p_real: FloatArray, min_real_retention: float) -> float:
    """Largest-filtering threshold that keeps ``min_real_retention`` of real observations."""
    if p_real.size == 0:
        return 0.5
    return float(min(max(np.quantile(p_real, min_real_retention), 0.05), 0.99))


def evaluate(p: FloatArray, labels: npt.NDArray[np.int64], threshold: float) -> dict[str, float]:
    """Held-out metrics: ROC AUC, average precision, and what the threshold keeps."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    both = labels.min() != labels.max()
    return {
        "roc_auc": float(roc_auc_score(labels, p)) if both else float("nan"),
        "average_precision": float(average_precision_score(labels, p)) if both else float("nan"),
        "real_retained": float((p[labels == 0] <= threshold).mean()),
        "artefacts_removed": float((p[labels == 1] > threshold).mean()),
        "n_real": int((labels == 0).sum()),
        "n_artefact": int((labels == 1).sum()),
    }


@dataclass(frozen=True)
class _Fitted:
    """A fitted model of either family: scores rows and saves itself with a card."""

    model_type: str
    model: Any
    scaler: Any = None

    def __call__(self, windows: npt.NDArray[np.uint8], features: FloatArray) -> FloatArray:
        if self.model_type in DL_MODEL_TYPES:
            return network_probability(self.model, self.scaler, windows, features)
        return artefact_probability(self.model, features)

    def save(self, out_dir: Path, card: dict[str, Any]) -> Path:
        if self.model_type in DL_MODEL_TYPES:
            name = dl_model_name(self.model_type)
            return save_network(self.model, self.scaler, out_dir, name, card)
        return save_model(self.model, out_dir, model_name(self.model_type), card)


def _fit(
    model_type: str,
    windows: npt.NDArray[np.uint8],
    features: FloatArray,
    labels: npt.NDArray[np.int64],
    seed: int,
) -> _Fitted:
    if model_type in DL_MODEL_TYPES:
        network, scaler = train_network(model_type, windows, features, labels, seed)
        return _Fitted(model_type, network, scaler)
    from threadpoolctl import threadpool_limits

    estimator = build_model(model_type, seed)
    with threadpool_limits(1):
        estimator.fit(features, labels)
    return _Fitted(model_type, estimator)


def train_model(
    out_dir: Path,
    *,
    model_type: str = "ensemble",
    config: TrainingConfig | None = None,
    work_dir: Path | None = None,
) -> Path:
    """Simulate, fit, evaluate on held-out samples, write ``artefact_<type>_v<N>.joblib/.json``."""
    return train_models(out_dir, model_types=(model_type,), config=config, work_dir=work_dir)[0]


def train_models(
    out_dir: Path,
    *,
    model_types: Sequence[str] = ("ensemble",),
    config: TrainingConfig | None = None,
    work_dir: Path | None = None,
) -> list[Path]:
    """:func:`train_model` for several model types on one simulated training set."""
    for model_type in model_types:
        if model_type in DL_MODEL_TYPES:
            require_torch("model_type")
        elif model_type not in MODEL_TYPES:
            raise ConfigError(
                "model_type",
                f"unknown model type {model_type!r}",
                f"use one of {', '.join((*MODEL_TYPES, *DL_MODEL_TYPES))}",
            )
    config = config or TrainingConfig()
    started = time.perf_counter()
    samples = simulate_training_set(config, work_dir)
    return fit_models(out_dir, samples, model_types, config, time.perf_counter() - started)


def simulate_training_set(
    config: TrainingConfig, work_dir: Path | None = None
) -> list[LabelledSample]:
    """The labelled samples of ``config`` (blanks at even indices), simulated one at a time."""
    scratch = Path(tempfile.mkdtemp(prefix="train-", dir=work_dir))
    samples: list[LabelledSample] = []
    try:
        for i in range(config.n_samples):
            tf = 0.0 if i % 2 == 0 else config.positive_tumor_fraction
            sample_dir = scratch / f"sample-{i}"
            samples.append(simulate_labelled_sample(sample_dir, config.seed + i, tf, config))
            shutil.rmtree(sample_dir, ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return samples


def fit_models(
    out_dir: Path,
    samples: Sequence[LabelledSample],
    model_types: Sequence[str],
    config: TrainingConfig,
    simulated: float = 0.0,
) -> list[Path]:
    """Fit each model type on the training samples, evaluate on the held-out ones, save."""
    n_train = config.n_samples - config.n_holdout
    train, held = samples[:n_train], samples[n_train:]
    x = np.concatenate([s.features for s in train])
    y = np.concatenate([s.labels for s in train])
    classes = np.concatenate([s.classes for s in train])
    if y.min() == y.max():
        raise ConfigError(
            "train.n_samples",
            "the training samples gave only one label",
            "use more samples or a higher positive tumour fraction",
        )
    rows = balanced_rows(y, classes, np.random.default_rng(config.seed))
    xh = np.concatenate([s.features for s in held])
    yh = np.concatenate([s.labels for s in held])
    w = np.concatenate([s.windows for s in train])
    wh = np.concatenate([s.windows for s in held])
    paths = []
    for model_type in model_types:
        fit_started = time.perf_counter()
        fitted = _fit(model_type, w[rows], x[rows], y[rows], config.seed)
        threshold = choose_threshold(fitted(w[y == 0], x[y == 0]), config.min_real_retention)
        card = {
            "model_type": model_type,
            "version": MODEL_VERSION,
            "threshold": threshold,
            "positive_class": "artefact",
            "training": {
                "config": config.__dict__,
                "train_seeds": [s.seed for s in train],
                "holdout_seeds": [s.seed for s in held],
                "n_train_rows": int(y.size),
                "n_train_artefact": int(y.sum()),
                "labels": "1 = background mismatches (all samples) and tracked-variant alts in "
                "blanks; 0 = tracked-variant alts in TF samples where truth has sequenced mutant "
                "molecules",
                "simulation_seconds": round(simulated, 1),
                "fit_seconds": round(time.perf_counter() - fit_started, 1),
            },
            "holdout_metrics": evaluate(fitted(wh, xh), yh, threshold),
        }
        paths.append(fitted.save(out_dir, card))
    return paths
