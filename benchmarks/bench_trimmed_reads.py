"""Benchmark: reads trimmed to different lengths, as adapter trimming leaves them.

Takes the `standard` simulated sample (simulated first if missing), writes a copy in which a
share of the reads (`--share`, 30% by default) lose 1 to `--max-cut` bases at their 3' end (in
read orientation; a reverse-strand read loses its leftmost bases, so its start moves), then runs
`precise-mrd run` on the original and on the trimmed copy, and prints side by side: reads the
alignment filter dropped, molecules, duplex molecules, the duplex background error rate, the
sample call and its tumour fraction. With `--revs REV [REV ...]` the two runs are made with the
code of each git revision instead of the working tree (its `src/` on `PYTHONPATH`, same
interpreter), e.g. the revisions before and after a change. Figures, not assertions: not a
timed test.

Which reads are cut, and by how much, is a function of the read's name and end (CRC-32), so the
trimmed copy is the same on every run and a read's mate knows its cut without a second pass.

Usage: .venv/bin/python benchmarks/bench_trimmed_reads.py [--workdir bench_out] [--seed 7]
       [--share 0.3] [--max-cut 30] [--revs d95173a HEAD]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from pathlib import Path

import pysam

ROOT = Path(__file__).resolve().parents[1]
PRECISE = str(Path(sys.executable).parent / "precise-mrd")
_QUERY_OPS = (0, 1, 4, 7, 8)
_REF_OPS = (0, 2, 3, 7, 8)


def cut_of(name: str, is_read2: bool, share: float, max_cut: int) -> int:
    """Bases cut from this read's 3' end (0 for most reads)."""
    draw = zlib.crc32(f"{name}/{2 if is_read2 else 1}".encode()) / 0xFFFFFFFF
    if draw >= share:
        return 0
    return 1 + int(draw / share * max_cut) % max_cut


def cut_cigar(
    cigar: list[tuple[int, int]], cut: int, from_left: bool
) -> tuple[list[tuple[int, int]], int]:
    """``cigar`` without ``cut`` read bases at one end, and the reference bases that removes."""
    ops = cigar[::-1] if from_left else list(cigar)
    removed_ref = 0
    while cut > 0 and ops:
        op, length = ops[-1]
        if op not in _QUERY_OPS:
            ops.pop()
            removed_ref += length if op in _REF_OPS else 0
            continue
        take = min(length, cut)
        cut -= take
        removed_ref += take if op in _REF_OPS else 0
        if take == length:
            ops.pop()
        else:
            ops[-1] = (op, length - take)
    while ops and ops[-1][0] not in _QUERY_OPS:  # no deletion left at the new end
        removed_ref += ops.pop()[1]
    return (ops[::-1] if from_left else ops), removed_ref


def trimmed_read(read: pysam.AlignedSegment, cut: int) -> tuple[int, str, str, list[int]]:
    """(start, CIGAR, bases, qualities) of ``read`` after the cut."""
    cigar = read.cigartuples or []
    ops, removed_ref = cut_cigar(cigar, cut, from_left=read.is_reverse)
    bases = read.query_sequence or ""
    quals = list(read.query_qualities or [])
    if read.is_reverse:
        bases, quals = bases[cut:], quals[cut:]
        start = read.reference_start + removed_ref
    else:
        bases, quals = bases[: len(bases) - cut], quals[: len(quals) - cut]
        start = read.reference_start
    return start, "".join(f"{n}{'MIDNSHP=X'[op]}" for op, n in ops), bases, quals


def mate_after_cut(read: pysam.AlignedSegment, cut: int) -> tuple[int, str | None]:
    """The mate's start and CIGAR after its cut, from ``PNEXT`` and ``MC``."""
    if not read.has_tag("MC") or cut == 0:
        return read.next_reference_start, read.get_tag("MC") if read.has_tag("MC") else None
    mate_cigar = str(read.get_tag("MC"))
    probe = pysam.AlignedSegment()
    probe.cigarstring = mate_cigar
    ops, removed_ref = cut_cigar(probe.cigartuples or [], cut, from_left=read.mate_is_reverse)
    start = read.next_reference_start + (removed_ref if read.mate_is_reverse else 0)
    return start, "".join(f"{n}{'MIDNSHP=X'[op]}" for op, n in ops)


