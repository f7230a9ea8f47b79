"""Open and stream BAM files with checks that name the file, the problem and the fix.

Every stage that reads a BAM goes through :func:`open_bam`, which refuses, with an
:class:`~precise_mrd.core.errors.InputFileError`, a path that is missing or unreadable, a file
that is not BAM, a BAM cut short (no BGZF end-of-file block) and, unless ``require_sorted=False``,
a BAM whose header does not say ``SO:coordinate``. :func:`iter_alignments` streams records and
turns a truncation met while reading, or records out of coordinate order, into the same error;
:func:`require_umis` checks the first mapped reads for a UMI; :func:`umi_of` reads one read's UMI
from a SAM tag or from the end of its name.

>>> import tempfile, pathlib, pysam
>>> path = pathlib.Path(tempfile.mkdtemp()) / "x.bam"
>>> header = {"HD": {"VN": "1.6", "SO": "coordinate"}, "SQ": [{"SN": "chr1", "LN": 1000}]}
>>> with pysam.AlignmentFile(str(path), "wb", header=header) as out:
...     read = pysam.AlignedSegment(out.header)
...     read.query_name, read.reference_id, read.reference_start = "r1_ACGT", 0, 10
...     read.cigarstring, read.query_sequence = "4M", "ACGT"
...     _ = out.write(read)
>>> with open_bam(path) as bam:
...     [umi_of(r, umi_tag="RX", from_read_name=True, separator="_") for r in bam]
['ACGT']
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pysam

from precise_mrd.core.errors import InputFileError

BGZF_EOF: Final[bytes] = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
_BGZF_MAGIC: Final[bytes] = b"\x1f\x8b\x08\x04"
N_READS_PROBED_FOR_UMI: Final[int] = 1000
_SORT_FIX: Final[str] = "sort it with `samtools sort -o sorted.bam in.bam` and index it"


def check_bam_file(path: Path) -> None:
    """Raise :class:`InputFileError` unless ``path`` is a readable, complete BGZF file."""
    name = str(path)
    if not path.exists():
        raise InputFileError(name, "does not exist", "check the path and the file name")
    if path.is_dir():
        raise InputFileError(name, "is a directory, not a BAM file", "pass the path of a .bam file")
    if not os.access(path, os.R_OK):
        raise InputFileError(name, "is not readable", "fix the file permissions (chmod +r)")
    try:
        with open(path, "rb") as handle:
            magic = handle.read(4)
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - len(BGZF_EOF)))
            tail = handle.read()
    except OSError as error:
        raise InputFileError(name, f"cannot be read ({error})", "check the file") from error
    if magic != _BGZF_MAGIC:
        raise InputFileError(
            name,
            "is not a BAM file (no BGZF header; SAM, CRAM or plain gzip are not accepted here)",
            "convert it with `samtools view -b -o out.bam in.sam`",
        )
    if tail != BGZF_EOF:
        raise InputFileError(
            name,
            "is truncated (the BGZF end-of-file block is missing)",
            "re-create or re-download the file; an interrupted copy or write leaves it cut short",
        )


def open_bam(path: Path, *, require_sorted: bool = True, threads: int = 1) -> pysam.AlignmentFile:
    """Open a BAM for reading after :func:`check_bam_file`; optionally demand ``SO:coordinate``.

    ``threads`` > 1 lets htslib decompress in that many threads.
    """
    path = Path(path)
    check_bam_file(path)
    try:
        bam = pysam.AlignmentFile(str(path), "rb", check_sq=False, threads=threads)
    except (OSError, ValueError) as error:
        raise InputFileError(
            str(path), f"is not a readable BAM file ({error})", "check that it is a valid BAM"
        ) from error
    if require_sorted:
        sort_order = bam.header.to_dict().get("HD", {}).get("SO")
        if sort_order != "coordinate":
            bam.close()
            raise InputFileError(
                str(path),
                f"is not coordinate-sorted (header SO is {sort_order or 'missing'})",
                _SORT_FIX,
            )
    return bam


def iter_alignments(
    bam: pysam.AlignmentFile, path: Path, *, check_order: bool = True
) -> Iterator[pysam.AlignedSegment]:
    """Stream every record of ``bam`` in file order (mapped, unmapped, secondary: all of them).

    With ``check_order``, a mapped record that comes before its predecessor in coordinate order
    raises :class:`InputFileError`; so does a read error (a BAM cut short inside a block).
    """
    last_tid = -1
    last_pos = -1
    seen_unplaced = False
    iterator = bam.fetch(until_eof=True)
    while True:
        try:
            read = next(iterator)
        except StopIteration:
            return
        except OSError as error:
            # NB: htslib keeps the error state and closing would raise again: close it here
            with contextlib.suppress(OSError):
                bam.close()
            raise InputFileError(
                str(path),
                f"is truncated or corrupt ({error})",
                "re-create or re-download the file",
            ) from error
        if check_order:
            tid = read.reference_id
            pos = read.reference_start
            if tid < 0:
                seen_unplaced = True
            elif seen_unplaced or tid < last_tid or (tid == last_tid and pos < last_pos):
                raise InputFileError(
                    str(path),
                    f"is not coordinate-sorted (read {read.query_name} at "
                    f"{read.reference_name}:{pos + 1} comes after an earlier position)",
                    _SORT_FIX,
                )
            else:
                last_tid, last_pos = tid, pos
        yield read


def umi_of(
    read: pysam.AlignedSegment, umi_tag: str, from_read_name: bool, separator: str
) -> str | None:
    """The read's UMI: the ``umi_tag`` tag, or the read-name text after the last ``separator``.

    Returns ``None`` when there is none (no tag; or no separator / nothing after it in the name).
    """
    if from_read_name:
        name = read.query_name or ""
        head, sep, umi = name.rpartition(separator)
        return umi if sep and head and umi else None
    if read.has_tag(umi_tag):
        value = read.get_tag(umi_tag)
        return str(value) if value else None
    return None


def require_umis(
    path: Path,
    *,
    umi_tag: str,
    from_read_name: bool,
    separator: str,
    n_probe: int = N_READS_PROBED_FOR_UMI,
) -> None:
    """Raise :class:`InputFileError` if none of the first ``n_probe`` mapped reads has a UMI."""
    n_seen = 0
    with open_bam(path, require_sorted=False) as bam:
        for read in iter_alignments(bam, path, check_order=False):
            if read.is_unmapped:
                continue
            if umi_of(read, umi_tag, from_read_name, separator) is not None:
                return
            n_seen += 1
            if n_seen >= n_probe:
                break
    if n_seen == 0:
        return  # no mapped reads at all: nothing to group, not a UMI problem
    where = (
        f"at the end of the read name after {separator!r}"
        if from_read_name
        else f"in the {umi_tag} tag"
    )
    fix = (
        f"put the UMI in the {umi_tag} tag (e.g. `fgbio CopyUmiFromReadName`) or use "
        "--umi-from-read-name with the right separator"
        if not from_read_name
        else f"check the separator (now {separator!r}) or tag the reads with {umi_tag}"
    )
    raise InputFileError(str(path), f"has no UMI {where} in its first {n_seen} mapped reads", fix)
