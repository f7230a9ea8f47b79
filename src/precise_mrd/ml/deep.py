"""Deep-learning artefact scorer: a small 1D CNN over each observation's sequence window.

Optional: needs PyTorch (``pip install 'precise-mrd[dl]'``, which pins ``torch==2.13.0``, the CPU
build). Without it, every entry point raises :class:`~precise_mrd.core.errors.ConfigError`
saying so; nothing else in the package imports torch.

Input of one observation (:func:`encode`):

* a ``(len(CHANNELS), 2 * WINDOW_FLANK + 1)`` sequence tensor from its window
  (:attr:`precise_mrd.ml.features.ObservationTable.windows`): molecule base one-hot, covered,
  quality / 40, reference base one-hot, mismatch, centre marker;
* a vector of molecule-level scalars (:data:`SCALAR_NAMES`): the tabular features made
  scale-free (log1p of counts and lengths, one-hot substitution type) and standardised with the
  training set's mean and SD, which the model file stores.

Model types (:data:`DL_MODEL_TYPES`): ``cnn`` (two convolutions, then the centre position's
activations and a max over the window, then a small dense head) and ``cnn_lstm`` (the same with
a bidirectional LSTM over the convolved window). Both have under 20k parameters.

Model file format: ``artefact_<type>_v<N>.npz`` holds the weights as plain arrays (no pickle,
loaded with ``allow_pickle=False``) next to a JSON card (architecture, scaler, threshold, SHA-256,
held-out metrics, library versions), checked as :func:`precise_mrd.ml.ensemble.load_model` checks
the tabular models'.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from precise_mrd.core.errors import ConfigError, InputFileError
from precise_mrd.ml.ensemble import (
    MODEL_VERSION,
    MODELS_DIR,
    file_sha256,
    library_versions,
    read_verified_card,
)
from precise_mrd.ml.features import (
    FEATURE_NAMES,
    MISSING_BASE,
    WINDOW_FLANK,
    WINDOW_ROWS,
    ObservationTable,
    class_features,
)

FloatArray = npt.NDArray[np.float64]
Float32Array = npt.NDArray[np.float32]
DL_MODEL_TYPES = ("cnn", "cnn_lstm")
TORCH_VERSION = "2.13.0"
INSTALL_HINT = (
    "install the deep-learning extra: `pip install 'precise-mrd[dl]'` (torch==2.13.0, CPU)"
)

CHANNELS: tuple[str, ...] = (
    "base_A",
    "base_C",
    "base_G",
    "base_T",
    "covered",
    "quality",
    "ref_A",
    "ref_C",
    "ref_G",
    "ref_T",
    "mismatch",
    "centre",
)
_LOG_FEATURES = (
    "family_size",
    "min_strand_depth",
    "read_end_distance",
    "fragment_length",
    "other_mismatches",
)
_PLAIN_FEATURES = (
    "base_quality",
    "is_duplex",
    "consensus_error_rate",
    "mapping_quality",
    "is_cpg",
    "template_strand",
)
SCALAR_NAMES: tuple[str, ...] = (
    *(f"log1p_{n}" for n in _LOG_FEATURES),
    *_PLAIN_FEATURES,
    *(f"substitution_{s}" for s in ("CA", "CG", "CT", "TA", "TC", "TG")),
)
_WIDTH = 2 * WINDOW_FLANK + 1


def require_torch(field: str = "dl_model_type") -> Any:
    """The ``torch`` module, or :class:`ConfigError` naming ``field`` and how to install it."""
    try:
        import torch
    except ImportError as exc:
        raise ConfigError(
            field, "deep-learning scoring needs PyTorch, which is not installed", INSTALL_HINT
        ) from exc
    return torch


def check_torch_installed(field: str) -> None:
    """:func:`require_torch`'s error, without importing torch (~200 MB) before it is needed."""
    if "torch" in sys.modules:
        installed = sys.modules["torch"] is not None
    else:
        installed = importlib.util.find_spec("torch") is not None
    if not installed:
        require_torch(field)


def check_dl_model_type(model_type: str) -> None:
    """Raise :class:`ConfigError` for an unknown deep-learning model type."""
    if model_type not in DL_MODEL_TYPES:
        raise ConfigError(
            "dl_model_type", f"unknown model type {model_type!r}", f"use one of {DL_MODEL_TYPES}"
        )


