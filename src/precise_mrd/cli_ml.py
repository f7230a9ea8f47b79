"""The ``precise-mrd train-model`` command: train the ML artefact filter on simulator output.

``cli.py`` wires it in with ``register(app)``. The model file and its JSON card (held-out metrics,
threshold, library versions, SHA-256) go to ``--out``; copy them into ``precise_mrd/ml/models`` to
ship them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the ``train-model`` command to ``app``."""

    @app.command("train-model")
    def train_model_command(
        out: Annotated[Path, typer.Option(help="Directory for the model file and card.")],
        model_type: Annotated[
            str, typer.Option(help="ensemble, random_forest, xgboost or lightgbm.")
        ] = "ensemble",
        n_samples: Annotated[
            int, typer.Option(help="Simulated samples (half blanks); the last 2 are held out.")
        ] = 8,
        seed: Annotated[int, typer.Option(help="Seed of the first sample.")] = 1,
    ) -> None:
        """Train an artefact classifier on simulated samples; print the model card."""
        from precise_mrd.ml.train import TrainingConfig, train_model

        config = TrainingConfig(n_samples=n_samples, n_holdout=2, seed=seed)
        path = train_model(out, model_type=model_type, config=config)
        card = json.loads(path.with_suffix(".json").read_text())
        typer.echo(json.dumps({"model": str(path), **card}, indent=2, sort_keys=True))
