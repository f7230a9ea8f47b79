"""CLI commands of analytical validation: ``lob``, ``lod`` and ``validate``.

:func:`register` adds them to the ``precise-mrd`` Typer app (``cli.py`` calls it). The commands
are thin wiring over :mod:`precise_mrd.pipeline.validation`; user mistakes print one line
``error: <file>: <problem>; fix: <fix>`` on stderr and exit with status 2, as elsewhere in the CLI.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from precise_mrd.cli_support import (
    DlModel,
    MlModel,
    print_json,
    progress_printer,
    user_errors_to_exit,
    with_artefact_filter,
)
from precise_mrd.core.errors import ConfigError


class ValidationPreset(StrEnum):
    smoke = "smoke"
    standard = "standard"


def lob(
    measurements: Annotated[
        Path,
        typer.Option(
            "--measurements", help="CSV of blank results: column 'value', optional 'lot', 'sample'."
        ),
    ],
    lot_column: Annotated[
        str | None,
        typer.Option(help="Column naming the reagent lot (default: 'lot' when present)."),
    ] = None,
    parametric: Annotated[
        bool, typer.Option("--parametric", help="mean + c_p*SD instead of the rank estimate.")
    ] = False,
) -> None:
    """Limit of blank (CLSI EP17-A2) of blank measurements; prints JSON."""
    from precise_mrd.pipeline.validation import limit_of_blank_from_csv

    print_json(limit_of_blank_from_csv(measurements, lot_column=lot_column, parametric=parametric))


def lod(
    measurements: Annotated[
        Path,
        typer.Option(
            "--measurements",
            help="CSV of a dilution series: 'concentration', 'detected' (0/1), optional 'lot'.",
        ),
    ],
    lot_column: Annotated[
        str | None,
        typer.Option(help="Column naming the reagent lot (default: 'lot' when present)."),
    ] = None,
) -> None:
    """Probit LoD95 (with Fieller CI) of a dilution series; prints JSON."""
    from precise_mrd.pipeline.validation import limit_of_detection_from_csv

    print_json(limit_of_detection_from_csv(measurements, lot_column=lot_column))


def validate(
    out: Annotated[Path, typer.Option("--out", help="Directory for validation.json/.html.")],
    preset: Annotated[
        ValidationPreset, typer.Option(help="Simulator preset of every sample.")
    ] = ValidationPreset.smoke,
    replicates: Annotated[int, typer.Option(help="Samples per tumour fraction.")] = 3,
    blank_replicates: Annotated[
        int | None, typer.Option(help="Blank samples (default: max(replicates, 10)).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the whole series.")] = 0,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes (default: all cores).")
    ] = None,
    molecules_per_locus: Annotated[
        int | None, typer.Option(help="Override the preset's molecules per locus.")
    ] = None,
    tumor_fractions: Annotated[
        str | None,
        typer.Option(help="Comma-separated grid, e.g. '0,1e-4,1e-3' (default 0..1e-3)."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="Pipeline config YAML every sample is called with.")
    ] = None,
    ml_model: Annotated[
        MlModel | None, typer.Option(help="Validate with this shipped ML artefact filter on.")
    ] = None,
    dl_model: Annotated[
        DlModel | None, typer.Option(help="Validate with this shipped network filter on.")
    ] = None,
) -> None:
    """Run a simulated dilution series through the pipeline: LoB, LoD95, calibration, ROC."""
    from precise_mrd.pipeline.params import PipelineParams
    from precise_mrd.pipeline.validation import DEFAULT_TUMOR_FRACTIONS, run_validation

    pipeline_params = PipelineParams.from_yaml(config) if config else PipelineParams()
    pipeline_params = with_artefact_filter(pipeline_params, ml_model, dl_model)

    grid = DEFAULT_TUMOR_FRACTIONS
    if tumor_fractions:
        try:
            grid = tuple(float(part) for part in tumor_fractions.split(","))
        except ValueError:
            raise ConfigError(
                "--tumor-fractions",
                f"is not a comma-separated list of numbers: {tumor_fractions!r}",
                "write e.g. 0,1e-4,1e-3",
            ) from None
    result = run_validation(
        out,
        preset=preset.value,
        tumor_fractions=grid,
        replicates=replicates,
        blank_replicates=blank_replicates,
        seed=seed,
        workers=workers,
        molecules_per_locus=molecules_per_locus,
        progress=progress_printer("validation"),
        pipeline_params=pipeline_params,
    )
    summary = result.summary
    headline = {
        key: summary.get(key)
        for key in ("lob", "lod95", "lod95_ci", "lod95_status", "lod95_empirical", "specificity")
    }
    headline["artefact_filter"] = summary["design"]["artefact_filter"]
    headline["auc"] = summary.get("auc")
    headline["auc_level"] = summary.get("auc_level")  # the lowest tumour fraction of the grid
    line = summary.get("linearity")
    headline["linearity"] = (
        {"slope": line["slope"], "r_squared": line["r_squared"]} if line else None
    )
    headline["wall_seconds"] = result.seconds
    headline["json"] = str(result.json_path)
    headline["html"] = str(result.html_path)
    print_json(headline)


def register(app: typer.Typer) -> None:
    """Add the ``lob``, ``lod`` and ``validate`` commands to ``app``."""
    app.command("lob")(user_errors_to_exit(lob))
    app.command("lod")(user_errors_to_exit(lod))
    app.command("validate")(user_errors_to_exit(validate))
