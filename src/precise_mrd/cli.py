"""The ``precise-mrd`` command line: thin wiring over the pipeline and the service.

User mistakes (:class:`~precise_mrd.core.errors.InputError`, :class:`ConfigError`) print one line
``error: <file>: <problem>; fix: <fix>`` on stderr and exit with status 2, without a traceback.
"""

from __future__ import annotations

import os
import sys
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

#: what `run` says when --out already holds files
FORCE_FIX = "add --force to replace it, or choose another --out"

app = typer.Typer(
    name="precise-mrd",
    help="Tumour-informed MRD detection from UMI-tagged cfDNA sequencing.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class Preset(StrEnum):
    smoke = "smoke"
    standard = "standard"


class Strategy(StrEnum):
    auto = "auto"
    identity = "identity"
    edit = "edit"
    adjacency = "adjacency"
    directional = "directional"
    paired = "paired"


@app.command()
@user_errors_to_exit
def simulate(
    out_dir: Annotated[Path, typer.Argument(help="Directory to write the simulated sample into.")],
    preset: Annotated[
        Preset, typer.Option(help="Starting point for all parameters.")
    ] = Preset.smoke,
    seed: Annotated[int | None, typer.Option(help="Random seed (same seed, same bytes).")] = None,
    tumor_fraction: Annotated[
        float | None, typer.Option(help="Fraction of cfDNA molecules from tumour.")
    ] = None,
    n_variants: Annotated[int | None, typer.Option(help="Tracked tumour variants.")] = None,
    molecules_per_locus: Annotated[
        int | None, typer.Option(help="cfDNA molecules covering each variant.")
    ] = None,
    mean_family_size: Annotated[
        float | None, typer.Option(help="Mean PCR copies sequenced per strand.")
    ] = None,
    duplex: Annotated[
        bool | None, typer.Option("--duplex/--no-duplex", help="Sequence both strands.")
    ] = None,
    read_length: Annotated[int | None, typer.Option(help="Template bases per read.")] = None,
    artifact_rate: Annotated[
        float | None, typer.Option(help="Damage artefact rate per susceptible base.")
    ] = None,
    fastq: Annotated[
        bool, typer.Option("--fastq", help="Also write paired FASTQ with UMIs in the reads.")
    ] = False,
) -> None:
    """Simulate a UMI-tagged cfDNA sample with known truth (FASTA, BAM, VCF, truth.json)."""
    from precise_mrd.core.simulate import SimulationParams
    from precise_mrd.pipeline.simulation import simulate_sample

    overrides = {
        "seed": seed,
        "tumor_fraction": tumor_fraction,
        "n_variants": n_variants,
        "molecules_per_locus": molecules_per_locus,
        "mean_family_size": mean_family_size,
        "duplex": duplex,
        "read_length": read_length,
        "artifact_rate": artifact_rate,
    }
    params = SimulationParams.preset(
        preset.value, **{key: value for key, value in overrides.items() if value is not None}
    )
    outputs = simulate_sample(out_dir, params, write_fastq=fastq)
    summary = {
        "reference": outputs.reference_path,
        "reads": outputs.bam_path,
        "variants": outputs.vcf_path,
        "truth": outputs.truth_path,
        "n_variants": outputs.n_variants,
        "n_molecules": outputs.n_molecules,
        "n_read_pairs": outputs.n_read_pairs,
    }
    if fastq:
        summary["fastq"] = [outputs.fastq_r1_path, outputs.fastq_r2_path]
        summary["read_structure"] = f"{params.read_structure} {params.read_structure}"
    print_json(summary)


@app.command()
@user_errors_to_exit
def group(
    bam: Annotated[Path, typer.Option("--bam", help="Coordinate-sorted BAM with UMIs.")],
    out: Annotated[Path, typer.Option("--out", help="Output BAM with MI tags.")],
    strategy: Annotated[
        Strategy, typer.Option(help="UMI clustering method.")
    ] = Strategy.directional,
    group_out: Annotated[
        Path | None, typer.Option(help="Also write UMI-tools style groups TSV.")
    ] = None,
    umi_from_read_name: Annotated[
        bool, typer.Option(help="Take the UMI from the read name's end.")
    ] = False,
    umi_separator: Annotated[
        str, typer.Option(help="Separator before the UMI in read names.")
    ] = "_",
    max_edits: Annotated[
        int, typer.Option(help="Mismatches allowed between UMIs of one molecule.")
    ] = 1,
    umi_tag: Annotated[str, typer.Option(help="SAM tag holding the UMI.")] = "RX",
) -> None:
    """Group reads into molecules by UMI (writes MI tags)."""
    from precise_mrd.pipeline.group import group_bam

    stats = group_bam(
        bam,
        out,
        strategy=strategy.value,
        max_edits=max_edits,
        umi_tag=umi_tag,
        umi_from_read_name=umi_from_read_name,
        umi_separator=umi_separator,
        group_out_path=group_out,
    )
    print_json(stats)


@app.command()
@user_errors_to_exit
def consensus(
    bam: Annotated[Path, typer.Option("--bam", help="Grouped BAM (MI tags), coordinate-sorted.")],
    out: Annotated[Path, typer.Option("--out", help="Consensus BAM to write.")],
    config: Annotated[
        Path | None, typer.Option(help="YAML config (consensus section used).")
    ] = None,
    min_reads: Annotated[
        list[int] | None, typer.Option(help="Minimum reads: total [strand A [strand B]].")
    ] = None,
) -> None:
    """Call single-strand and duplex consensus reads per molecule."""
    from precise_mrd.pipeline.consensus import call_consensus_bam
    from precise_mrd.pipeline.params import PipelineParams
    from precise_mrd.pipeline.run import consensus_params_from

    params = PipelineParams.from_yaml(config) if config else PipelineParams()
    if min_reads:
        section = params.consensus.model_dump()
        section["min_reads"] = min_reads
        params = PipelineParams.from_mapping({**params.model_dump(), "consensus": section})
    stats = call_consensus_bam(bam, out, params=consensus_params_from(params))
    print_json(stats)


@app.command()
@user_errors_to_exit
def run(
    reference: Annotated[
        Path, typer.Option("--reference", help="Reference FASTA (indexed or writable dir).")
    ],
    variants: Annotated[Path, typer.Option("--variants", help="Tumour variants: VCF or TSV.")],
    out: Annotated[Path, typer.Option("--out", help="Output directory.")],
    bam: Annotated[
        Path | None, typer.Option("--bam", help="Coordinate-sorted BAM with UMIs.")
    ] = None,
    fastq: Annotated[
        tuple[Path, Path] | None,
        typer.Option("--fastq", help="R1 and R2 FASTQ (instead of --bam)."),
    ] = None,
    read_structure: Annotated[
        str | None, typer.Option(help='Read structures of R1 and R2, e.g. "8M142T 8M142T".')
    ] = None,
    targets: Annotated[
        Path | None, typer.Option(help="Target regions BED (background is measured there).")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="YAML config.")] = None,
    threads: Annotated[int | None, typer.Option(help="Worker threads.")] = None,
    processes: Annotated[
        int | None,
        typer.Option(help="Processes that split the sample by genomic region (same results)."),
    ] = None,
    strategy: Annotated[
        Strategy | None,
        typer.Option(
            help="UMI grouping (umi.strategy); default auto: paired for duplex A-B UMIs, "
            "directional for single-strand ones."
        ),
    ] = None,
    min_reads: Annotated[
        list[int] | None,
        typer.Option(
            help="Minimum reads per molecule (consensus.min_reads): total [larger strand "
            "[smaller strand]]; repeat the option for each value, e.g. --min-reads 2 "
            "--min-reads 1."
        ),
    ] = None,
    max_edits: Annotated[
        int | None,
        typer.Option(help="Mismatches allowed between UMIs of one molecule (umi.max_edits)."),
    ] = None,
    umi_tag: Annotated[
        str | None, typer.Option(help="SAM tag holding the UMI (umi.umi_tag; default RX).")
    ] = None,
    umi_from_read_name: Annotated[
        bool | None,
        typer.Option(help="Take the UMI from the read name's end (umi.umi_from_read_name)."),
    ] = None,
    umi_separator: Annotated[
        str | None,
        typer.Option(help="Separator before the UMI in read names (umi.umi_separator)."),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for the calibration draws.")] = None,
    ml_model: Annotated[
        MlModel | None,
        typer.Option(
            help="Drop likely artefact molecules with this shipped ML model (off by default)."
        ),
    ] = None,
    dl_model: Annotated[
        DlModel | None,
        typer.Option(
            help="Drop likely artefact molecules with this shipped network (needs the [dl] extra)."
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Replace what --out holds (an earlier run) once this run succeeds."
        ),
    ] = False,
) -> None:
    """Run the whole pipeline: group, consensus, background, evidence, sample call, report."""
    from precise_mrd.pipeline.params import PipelineParams
    from precise_mrd.pipeline.report import format_p_value
    from precise_mrd.pipeline.run import RunInputs, check_output_dir, run_pipeline

    check_output_dir(out, overwrite=force, fix=FORCE_FIX)

    if (bam is None) == (fastq is None):
        raise ConfigError("--bam/--fastq", "give exactly one of --bam or --fastq R1 R2", "pick one")
    if fastq is not None and not read_structure:
        raise ConfigError(
            "--read-structure",
            "FASTQ input needs read structures",
            'e.g. --read-structure "8M142T 8M142T"',
        )
    params = PipelineParams.from_yaml(config) if config else PipelineParams()
    if params.job_type != "sample":
        raise ConfigError(
            "job_type",
            f"is {params.job_type!r} (a dilution series), but `precise-mrd run` calls one sample",
            "set job_type: sample to call this sample, or submit the config to the service "
            "(POST /submit) to run the series",
        )
    overrides: dict[str, object] = {
        k: v
        for k, v in {"threads": threads, "processes": processes, "seed": seed}.items()
        if v is not None
    }
    umi = {
        k: v
        for k, v in {
            "strategy": strategy.value if strategy else None,
            "max_edits": max_edits,
            "umi_tag": umi_tag,
            "umi_from_read_name": umi_from_read_name,
            "umi_separator": umi_separator,
        }.items()
        if v is not None
    }
    if umi:
        overrides["umi"] = {**params.umi.model_dump(), **umi}
    if min_reads:
        overrides["consensus"] = {**params.consensus.model_dump(), "min_reads": min_reads}
    if overrides:
        params = params.with_overrides(**overrides)
    params = with_artefact_filter(params, ml_model, dl_model)
    inputs = RunInputs(
        reference_path=reference,
        variants_path=variants,
        bam_path=bam,
        fastq_paths=fastq,
        read_structures=read_structure,
        targets_path=targets,
    )
    result = run_pipeline(inputs, params, out, progress=progress_printer(), overwrite=force)
    call = result.sample_call
    typer.echo(
        f"{call['decision']}: tumour fraction {call['tumor_fraction']:.3g} "
        f"(95% CI {call['tumor_fraction_ci'][0]:.3g}-{call['tumor_fraction_ci'][1]:.3g}), "
        f"{format_p_value(call)}; report: {result.out_dir / 'report.html'}"
    )


@app.command()
@user_errors_to_exit
def demo(
    out: Annotated[
        Path, typer.Option("--out", help="Directory for the demo sample and its results.")
    ] = Path("demo_out"),
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
    tumor_fraction: Annotated[float, typer.Option(help="Tumour fraction to simulate.")] = 1e-2,
) -> None:
    """Simulate a small sample and run the pipeline on it; print where the report is."""
    from precise_mrd.core.simulate import SimulationParams
    from precise_mrd.pipeline.params import PipelineParams
    from precise_mrd.pipeline.run import RunInputs, run_pipeline
    from precise_mrd.pipeline.simulation import simulate_sample

    sample = simulate_sample(
        out / "sample", SimulationParams.preset("smoke", seed=seed, tumor_fraction=tumor_fraction)
    )
    inputs = RunInputs(
        reference_path=sample.reference_path,
        variants_path=sample.vcf_path,
        bam_path=sample.bam_path,
    )
    # NB: the demo's own directory: a second demo replaces the first one's results.
    result = run_pipeline(
        inputs,
        PipelineParams(seed=seed),
        out / "results",
        progress=progress_printer(),
        overwrite=True,
    )
    call = result.sample_call
    typer.echo(
        f"simulated tumour fraction {tumor_fraction:g}; called {call['decision']} with estimate "
        f"{call['tumor_fraction']:.3g} (95% CI {call['tumor_fraction_ci'][0]:.3g}-"
        f"{call['tumor_fraction_ci'][1]:.3g})"
    )
    typer.echo(f"report: {(result.out_dir / 'report.html').resolve()}")


def _register_command_groups() -> None:
    from precise_mrd.cli_admin import register as register_admin
    from precise_mrd.cli_config import register as register_config
    from precise_mrd.cli_db import register as register_db
    from precise_mrd.cli_ml import register as register_ml
    from precise_mrd.cli_serve import register as register_serve
    from precise_mrd.cli_validation import register as register_validation
    from precise_mrd.cli_worker import register as register_worker

    register_validation(app)
    register_serve(app)
    register_ml(app)
    register_config(app)
    register_db(app)
    register_worker(app)
    register_admin(app)


_register_command_groups()


@app.command("warm-cache")
def warm_cache(
    cache_dir: Annotated[
        Path | None,
        typer.Option(help="Kernel cache to fill (env NUMBA_CACHE_DIR, else <venv>/numba-cache)."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Compile again even when the cache is warm.")] = False,
) -> None:
    """Compile the numba kernels into their on-disk cache (once per install; ~40 s of one core)."""
    from precise_mrd.pipeline.warmup import warm_kernel_cache

    target = cache_dir or _kernel_cache_from_environment()
    try:
        result = warm_kernel_cache(target, force=force)
    except (OSError, RuntimeError) as error:
        typer.echo(f"error: kernel cache {target or 'in-tree'}: {error}", err=True)
        raise typer.Exit(2) from None
    where = target if target is not None else "the in-tree __pycache__"
    if result.compiled:
        typer.echo(f"compiled the kernels into {where} in {result.seconds:.1f} s")
    else:
        typer.echo(f"kernel cache {where} is warm")


def _kernel_cache_from_environment() -> Path | None:
    value = os.environ.get("NUMBA_CACHE_DIR")
    return Path(value) if value else None


def default_kernel_cache() -> Path | None:
    """The install's kernel cache, ``<sys.prefix>/numba-cache`` (``make venv`` warms it), or
    None where that prefix is not writable (numba then uses ``__pycache__`` or a user cache)."""
    prefix = Path(sys.prefix)
    return prefix / "numba-cache" if os.access(prefix, os.W_OK) else None


def main() -> None:
    """Console-script entry point."""
    # NB: set before anything imports numba, which reads it once. `serve` is left alone: the
    # service's workers default to <PRECISE_MRD_DATA_DIR>/numba-cache (service settings).
    is_serve = sys.argv[1:2] == ["serve"]
    if "NUMBA_CACHE_DIR" not in os.environ and not is_serve:
        default = default_kernel_cache()
        if default is not None:
            os.environ["NUMBA_CACHE_DIR"] = str(default)
    app()


if __name__ == "__main__":
    main()