def write_trimmed(source: Path, target: Path, share: float, max_cut: int) -> tuple[int, int]:
    """The trimmed copy of ``source``, coordinate-sorted and indexed; (reads, reads cut)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    unsorted = target.with_suffix(".unsorted.bam")
    n_reads = n_cut = 0
    with (
        pysam.AlignmentFile(str(source)) as bam,
        pysam.AlignmentFile(str(unsorted), "wb", header=bam.header) as out,
    ):
        for read in bam:
            n_reads += 1
            cut = cut_of(read.query_name or "", read.is_read2, share, max_cut)
            mate_cut = cut_of(read.query_name or "", not read.is_read2, share, max_cut)
            if cut:
                n_cut += 1
                start, cigar, bases, quals = trimmed_read(read, cut)
                read.query_sequence = bases
                read.query_qualities = pysam.qualitystring_to_array(
                    "".join(chr(q + 33) for q in quals)
                )
                read.cigarstring = cigar
                read.reference_start = start
            if read.is_paired and mate_cut:
                mate_start, mate_cigar = mate_after_cut(read, mate_cut)
                read.next_reference_start = mate_start
                if mate_cigar is not None:
                    read.set_tag("MC", mate_cigar)
            out.write(read)
    pysam.sort("-o", str(target), str(unsorted))
    pysam.index(str(target))
    unsorted.unlink()
    return n_reads, n_cut


def run(sample: Path, bam: Path, out: Path, source: Path | None) -> tuple[dict[str, object], float]:
    """Figures of one `precise-mrd run` (with the code under ``source`` when given)."""
    env = dict(os.environ)
    command = [PRECISE]
    if source is not None:
        env["PYTHONPATH"] = str(source)
        env["NUMBA_CACHE_DIR"] = str(source.parent / "numba-cache")
        command = [sys.executable, "-c", "from precise_mrd.cli import main; main()"]
    command += [
        "run",
        "--reference",
        str(sample / "reference.fa"),
        "--variants",
        str(sample / "variants.vcf"),
        "--bam",
        str(bam),
        "--out",
        str(out),
        "--force",
    ]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"run failed on {bam}: {done.stderr.strip()[-800:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    call = json.loads((out / "sample_call.json").read_text())
    consensus, evidence = metrics["consensus"], metrics["evidence"]
    opportunities = evidence["background_opportunities_duplex"]
    return {
        "reads dropped by the alignment filter": consensus["n_reads_filtered_alignment"],
        "molecules": consensus["n_molecules"],
        "duplex molecules": consensus["n_duplex_molecules"],
        "consensus records": consensus["n_consensus_reads_out"],
        "duplex error rate": (
            f"{evidence['background_errors_duplex'] / opportunities:.2e}" if opportunities else "-"
        ),
        "call": call["decision"],
        "tumour fraction": f"{call['tumor_fraction']:.3e}",
    }, seconds


def source_of(rev: str, into: Path) -> Path:
    """``src/`` of git revision ``rev`` extracted under ``into``."""
    archive = into / "src.tar"
    with archive.open("wb") as handle:
        subprocess.run(["git", "archive", rev, "src"], cwd=ROOT, stdout=handle, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("bench_out"))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--share", type=float, default=0.3)
    parser.add_argument("--max-cut", type=int, default=30)
    parser.add_argument("--revs", nargs="+", default=[])
    args = parser.parse_args()
    sample = args.workdir / f"standard-seed{args.seed}"
    if not (sample / "reads.bam").is_file():
        subprocess.run(
            [PRECISE, "simulate", str(sample), "--preset", "standard", "--seed", str(args.seed)],
            check=True,
            capture_output=True,
        )
    trimmed = args.workdir / f"trimmed-seed{args.seed}-{args.share}-{args.max_cut}" / "reads.bam"
    if not trimmed.is_file():
        n_reads, n_cut = write_trimmed(sample / "reads.bam", trimmed, args.share, args.max_cut)
        print(f"trimmed copy: {n_cut:,} of {n_reads:,} reads cut by 1-{args.max_cut} bases")
    columns: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory(dir=args.workdir) as scratch:
        sources: list[tuple[str, Path | None]] = [("working tree", None)]
        if args.revs:
            sources = []
            for rev in args.revs:
                into = Path(scratch) / rev.replace("/", "_").replace("~", "_")
                into.mkdir()
                sources.append((rev, source_of(rev, into)))
        for label, source in sources:
            for name, bam in (("original", sample / "reads.bam"), ("trimmed", trimmed)):
                out = args.workdir / f"out-{name}-{label.replace('/', '_').replace('~', '_')}"
                figures, seconds = run(sample, bam, out, source)
                figures["wall seconds"] = f"{seconds:.1f}"
                columns[f"{label}: {name}"] = figures
    rows = list(next(iter(columns.values())))
    width = max(len(row) for row in rows)
    heads = list(columns)
    print(" " * width + "  " + "  ".join(f"{head:>22}" for head in heads))
    for row in rows:
        print(f"{row:<{width}}  " + "  ".join(f"{columns[h][row]!s:>22}" for h in heads))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