def dl_model_name(model_type: str, version: int = MODEL_VERSION) -> str:
    """Versioned base name of a shipped network, e.g. ``artefact_cnn_v1``."""
    return f"artefact_{model_type}_v{version}"


def encode_sequences(windows: npt.NDArray[np.uint8]) -> Float32Array:
    """``(n, len(CHANNELS), width)`` network input from sequence windows (module docstring)."""
    base, qual, ref = (windows[:, i].astype(np.int64) for i in range(len(WINDOW_ROWS)))
    n = windows.shape[0]
    out = np.zeros((n, len(CHANNELS), windows.shape[2]), dtype=np.float32)
    eye = np.eye(MISSING_BASE + 1, dtype=np.float32)[:, :4]
    out[:, 0:4] = eye[base].transpose(0, 2, 1)
    covered = base != MISSING_BASE
    out[:, 4] = covered
    out[:, 5] = np.minimum(qual, 60) / 40.0
    out[:, 6:10] = eye[ref].transpose(0, 2, 1)
    out[:, 10] = covered & (ref != MISSING_BASE) & (base != ref)
    out[:, 11, windows.shape[2] // 2] = 1.0
    return out


def raw_scalars(features: FloatArray) -> FloatArray:
    """Unstandardised :data:`SCALAR_NAMES` columns from tabular features."""
    col = {name: features[:, i] for i, name in enumerate(FEATURE_NAMES)}
    substitution, _ = class_features(col["sbs96_class"].astype(np.int64))
    return np.column_stack(
        [
            *(np.log1p(np.maximum(col[n], 0.0)) for n in _LOG_FEATURES),
            *(col[n] for n in _PLAIN_FEATURES),
            np.eye(6)[substitution],
        ]
    )


@dataclass(frozen=True)
class Scaler:
    """Per-column mean and SD of the training scalars (SD floored at 1e-6)."""

    mean: FloatArray
    sd: FloatArray

    @staticmethod
    def fit(raw: FloatArray) -> Scaler:
        return Scaler(mean=raw.mean(axis=0), sd=np.maximum(raw.std(axis=0), 1e-6))

    def transform(self, raw: FloatArray) -> Float32Array:
        return ((raw - self.mean) / self.sd).astype(np.float32)


def build_network(model_type: str, seed: int) -> Any:
    """An untrained network of ``model_type``, its weights drawn with seed ``seed``."""
    check_dl_model_type(model_type)
    torch = require_torch()
    nn = torch.nn
    width = 32

    class ArtefactNet(nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Sequential(
                nn.Conv1d(len(CHANNELS), width, kernel_size=5, padding=2),
                nn.ReLU(),
                nn.Conv1d(width, width, kernel_size=3, padding=1),
                nn.ReLU(),
            )
            self.lstm = (
                nn.LSTM(width, width // 2, batch_first=True, bidirectional=True)
                if model_type == "cnn_lstm"
                else None
            )
            self.head = nn.Sequential(
                nn.Linear(2 * width + len(SCALAR_NAMES), 32), nn.ReLU(), nn.Linear(32, 1)
            )

        def forward(self, sequences: Any, scalars: Any) -> Any:
            h = self.conv(sequences)
            if self.lstm is not None:
                h = self.lstm(h.transpose(1, 2))[0].transpose(1, 2)
            centre = h[:, :, h.shape[2] // 2]
            pooled = h.amax(dim=2)
            return self.head(torch.cat([centre, pooled, scalars], dim=1)).squeeze(1)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ArtefactNet()


@dataclass(frozen=True)
class LoadedNetwork:
    """A verified network, its scaler and its card."""

    network: Any
    scaler: Scaler
    card: dict[str, Any]
    needs_windows = True

    @property
    def threshold(self) -> float:
        return float(self.card["threshold"])

    def score(self, table: ObservationTable) -> FloatArray:
        """P(artefact) of each observation (``table`` must carry windows)."""
        if table.windows is None:
            raise ValueError("the deep-learning scorer needs sequence windows (with_windows=True)")
        return network_probability(self.network, self.scaler, table.windows, table.features)


def network_probability(
    network: Any,
    scaler: Scaler,
    windows: npt.NDArray[np.uint8],
    features: FloatArray,
    batch_size: int = 4096,
) -> FloatArray:
    """P(artefact) of each observation from its sequence window and tabular features."""
    torch = require_torch()
    n = features.shape[0]
    out = np.zeros(n)
    scalars = scaler.transform(raw_scalars(features))
    network.eval()
    with torch.inference_mode():
        for lo in range(0, n, batch_size):
            seq = torch.from_numpy(encode_sequences(windows[lo : lo + batch_size]))
            sca = torch.from_numpy(scalars[lo : lo + batch_size])
            out[lo : lo + batch_size] = torch.sigmoid(network(seq, sca)).numpy()
    return out


def _torch_versions() -> dict[str, str]:
    torch = require_torch()
    return {**library_versions(), "torch": str(torch.__version__)}


def save_network(
    network: Any, scaler: Scaler, out_dir: Path, name: str, card: dict[str, Any]
) -> Path:
    """Write ``<name>.npz`` (weights and scaler) and ``<name>.json`` atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / f"{name}.npz"
    arrays = {f"w.{k}": v.detach().cpu().numpy() for k, v in network.state_dict().items()}
    arrays["scaler.mean"], arrays["scaler.sd"] = scaler.mean, scaler.sd
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".npz", dir=out_dir)
    os.close(fd)
    card_tmp = Path(tmp + ".json")
    try:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)
        os.chmod(tmp, 0o644)  # NB: mkstemp creates 0600; a shipped file must be world-readable
        full = {
            **card,
            "name": name,
            "file": model_path.name,
            "sha256": file_sha256(Path(tmp)),
            "feature_names": list(FEATURE_NAMES),
            "channels": list(CHANNELS),
            "scalar_names": list(SCALAR_NAMES),
            "window_flank": WINDOW_FLANK,
            "n_parameters": int(sum(v.numel() for v in network.parameters())),
            "library_versions": _torch_versions(),
        }
        card_tmp.write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, model_path)
        os.replace(card_tmp, out_dir / f"{name}.json")
    finally:
        Path(tmp).unlink(missing_ok=True)
        card_tmp.unlink(missing_ok=True)
    return model_path


def load_network(model_type: str = "cnn", *, model_path: Path | None = None) -> LoadedNetwork:
    """Load a network (default: the shipped one of ``model_type``) after checking its card."""
    check_dl_model_type(model_type)
    torch = require_torch()
    if model_path is None:
        model_path = MODELS_DIR / f"{dl_model_name(model_type)}.npz"
    card = read_verified_card(model_path, model_type)
    expected = {
        "model_type": model_type,
        "feature_names": list(FEATURE_NAMES),
        "channels": list(CHANNELS),
        "scalar_names": list(SCALAR_NAMES),
        "window_flank": WINDOW_FLANK,
    }
    for key, value in expected.items():
        if card.get(key) != value:
            raise InputFileError(
                str(model_path),
                f"model card's {key} does not match this version ({card.get(key)!r})",
                "re-train it with this version of precise-mrd",
            )
    with np.load(model_path, allow_pickle=False) as data:
        state = {k[2:]: torch.from_numpy(data[k].copy()) for k in data.files if k.startswith("w.")}
        scaler = Scaler(mean=data["scaler.mean"].copy(), sd=data["scaler.sd"].copy())
    network = build_network(model_type, seed=0)
    network.load_state_dict(state)
    network.eval()
    return LoadedNetwork(network=network, scaler=scaler, card=card)


def train_network(
    model_type: str,
    windows: npt.NDArray[np.uint8],
    features: FloatArray,
    labels: npt.NDArray[np.int64],
    seed: int,
    *,
    epochs: int = 8,
    batch_size: int = 256,
    learning_rate: float = 3e-3,
) -> tuple[Any, Scaler]:
    """Fit a network on (already balanced) rows; returns it with the scaler fitted on the rows."""
    torch = require_torch()
    scaler = Scaler.fit(raw_scalars(features))
    seq = torch.from_numpy(encode_sequences(windows))
    sca = torch.from_numpy(scaler.transform(raw_scalars(features)))
    y = torch.from_numpy(labels.astype(np.float32))
    network = build_network(model_type, seed)
    optimiser = torch.optim.Adam(network.parameters(), lr=learning_rate, weight_decay=1e-4)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    rng = np.random.default_rng(seed)
    network.train()
    for _ in range(epochs):
        order = torch.from_numpy(rng.permutation(labels.size))
        for lo in range(0, labels.size, batch_size):
            idx = order[lo : lo + batch_size]
            optimiser.zero_grad()
            loss = loss_fn(network(seq[idx], sca[idx]), y[idx])
            loss.backward()
            optimiser.step()
    network.eval()
    return network, scaler
