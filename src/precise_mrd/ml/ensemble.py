"""Artefact classifiers and their versioned, hash-checked model files.

Model types (:data:`MODEL_TYPES`):

* ``ensemble``: soft vote of histogram gradient boosting, a random forest and a standardised
  logistic regression (scikit-learn), each seeing :data:`~precise_mrd.ml.features.FEATURE_NAMES`;
* ``random_forest``: the forest alone;
* ``xgboost`` / ``lightgbm``: gradient-boosted trees from those libraries, only when installed
  (otherwise :class:`~precise_mrd.core.errors.ConfigError` says ``pip install precise-mrd[ml]``).

Class 1 is *artefact*; :func:`artefact_probability` returns its probability.

Model file format. The fitted estimator is written with ``joblib`` (a pickle of scikit-learn /
xgboost / lightgbm objects only) as ``<name>.joblib``, next to a JSON model card ``<name>.json``
holding the SHA-256 of the file, the feature names, the library versions it was written with, the
decision threshold and the held-out metrics. :func:`load_model` refuses a file whose hash or
feature list does not match its card, so only the files written by ``precise-mrd train-model``
and shipped in ``precise_mrd/ml/models`` are ever unpickled. (``skops`` would avoid pickle
altogether but is not a dependency of this project; the hash check gives the same guarantee for
shipped files.)

>>> sorted(MODEL_TYPES)
['ensemble', 'lightgbm', 'random_forest', 'xgboost']
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import platform
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from precise_mrd.core.errors import ConfigError, InputFileError
from precise_mrd.ml.features import FEATURE_NAMES, ObservationTable

FloatArray = npt.NDArray[np.float64]
MODEL_TYPES = ("ensemble", "random_forest", "xgboost", "lightgbm")
MODELS_DIR = Path(__file__).parent / "models"
MODEL_VERSION = 1
_INSTALL = "pip install precise-mrd[ml]"


def model_name(model_type: str, version: int = MODEL_VERSION) -> str:
    """Versioned base name of a shipped model, e.g. ``artefact_ensemble_v1``."""
    return f"artefact_{model_type}_v{version}"


def _require(module: str, model_type: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            "ml_model_type",
            f"model type {model_type!r} needs the package {module!r}, which is not installed",
            f"install the ML extra: `{_INSTALL}`",
        ) from exc


def check_model_type(model_type: str) -> None:
    """Raise :class:`ConfigError` for an unknown model type."""
    if model_type not in MODEL_TYPES:
        raise ConfigError(
            "ml_model_type", f"unknown model type {model_type!r}", f"use one of {MODEL_TYPES}"
        )


def build_model(model_type: str, seed: int) -> Any:
    """An unfitted classifier of ``model_type`` (seeded, single-threaded)."""
    check_model_type(model_type)
    _require("sklearn", model_type)
    from sklearn.ensemble import (
        HistGradientBoostingClassifier,
        RandomForestClassifier,
        VotingClassifier,
    )
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    forest = RandomForestClassifier(
        n_estimators=150, min_samples_leaf=5, max_depth=12, n_jobs=1, random_state=seed
    )
    if model_type == "random_forest":
        return forest
    if model_type == "ensemble":
        return VotingClassifier(
            [
                (
                    "gradient_boosting",
                    HistGradientBoostingClassifier(
                        max_iter=200, learning_rate=0.05, max_leaf_nodes=15, random_state=seed
                    ),
                ),
                ("random_forest", forest),
                (
                    "logistic_regression",
                    make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000)),
                ),
            ],
            voting="soft",
        )
    if model_type == "xgboost":
        xgb = _require("xgboost", model_type)
        return xgb.XGBClassifier(
            n_estimators=200,
            max_depth=4,
            learning_rate=0.05,
            subsample=0.8,
            n_jobs=1,
            random_state=seed,
            tree_method="hist",
        )
    lgb = _require("lightgbm", model_type)
    return lgb.LGBMClassifier(
        n_estimators=200,
        num_leaves=15,
        learning_rate=0.05,
        subsample=0.8,
        subsample_freq=1,
        n_jobs=1,
        random_state=seed,
        verbose=-1,
    )


def artefact_probability(model: Any, features: FloatArray) -> FloatArray:
    """P(artefact) of each row of ``features`` (columns in FEATURE_NAMES order)."""
    if features.shape[0] == 0:
        return np.zeros(0)
    if features.shape[1] != len(FEATURE_NAMES):
        raise ValueError(f"features must have {len(FEATURE_NAMES)} columns; got {features.shape}")
    from threadpoolctl import threadpool_limits

    # NB: OpenMP threads of the boosted trees slow prediction ~10x on a shared 2-core machine
    with threadpool_limits(1):
        return np.asarray(model.predict_proba(features)[:, 1], dtype=np.float64)


def library_versions() -> dict[str, str]:
    """Versions of the libraries a model file depends on (those installed)."""
    out = {"python": platform.python_version(), "numpy": np.__version__}
    for module in ("sklearn", "joblib", "xgboost", "lightgbm"):
        try:
            out[module] = str(importlib.import_module(module).__version__)
        except ImportError:
            continue
    return out


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class LoadedModel:
    """A verified model and its card."""

    estimator: Any
    card: dict[str, Any]

    needs_windows = False

    @property
    def threshold(self) -> float:
        return float(self.card["threshold"])

    def score(self, table: ObservationTable) -> FloatArray:
        """P(artefact) of each observation."""
        return artefact_probability(self.estimator, table.features)


def save_model(estimator: Any, out_dir: Path, name: str, card: dict[str, Any]) -> Path:
    """Write ``<name>.joblib`` and ``<name>.json`` (with the file's SHA-256) atomically."""
    import joblib

    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / f"{name}.joblib"
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=out_dir)
    os.close(fd)
    try:
        joblib.dump(estimator, tmp, compress=3)
        os.chmod(tmp, 0o644)  # NB: mkstemp creates 0600; a shipped file must be world-readable
        full = {
            **card,
            "name": name,
            "file": model_path.name,
            "sha256": file_sha256(Path(tmp)),
            "feature_names": list(FEATURE_NAMES),
            "library_versions": library_versions(),
        }
        card_tmp = Path(tmp + ".json")
        card_tmp.write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, model_path)
        os.replace(card_tmp, out_dir / f"{name}.json")
    finally:
        Path(tmp).unlink(missing_ok=True)
        Path(tmp + ".json").unlink(missing_ok=True)
    return model_path


