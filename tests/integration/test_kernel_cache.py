"""The install's warm-up fills the kernel cache so that a first job compiles nothing.

``precise-mrd warm-cache`` into an empty directory (what ``make venv`` and ``deploy.sh`` run), then
a job in a fresh interpreter on that cache, as a service worker is: the job must find every kernel
it calls already compiled, i.e. add no file to the cache. ~45 s of one core, hence slow.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from precise_mrd.pipeline.warmup import is_cache_warm

CLI = str(Path(sys.executable).parent / "precise-mrd")


def _cache_files(cache_dir: Path) -> set[str]:
    return {str(path.relative_to(cache_dir)) for path in cache_dir.rglob("*") if path.is_file()}


@pytest.mark.slow
def test_after_warm_cache_a_first_job_compiles_nothing(smoke_sample: Any, tmp_path: Path) -> None:
    cache = tmp_path / "numba-cache"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    warmed = subprocess.run(
        [CLI, "warm-cache", "--cache-dir", str(cache)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert warmed.returncode == 0, warmed.stderr
    assert is_cache_warm(cache)
    before = _cache_files(cache)
    assert len([name for name in before if name.endswith(".nbi")]) > 20, "kernels were cached"
    job = subprocess.run(
        [
            CLI,
            "run",
            "--bam",
            str(smoke_sample.bam_path),
            "--reference",
            str(smoke_sample.reference_path),
            "--variants",
            str(smoke_sample.vcf_path),
            "--out",
            str(tmp_path / "out"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert job.returncode == 0, job.stderr
    assert _cache_files(cache) == before, "the job compiled kernels the warm-up missed"
    again = subprocess.run(
        [CLI, "warm-cache", "--cache-dir", str(cache)], env=env, capture_output=True, text=True
    )
    assert again.returncode == 0 and "warm" in again.stdout.lower(), again.stdout
