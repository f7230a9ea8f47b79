"""Benchmark: the first job after a fresh install against a warm job, and CLI start-up time.

Each job is ``precise-mrd run`` in a fresh interpreter (as a service worker is) on the ``smoke``
sample a default service job simulates, with its own numba cache directory:

  * ``cold, no warm-up``: an empty cache, as every fresh install had before the install warmed it;
  * ``first job after install``: an empty cache filled by ``precise-mrd warm-cache`` (what
    ``make venv`` and ``deploy.sh`` run), then the job;
  * ``warm job``: the same job again on that cache.

The target (issue 9) is ``first job after install`` within 1.5x of ``warm job``. It also prints
the median wall time of ``precise-mrd --help`` over five runs. Figures, not assertions.

Usage: .venv/bin/python benchmarks/bench_first_job.py [--workdir bench_first_job]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
CLI = str(VENV_BIN / "precise-mrd")
TARGET_RATIO = 1.5


def timed(command: list[str], *, cache_dir: Path | None = None) -> float:
    env = dict(os.environ)
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = str(cache_dir)
    started = time.perf_counter()
    completed = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {completed.stderr[-2000:]}")
    return seconds


def job(sample: Path, out: Path, cache_dir: Path) -> float:
    return timed(
        [
            CLI,
            "run",
            "--bam",
            str(sample / "reads.bam"),
            "--reference",
            str(sample / "reference.fa"),
            "--variants",
            str(sample / "variants.vcf"),
            "--seed",
            "42",
            "--out",
            str(out),
            "--force",
        ],
        cache_dir=cache_dir,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("bench_first_job"))
    args = parser.parse_args()
    work = args.workdir.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    sample = work / "sample"
    timed([CLI, "simulate", str(sample), "--preset", "smoke", "--seed", "42"])
    cold_cache, install_cache = work / "cache-cold", work / "cache-install"
    rows: list[tuple[str, float]] = []
    rows.append(("cold, no warm-up", job(sample, work / "out-cold", cold_cache)))
    warmup = timed([CLI, "warm-cache", "--cache-dir", str(install_cache)])
    rows.append(("install warm-up (once)", warmup))
    rows.append(("first job after install", job(sample, work / "out-first", install_cache)))
    rows.append(("warm job", job(sample, work / "out-warm", install_cache)))
    helps = [timed([CLI, "--help"]) for _ in range(5)]
    rows.append(("precise-mrd --help (median of 5)", statistics.median(helps)))
    width = max(len(label) for label, _ in rows)
    print(f"{'what':<{width}}  seconds")
    for label, seconds in rows:
        print(f"{label:<{width}}  {seconds:7.2f}")
    first, warm = rows[2][1], rows[3][1]
    ratio = first / warm
    verdict = "meets" if ratio <= TARGET_RATIO else "MISSES"
    print(f"first/warm = {ratio:.2f} ({verdict} the {TARGET_RATIO}x target)")
    print(f"cold/warm  = {rows[0][1] / warm:.2f} (before the install warmed the cache)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
