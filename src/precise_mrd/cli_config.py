"""CLI command ``config-docs``: write the configuration reference generated from PipelineParams.

:func:`register` adds it to the ``precise-mrd`` Typer app (``cli.py`` calls it).
``precise-mrd config-docs --out docs/configuration.md`` regenerates the checked-in reference (a
unit test fails when it is stale); without ``--out`` the Markdown goes to stdout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from precise_mrd.cli_support import user_errors_to_exit


def config_docs(
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write the Markdown here (e.g. docs/configuration.md)."),
    ] = None,
) -> None:
    """Print (or write) every config section and key: type, default, allowed values, meaning."""
    from precise_mrd.pipeline.config_docs import render_config_docs

    text = render_config_docs()
    if out is None:
        typer.echo(text, nl=False)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {out}", err=True)


def register(app: typer.Typer) -> None:
    """Add the ``config-docs`` command to ``app``."""
    app.command("config-docs")(user_errors_to_exit(config_docs))
