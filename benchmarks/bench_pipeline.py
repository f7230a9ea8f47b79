"""Benchmark: precise-mrd against its peers on the `standard` simulated sample, in one run.

Prints, side by side:
  * `samtools view -c` on the BAM (the floor for anything that reads the file),
  * `umi_tools group --method=directional` (UMI-tools 1.1.6, own venv) vs `precise-mrd group`,
  * `precise-mrd run` (the whole pipeline) wall time and peak RSS,
and checks them against the targets of issue #2 (grouping >= 20x faster than umi_tools, the
whole run <= 10x `samtools view -c`, peak RSS <= 1 GB). Figures, not assertions: not a timed test.

Usage: .venv/bin/python benchmarks/bench_pipeline.py [--preset standard] [--workdir bench_out]
       [--skip-umi-tools]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
UMI_TOOLS_VENV = ROOT / ".bench-venv-umitools"


@dataclass(frozen=True)
class Measurement:
    label: str
    seconds: float
    peak_rss_mb: float
    ok: bool
    note: str = ""


def measure(label: str, command: list[str], *, cwd: Path = ROOT) -> Measurement:
    """Run ``command`` once; wall time and the child's own peak RSS (from wait4)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    stdout = process.stdout.read().decode() if process.stdout else ""
    stderr = process.stderr.read().decode() if process.stderr else ""
    ok = os.waitstatus_to_exitcode(status) == 0
    note = "" if ok else (stderr.strip().splitlines() or ["failed"])[-1][:200]
    if ok and label.startswith("samtools"):
        note = f"{stdout.strip()} reads"
    return Measurement(label, seconds, usage.ru_maxrss / 1024, ok, note)


def best_of(n: int, label: str, command: list[str]) -> Measurement:
    runs = [measure(label, command) for _ in range(n)]
    return min(runs, key=lambda m: m.seconds)


def ensure_umi_tools() -> Path | None:
    """UMI-tools 1.1.6 in its own venv (it needs an old setuptools and no build isolation)."""
    umi_tools = UMI_TOOLS_VENV / "bin" / "umi_tools"
    if umi_tools.exists():
        return umi_tools
    pip = UMI_TOOLS_VENV / "bin" / "pip"
    steps = [
        [sys.executable, "-m", "venv", str(UMI_TOOLS_VENV)],
        [str(pip), "install", "-q", "wheel", "setuptools<70", "cython", "numpy", "pysam"],
        [str(pip), "install", "-q", "--no-build-isolation", "umi-tools==1.1.6"],
    ]
    for step in steps:
        if subprocess.run(step, check=False).returncode != 0:
            print(f"could not install umi_tools ({' '.join(step)}); skipping it", file=sys.stderr)
            return None
    return umi_tools


def machine_description() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    python = platform.python_version()
    return f"{os.cpu_count()} cores ({cpu}), {memory_gb:.0f} GB RAM, Python {python}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="standard", choices=["smoke", "standard"])
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench_out")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tumor-fraction", type=float, default=1e-4)
    parser.add_argument("--skip-umi-tools", action="store_true")
    args = parser.parse_args()

    precise = str(VENV_BIN / "precise-mrd")
    samtools = shutil.which("samtools")
    sample_dir = args.workdir / f"{args.preset}-seed{args.seed}"
    results: list[Measurement] = []

    if not (sample_dir / "reads.bam").exists():
        simulate = measure(
            "precise-mrd simulate",
            [
                precise,
                "simulate",
                str(sample_dir),
                "--preset",
                args.preset,
                "--seed",
                str(args.seed),
                "--tumor-fraction",
                str(args.tumor_fraction),
            ],
        )
        results.append(simulate)
        if not simulate.ok:
            print(f"simulation failed: {simulate.note}", file=sys.stderr)
            return 1
    bam = sample_dir / "reads.bam"

    floor = None
    if samtools:
        floor = best_of(3, "samtools view -c", [samtools, "view", "-c", str(bam)])
        results.append(floor)
    else:
        print("samtools not found (apt-get install samtools); no floor measured", file=sys.stderr)

    umi_tools_group = None
    if not args.skip_umi_tools and (umi_tools := ensure_umi_tools()):
        umi_tools_group = measure(
            "umi_tools group --method=directional",
            [
                str(umi_tools),
                "group",
                "-I",
                str(bam),
                "--paired",
                "--extract-umi-method=tag",
                "--umi-tag=RX",
                "--method=directional",
                "--output-bam",
                "-S",
                str(args.workdir / "umi_tools_grouped.bam"),
                "--log",
                str(args.workdir / "umi_tools.log"),
            ],
        )
        results.append(umi_tools_group)
    ours_group = measure(
        "precise-mrd group --strategy directional",
        [
            precise,
            "group",
            "--bam",
            str(bam),
            "--out",
            str(args.workdir / "grouped.bam"),
            "--strategy",
            "directional",
        ],
    )
    results.append(ours_group)
    whole_run = measure(
        "precise-mrd run (whole pipeline)",
        [
            precise,
            "run",
            "--bam",
            str(bam),
            "--reference",
            str(sample_dir / "reference.fa"),
            "--variants",
            str(sample_dir / "variants.vcf"),
            "--out",
            str(args.workdir / "run"),
        ],
    )
    results.append(whole_run)

    print(f"\nmachine: {machine_description()}")
    print(f"sample: {bam} (preset {args.preset}, seed {args.seed})\n")
    print(f"{'command':<44} {'wall s':>9} {'peak RSS MB':>12}  note")
    for m in results:
        status = m.note if m.ok else f"FAILED: {m.note}"
        print(f"{m.label:<44} {m.seconds:>9.2f} {m.peak_rss_mb:>12.0f}  {status}")
    print("\ntargets (issue #2):")
    if umi_tools_group and umi_tools_group.ok and ours_group.ok:
        speedup = umi_tools_group.seconds / ours_group.seconds
        print(
            f"  grouping speed-up vs umi_tools: {speedup:.1f}x (target >= 20x) "
            f"{'MET' if speedup >= 20 else 'NOT MET'}"
        )
    if floor and whole_run.ok:
        ratio = whole_run.seconds / floor.seconds
        print(
            f"  whole run / samtools view -c: {ratio:.1f}x (target <= 10x) "
            f"{'MET' if ratio <= 10 else 'NOT MET'}"
        )
    if whole_run.ok:
        print(
            f"  whole run peak RSS: {whole_run.peak_rss_mb:.0f} MB (target <= 1024 MB) "
            f"{'MET' if whole_run.peak_rss_mb <= 1024 else 'NOT MET'}"
        )
    return 0 if all(m.ok for m in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
