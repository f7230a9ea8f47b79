"""What every ``precise-mrd`` command shares: error handling, JSON output, the progress bar.

User mistakes (:class:`~precise_mrd.core.errors.InputError`, :class:`ConfigError`) print one line
``error: <file>: <problem>; fix: <fix>`` on stderr and exit with status 2, without a traceback.
"""

from __future__ import annotations

import functools
import json
import math
import sys
from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import typer

from precise_mrd.core.errors import ConfigError, InputError, PipelineError

if TYPE_CHECKING:
    from precise_mrd.pipeline.params import PipelineParams

P = ParamSpec("P")
R = TypeVar("R")

EXIT_USER_ERROR = 2
EXIT_PIPELINE_ERROR = 3
EXIT_INTERRUPTED = 130


def user_errors_to_exit(function: Callable[P, R]) -> Callable[P, R]:
    """Turn the package's errors into a one-line message and an exit status."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(*args, **kwargs)
        except (InputError, ConfigError) as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(EXIT_USER_ERROR) from None
        except PipelineError as error:
            typer.echo(f"error: pipeline failed: {error}", err=True)
            raise typer.Exit(EXIT_PIPELINE_ERROR) from None
        except KeyboardInterrupt:
            typer.echo("error: interrupted; nothing was written to the output", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None

    return wrapper


def jsonable(value: Any) -> Any:
    """Plain JSON values: dataclasses and tuple keys flattened, NaN/inf as null.

    >>> jsonable({"a": float("inf"), (1, 2): [1.5]})
    {'a': None, '1/2': [1.5]}
    """
    from precise_mrd.pipeline.run import to_jsonable

    value = to_jsonable(value)
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [jsonable(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def print_json(payload: Any) -> None:
    """Print ``payload`` as indented JSON on stdout."""
    typer.echo(json.dumps(jsonable(payload), indent=2, default=str))


def progress_printer(label: str = "starting") -> Callable[[str, float], None] | None:
    """A rich progress bar on a terminal; nothing when stderr is a pipe or a file."""
    if not sys.stderr.isatty():
        return None
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), transient=True
    )
    task = progress.add_task(label, total=1.0)
    progress.start()

    def update(stage: str, fraction: float) -> None:
        progress.update(task, completed=fraction, description=stage)
        if fraction >= 1.0:
            progress.stop()

    return update


class MlModel(StrEnum):
    """Shipped tabular artefact models (``--ml-model``)."""

    ensemble = "ensemble"
    random_forest = "random_forest"
    xgboost = "xgboost"
    lightgbm = "lightgbm"


class DlModel(StrEnum):
    """Shipped artefact networks (``--dl-model``, needs the ``[dl]`` extra)."""

    cnn = "cnn"
    cnn_lstm = "cnn_lstm"


def with_artefact_filter(
    params: PipelineParams, ml_model: MlModel | None, dl_model: DlModel | None
) -> PipelineParams:
    """``params`` with the filter chosen by ``--ml-model`` / ``--dl-model`` (at most one)."""
    if ml_model is not None and dl_model is not None:
        raise ConfigError(
            "--ml-model/--dl-model", "give at most one artefact filter", "pick one of the two"
        )
    if ml_model is not None:
        ml = {"use_ml_calling": True, "model_type": ml_model.value, "use_deep_learning": False}
    elif dl_model is not None:
        from precise_mrd.ml.deep import check_torch_installed

        check_torch_installed("--dl-model")
        ml = {"use_deep_learning": True, "dl_model_type": dl_model.value, "use_ml_calling": False}
    else:
        return params
    return params.with_overrides(ml={**params.ml.model_dump(), **ml})
