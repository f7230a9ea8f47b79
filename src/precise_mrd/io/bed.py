"""Target regions from BED, validated against the reference and merged.

BED intervals are 0-based half-open (``start`` inclusive, ``end`` exclusive), and so is what
:func:`read_bed` returns. ``track``/``browser`` lines, ``#`` comments and blank lines are ignored;
columns beyond the third are ignored. Overlapping and book-ended intervals are merged (as
``bedtools merge`` does) and the result is sorted by reference contig order, then start.

>>> import tempfile, pathlib
>>> from precise_mrd.io.fasta import open_reference, write_fasta
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> write_fasta(d / "ref.fa", {"chr1": "ACGT" * 30, "chr2": "ACGT" * 10})
>>> rows = ["chr2 0 5", "chr1 10 20 A", "chr1 15 30", "chr1 30 35"]
>>> _ = (d / "t.bed").write_text("".join(row.replace(" ", "\\t") + "\\n" for row in rows))
>>> with open_reference(d / "ref.fa") as reference:
...     read_bed(d / "t.bed", reference)
[('chr1', 10, 35), ('chr2', 0, 5)]
"""

from __future__ import annotations

import gzip
from pathlib import Path

from precise_mrd.core.errors import InputDataError, InputFileError
from precise_mrd.io.fasta import ReferenceGenome


def _read_text(path: Path) -> list[str]:
    source = str(path)
    if not path.exists():
        raise InputFileError(source, "BED file does not exist", "check the path")
    if path.is_dir():
        raise InputFileError(source, "is a directory, not a BED file", "pass the .bed file")
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        return raw.decode("utf-8").splitlines()
    except OSError as error:
        raise InputFileError(
            source, f"cannot be read ({error.strerror or error})", "check the file permissions"
        ) from error
    except (UnicodeDecodeError, EOFError) as error:
        raise InputFileError(
            source, "is not a text BED file", "pass a tab-separated BED (optionally gzipped)"
        ) from error


def read_bed(path: Path, reference: ReferenceGenome) -> list[tuple[str, int, int]]:
    """Read, validate and merge BED intervals; returns ``(chrom, start, end)`` 0-based half-open."""
    source = str(path)
    intervals: list[tuple[str, int, int]] = []
    for line_number, line in enumerate(_read_text(path), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "track", "browser")):
            continue
        fields = stripped.split("\t") if "\t" in stripped else stripped.split()
        where = f"line {line_number}"
        if len(fields) < 3:
            raise InputFileError(
                source,
                f"{where}: malformed BED line ({len(fields)} columns, need chrom start end)",
                "separate chrom, start and end with tabs",
            )
        chrom, start_text, end_text = fields[:3]
        try:
            start, end = int(start_text), int(end_text)
        except ValueError:
            raise InputFileError(
                source,
                f"{where}: start/end {start_text!r}/{end_text!r} are not integers",
                "BED columns 2 and 3 are 0-based start and end",
            ) from None
        if start < 0 or end <= start:
            raise InputDataError(
                source,
                f"{where}: interval {chrom}:{start}-{end} is empty or negative",
                "BED is 0-based half-open: start >= 0 and end > start",
            )
        if chrom not in reference:
            raise reference.missing_contig_error(source, chrom, where)
        if end > reference.length(chrom):
            raise InputDataError(
                source,
                f"{where}: end {end} is past the end of {chrom} ({reference.length(chrom)})",
                "use the reference the targets were designed on (same genome build)",
            )
        intervals.append((chrom, start, end))
    if not intervals:
        raise InputDataError(source, "contains no intervals", "pass a BED with >= 1 target")
    order = {chrom: index for index, chrom in enumerate(reference.contigs)}
    intervals.sort(key=lambda interval: (order[interval[0]], interval[1], interval[2]))
    merged: list[tuple[str, int, int]] = [intervals[0]]
    for chrom, start, end in intervals[1:]:
        last_chrom, last_start, last_end = merged[-1]
        if chrom == last_chrom and start <= last_end:
            merged[-1] = (chrom, last_start, max(last_end, end))
        else:
            merged.append((chrom, start, end))
    return merged
