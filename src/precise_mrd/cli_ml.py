"""The ``precise-mrd train-model`` command: train the ML/DL artefact filters on simulator output.

``cli.py`` wires it in with ``register(app)``. The model file and its JSON card (held-out metrics,
threshold, library versions, SHA-256) go to ``--out``; copy them into ``precise_mrd/ml/models`` to
ship them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from precise_mrd.cli_support import user_errors_to_exit


def register(app: typer.Typer) -> None:
    """Add the ``train-model`` command to ``app``."""

    @app.command("train-model")
    @user_errors_to_exit
    def train_model_command(
        out: Annotated[Path, typer.Option(help="Directory for the model file and card.")],
        model_type: Annotated[
            list[str] | None,
            typer.Option(
                help="ensemble, random_forest, xgboost, lightgbm, or the networks cnn and "
                "cnn_lstm (need the [dl] extra); repeat to train several on one training set."
            ),
        ] = None,
        n_samples: Annotated[
            int, typer.Option(help="Simulated samples (half blanks); the last 2 are held out.")
        ] = 8,
        seed: Annotated[int, typer.Option(help="Seed of the first sample.")] = 1,
    ) -> None:
        """Train an artefact classifier on simulated samples; print the model card."""
        from precise_mrd.training import TrainingConfig, train_models

        config = TrainingConfig(n_samples=n_samples, n_holdout=2, seed=seed)
        paths = train_models(out, model_types=model_type or ["ensemble"], config=config)
        cards = [
            {"model": str(path), **json.loads(path.with_suffix(".json").read_text())}
            for path in paths
        ]
        typer.echo(json.dumps(cards[0] if len(cards) == 1 else cards, indent=2, sort_keys=True))
