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
from typing import Any, ParamSpec, TypeVar

import typer

from precise_mrd.core.errors import ConfigError, InputError, PipelineError

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
