"""Benchmark: one sample split by genomic region (`--processes N`) against the serial run.

Runs `precise-mrd run` on the `standard` simulated sample (simulated first if missing) with
`--processes 1` (serial), then each N given, in one run; prints wall time, the stage times of
`metrics.json`, peak RSS of the run and its worker processes, and whether every output equals
the serial one (consensus records, metrics but timings, the sample call, the variant table).
Figures, not assertions: not a timed test.

Usage: .venv/bin/python benchmarks/bench_parallel.py [--processes 2 3] [--workdir bench_out]
       [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pysam

ROOT = Path(__file__).resolve().parents[1]
PRECISE = str(Path(sys.executable).parent / "precise-mrd")
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_pipeline import machine_description  # noqa: E402


def run_once(sample: Path, out: Path, processes: int) -> tuple[float, float, str]:
    """Wall seconds and peak RSS (MB, the run or any of its processes) of one run."""
    command = [
        PRECISE,
        "run",
        "--reference",
        str(sample / "reference.fa"),
        "--variants",
        str(sample / "variants.vcf"),
        "--bam",
        str(sample / "reads.bam"),
        "--out",
        str(out),
        "--processes",
        str(processes),
        "--force",
    ]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    stderr = process.stderr.read().decode() if process.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"run failed ({processes} processes): {stderr.strip()[-500:]}")
    # NB: wait4's usage covers the run and the workers it reaped: the largest of them
    return seconds, usage.ru_maxrss / 1024, stderr


def outputs(out: Path) -> dict[str, object]:
    metrics = json.loads((out / "metrics.json").read_text())
    call = json.loads((out / "sample_call.json").read_text())
    call.pop("config_hash", None)  # NB: the configs differ in `processes`
    with pysam.AlignmentFile(str(out / "consensus.bam"), "rb") as bam:
        records = [record.to_string() for record in bam]
    return {
        "records": records,
        "metrics": {
            k: v for k, v in metrics.items() if k not in ("timings_seconds", "config_hash")
        },
        "call": call,
        "variants": (out / "variants.tsv").read_text(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--processes", type=int, nargs="+", default=[2])
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench_out")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=2, help="runs per setting; best is shown")
    args = parser.parse_args()
    sample = args.workdir / f"standard-seed{args.seed}"
    if not (sample / "reads.bam").exists():
        subprocess.run(
            [PRECISE, "simulate", str(sample), "--preset", "standard", "--seed", str(args.seed)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    print(f"machine: {machine_description()}")
    with pysam.AlignmentFile(str(sample / "reads.bam"), "rb") as bam:
        n_reads = sum(stat.total for stat in bam.get_index_statistics())
    print(f"sample: {sample} ({n_reads:,} reads)\n")
    rows = []
    serial_outputs = None
    for processes in [1, *args.processes]:
        out = args.workdir / f"parallel-p{processes}"
        runs = [run_once(sample, out, processes) for _ in range(args.repeats)]
        seconds, peak_mb, _ = min(runs)
        timings = json.loads((out / "metrics.json").read_text())["timings_seconds"]
        same = "-"
        if processes == 1:
            serial_outputs = outputs(out)
        else:
            same = "yes" if outputs(out) == serial_outputs else "NO"
        rows.append((processes, seconds, timings, peak_mb, same))
    serial_seconds = rows[0][1]
    print(
        f"{'processes':>9}  {'wall s':>7}  {'speed-up':>8}  {'consensus s':>11}  "
        f"{'evidence s':>10}  {'peak RSS MB':>11}  same outputs"
    )
    for processes, seconds, timings, peak_mb, same in rows:
        print(
            f"{processes:>9}  {seconds:>7.2f}  {serial_seconds / seconds:>7.2f}x  "
            f"{timings.get('consensus', 0):>11.2f}  {timings.get('evidence', 0):>10.2f}  "
            f"{peak_mb:>11.0f}  {same}"
        )
    return 0 if all(row[4] in ("-", "yes") for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
