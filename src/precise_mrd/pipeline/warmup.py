"""Compile the pipeline's numba kernels into their on-disk cache once, before the first job.

Numba compiles a kernel the first time a process calls it and, since every kernel here is
``cache=True``, keeps the machine code on disk: in ``NUMBA_CACHE_DIR`` when that is set, otherwise
in ``__pycache__`` beside the sources. Compiling all of them costs ~40 s of one core; a process
that finds them cached loads them in milliseconds. The install (``make venv``, ``deploy.sh``)
therefore runs :func:`warm_kernel_cache` once, so the first job after an install is as fast as
any later one.

The warm-up runs in a fresh interpreter (numba reads ``NUMBA_CACHE_DIR`` when it is imported, and
this process may have imported it already): a simulated ``smoke`` duplex sample, and a
single-strand one, go through every path that compiles kernels (the fused run, the ML features,
``group`` and ``consensus`` on their own). It then writes a stamp, ``precise_mrd-kernels.json``,
holding a fingerprint of the package's kernel modules and the numba and Python versions;
:func:`is_cache_warm` compares it, so a warm cache costs a read of the sources to confirm and an
upgraded package (or an edited kernel module) warms again. (Numba itself keys each cached
kernel on its source file's size and modification time, so a stale stamp can only cost a
warm-up, never a wrong kernel.)

>>> stamp_path(Path("/srv/mrd/numba-cache")).name
'precise_mrd-kernels.json'
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
STAMP_NAME = "precise_mrd-kernels.json"


@dataclass(frozen=True)
class WarmupResult:
    """What one warm-up did: ``seconds`` is 0 and ``compiled`` False when the cache was warm."""

    cache_dir: Path | None
    compiled: bool
    seconds: float


def stamp_path(cache_dir: Path | None) -> Path:
    """Where the stamp of ``cache_dir`` lives (``None``: the in-tree ``__pycache__`` cache)."""
    if cache_dir is None:
        return PACKAGE_ROOT / "__pycache__" / STAMP_NAME
    return Path(cache_dir) / STAMP_NAME


def kernel_fingerprint() -> str:
    """SHA-256 over the numba and Python versions and the package's kernel modules (path, size,
    mtime: what numba keys its own cache on); a module counts when its source mentions numba."""
    import numba

    digest = hashlib.sha256()
    digest.update(f"numba {numba.__version__}; python {platform.python_version()}\n".encode())
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        if b"numba" not in path.read_bytes():
            continue
        info = path.stat()
        relative = path.relative_to(PACKAGE_ROOT)
        digest.update(f"{relative}\t{info.st_size}\t{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def is_cache_warm(cache_dir: Path | None) -> bool:
    """True when a warm-up of this very package and numba filled ``cache_dir``."""
    try:
        stamp = json.loads(stamp_path(cache_dir).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(stamp, dict) and stamp.get("fingerprint") == kernel_fingerprint()


def start_warmup(
    cache_dir: Path | None, *, python_executable: str = sys.executable
) -> subprocess.Popen[str]:
    """Start the warm-up interpreter for ``cache_dir`` (``None``: the in-tree cache); the caller
    waits for it (or kills it). Its output is captured (``stdout``, stderr merged into it)."""
    env = dict(os.environ)
    if cache_dir is None:
        env.pop("NUMBA_CACHE_DIR", None)
    else:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        env["NUMBA_CACHE_DIR"] = str(Path(cache_dir).absolute())
    command = [
        python_executable,
        "-m",
        "precise_mrd.pipeline.warmup",
        "--stamp",
        str(stamp_path(cache_dir)),
    ]
    return subprocess.Popen(
        command,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish_warmup(process: subprocess.Popen[str], *, timeout_seconds: float = 1800) -> None:
    """Wait for a warm-up; ``RuntimeError`` with its output's tail when it failed."""
    try:
        output, _ = process.communicate(timeout=timeout_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise RuntimeError(f"kernel warm-up took over {timeout_seconds:.0f} s; killed") from None
    if process.returncode != 0:
        raise RuntimeError(f"kernel warm-up failed (exit {process.returncode}): {output[-2000:]}")


def warm_kernel_cache(
    cache_dir: Path | None,
    *,
    force: bool = False,
    python_executable: str = sys.executable,
    timeout_seconds: float = 1800,
) -> WarmupResult:
    """Fill ``cache_dir`` (``None``: the in-tree cache) unless it is warm already.

    Raises ``RuntimeError`` with the warm-up's own output when it fails, ``OSError`` when
    ``cache_dir`` cannot be created.
    """
    if not force and is_cache_warm(cache_dir):
        return WarmupResult(cache_dir=cache_dir, compiled=False, seconds=0.0)
    started = time.monotonic()
    finish_warmup(
        start_warmup(cache_dir, python_executable=python_executable),
        timeout_seconds=timeout_seconds,
    )
    return WarmupResult(cache_dir=cache_dir, compiled=True, seconds=time.monotonic() - started)


def exercise_kernels(work_dir: Path) -> None:
    """Call every kernel-compiling path once on tiny simulated samples (in this process)."""
    from precise_mrd.core.simulate import SimulationParams
    from precise_mrd.pipeline.consensus import call_consensus_bam
    from precise_mrd.pipeline.group import group_bam
    from precise_mrd.pipeline.params import PipelineParams
    from precise_mrd.pipeline.run import RunInputs, consensus_params_from, run_pipeline
    from precise_mrd.pipeline.simulation import simulate_sample

    for duplex in (True, False):
        name = "duplex" if duplex else "single"
        # NB: the whole smoke sample (a default service job), not a smaller one: its UMI and
        # molecule tables outgrow their first size, which compiles the growth kernels too.
        sample = simulate_sample(
            work_dir / name, SimulationParams.preset("smoke", seed=1, duplex=duplex)
        )
        inputs = RunInputs(
            reference_path=sample.reference_path,
            variants_path=sample.vcf_path,
            bam_path=sample.bam_path,
        )
        strategy = "paired" if duplex else "directional"
        params = PipelineParams.from_mapping({"seed": 1, "umi": {"strategy": strategy}})
        run_pipeline(inputs, params, work_dir / f"{name}-run")
        if duplex:
            with_ml = params.with_overrides(ml={**params.ml.model_dump(), "use_ml_calling": True})
            run_pipeline(inputs, with_ml, work_dir / f"{name}-ml")
        grouped = work_dir / f"{name}-grouped.bam"
        group_bam(sample.bam_path, grouped, strategy=strategy, group_out_path=work_dir / "g.tsv")
        call_consensus_bam(
            grouped, work_dir / f"{name}-consensus.bam", params=consensus_params_from(params)
        )
        if duplex:  # NB: the raw read-pair overlap kernel runs only with this setting
            per_pair = dataclasses.replace(consensus_params_from(params), overlap="per_read_pair")
            call_consensus_bam(grouped, work_dir / "per-pair-consensus.bam", params=per_pair)


def main(argv: list[str] | None = None) -> int:
    """``python -m precise_mrd.pipeline.warmup --stamp PATH``: exercise, then write the stamp."""
    parser = argparse.ArgumentParser(description="Compile precise-mrd's numba kernels once.")
    parser.add_argument("--stamp", type=Path, required=True)
    args = parser.parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="precise-mrd-warmup-") as work_dir:
        exercise_kernels(Path(work_dir))
    stamp = {"fingerprint": kernel_fingerprint(), "seconds": round(time.monotonic() - started, 1)}
    args.stamp.parent.mkdir(parents=True, exist_ok=True)
    partial = args.stamp.with_suffix(".partial")
    partial.write_text(json.dumps(stamp) + "\n")
    partial.replace(args.stamp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