def read_verified_card(model_path: Path, model_type: str) -> dict[str, Any]:
    """The JSON card next to ``model_path``, once the file's SHA-256 matches the card's."""
    card_path = model_path.with_suffix(".json")
    if not model_path.is_file() or not card_path.is_file():
        raise InputFileError(
            str(model_path),
            "model file or its JSON card is missing",
            f"train one with `precise-mrd train-model --model-type {model_type}`",
        )
    card: dict[str, Any] = json.loads(card_path.read_text())
    if card.get("sha256") != file_sha256(model_path):
        raise InputFileError(
            str(model_path),
            "SHA-256 differs from the one in its model card (file changed or corrupt)",
            "re-train the model or restore the shipped file",
        )
    return card


def load_model(model_type: str = "ensemble", *, model_path: Path | None = None) -> LoadedModel:
    """Load a model (default: the shipped one of ``model_type``) after checking its card."""
    check_model_type(model_type)
    if model_path is None:
        model_path = MODELS_DIR / f"{model_name(model_type)}.joblib"
    card = read_verified_card(model_path, model_type)
    if list(card.get("feature_names", [])) != list(FEATURE_NAMES):
        raise InputFileError(
            str(model_path),
            "model was trained on a different feature list",
            "re-train it with this version of precise-mrd",
        )
    if card.get("model_type") in ("xgboost", "lightgbm"):
        _require(str(card["model_type"]), str(card["model_type"]))
    import joblib

    return LoadedModel(estimator=joblib.load(model_path), card=card)
