"""FASTQ: paired writing, and validated paired reading.

Records are written with Phred+33 qualities. A gzip-compressed file is written when the path ends
in ``.gz`` (deterministic: no timestamp or file name in the gzip header). Reading accepts plain or
gzip FASTQ (4 lines per record) and checks that R1 and R2 stay in step.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> with FastqPairWriter(d / "r1.fq.gz", d / "r2.fq") as writer:
...     writer.write("read1", "ACGTAC", "IIIIII", "GGTT", "FFFF")
>>> [(a.name, a.seq, b.seq) for a, b in read_fastq_pairs(d / "r1.fq.gz", d / "r2.fq")]
[('read1', 'ACGTAC', 'GGTT')]
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Iterator
from itertools import zip_longest
from pathlib import Path
from types import TracebackType
from typing import IO, NamedTuple

from precise_mrd.core.errors import InputDataError, InputFileError
from precise_mrd.core.read_structure import ReadStructure

_GZIP_MAGIC = b"\x1f\x8b"


def _open_text_for_writing(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        # NB: GzipFile(fileobj=...) never closes the file object it is given; _OwningGzipFile does.
        raw = open(path, "wb")  # noqa: SIM115 - closed by _OwningGzipFile.close
        compressed = _OwningGzipFile(raw)
        return io.TextIOWrapper(compressed, encoding="ascii")
    return open(path, "w", encoding="ascii")


class _OwningGzipFile(gzip.GzipFile):
    """A deterministic gzip writer (no name, mtime 0) that closes its underlying file."""

    def __init__(self, raw: IO[bytes]) -> None:
        super().__init__(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=4)
        self._raw = raw

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._raw.close()


class FastqPairWriter:
    """Writes R1/R2 records in step. Use as a context manager."""

    def __init__(self, r1_path: Path, r2_path: Path) -> None:
        self._r1 = _open_text_for_writing(r1_path)
        self._r2 = _open_text_for_writing(r2_path)

    def write(self, name: str, seq1: str, qual1: str, seq2: str, qual2: str) -> None:
        """Write one read pair. ``qual`` strings are Phred+33 encoded."""
        self._r1.write(f"@{name}/1\n{seq1}\n+\n{qual1}\n")
        self._r2.write(f"@{name}/2\n{seq2}\n+\n{qual2}\n")

    def close(self) -> None:
        self._r1.close()
        self._r2.close()

    def __enter__(self) -> FastqPairWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class FastqRecord(NamedTuple):
    """One FASTQ record. ``name`` has no ``@``, no comment and no trailing ``/1`` or ``/2``."""

    name: str
    seq: str
    qual: str


def _open_text_for_reading(path: Path) -> IO[str]:
    source = str(path)
    if not path.exists():
        raise InputFileError(source, "FASTQ file does not exist", "check the path")
    if path.is_dir():
        raise InputFileError(source, "is a directory, not a FASTQ file", "pass the .fastq(.gz)")
    try:
        with open(path, "rb") as probe:
            is_gzip = probe.read(2) == _GZIP_MAGIC
        if is_gzip:
            return gzip.open(path, "rt", encoding="ascii", errors="replace")
        return open(path, encoding="ascii", errors="replace")
    except OSError as error:
        raise InputFileError(
            source, f"cannot be read ({error.strerror or error})", "check the file permissions"
        ) from error


def _strip_name(header: str) -> str:
    """``@name/1 comment`` -> ``name``."""
    fields = header.split(maxsplit=1)
    name = fields[0][1:] if fields else ""
    if name[-2:] in ("/1", "/2"):
        return name[:-2]
    return name


def _iter_records(path: Path, handle: IO[str]) -> Iterator[FastqRecord]:
    """Parse 4-line FASTQ records from an open handle, validating each one."""
    source = str(path)
    index = 0
    try:
        with handle:
            lines = iter(handle)
            # NB: zipping one iterator four times pulls a whole record per step in C.
            for header, seq_line, plus, qual_line in zip_longest(
                lines, lines, lines, lines, fillvalue=""
            ):
                index += 1
                seq, qual = seq_line.rstrip("\r\n"), qual_line.rstrip("\r\n")
                if header[:1] != "@" or plus[:1] != "+":
                    if not header.strip() and not seq and not plus and not qual:
                        return  # a trailing blank line at the end of the file
                    raise InputFileError(
                        source,
                        f"record {index} (line {4 * index - 3}) is malformed: expected '@name', "
                        "sequence, '+', qualities",
                        "pass a 4-line-per-record FASTQ file",
                    )
                if len(seq) != len(qual):
                    raise InputFileError(
                        source,
                        f"record {index} ({_strip_name(header)}) has {len(seq)} bases "
                        f"but {len(qual)} qualities",
                        "the file is truncated or corrupt; re-export it",
                    )
                yield FastqRecord(_strip_name(header), seq, qual)
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise InputFileError(
            source,
            f"gzip stream is truncated or corrupt after record {index}",
            "re-copy or re-export the file",
        ) from error


def read_fastq(path: Path) -> Iterator[FastqRecord]:
    """Stream the records of one FASTQ (plain or gzip). Opens the file now, reads lazily."""
    return _iter_records(path, _open_text_for_reading(path))


def read_fastq_pairs(
    r1_path: Path,
    r2_path: Path,
    *,
    read_structures: tuple[ReadStructure, ReadStructure] | None = None,
) -> Iterator[tuple[FastqRecord, FastqRecord]]:
    """Stream ``(R1, R2)`` record pairs, checking that the two files stay in step.

    Raises :class:`InputFileError` when one file ends before the other (naming which, and after
    how many records), when mates' names differ (``/1``, ``/2`` and comments are ignored), when a
    record is malformed, and, given ``read_structures``, when a read is shorter than its structure
    needs. Both files are opened immediately, so a missing file fails at the call.
    """
    handle1 = _open_text_for_reading(r1_path)
    try:
        handle2 = _open_text_for_reading(r2_path)
    except InputFileError:
        handle1.close()
        raise
    return _iter_pairs(r1_path, r2_path, (handle1, handle2), read_structures)


def _iter_pairs(
    r1_path: Path,
    r2_path: Path,
    handles: tuple[IO[str], IO[str]],
    read_structures: tuple[ReadStructure, ReadStructure] | None,
) -> Iterator[tuple[FastqRecord, FastqRecord]]:
    try:
        yield from _check_pairs(
            r1_path,
            r2_path,
            _iter_records(r1_path, handles[0]),
            _iter_records(r2_path, handles[1]),
            read_structures,
        )
    finally:
        handles[0].close()
        handles[1].close()


def _check_pairs(
    r1_path: Path,
    r2_path: Path,
    records1: Iterator[FastqRecord],
    records2: Iterator[FastqRecord],
    read_structures: tuple[ReadStructure, ReadStructure] | None,
) -> Iterator[tuple[FastqRecord, FastqRecord]]:
    structures = read_structures or (None, None)
    min1 = read_structures[0].min_read_length if read_structures else 0
    min2 = read_structures[1].min_read_length if read_structures else 0
    index = 0
    for index, (read1, read2) in enumerate(zip_longest(records1, records2), start=1):
        if read1 is None or read2 is None:
            ended, longer = (r1_path, r2_path) if read1 is None else (r2_path, r1_path)
            raise InputFileError(
                str(ended),
                f"ended after {index - 1} records while {longer.name} has more "
                "(R1 and R2 must have the same number of records)",
                "the pair is truncated or mismatched; re-export both files from the same run",
            )
        if read1.name != read2.name:
            raise InputFileError(
                str(r2_path),
                f"record {index} is named {read2.name!r} but its mate in {r1_path.name} is "
                f"{read1.name!r}",
                "pass R1 and R2 of the same run, with mates in the same order",
            )
        if len(read1.seq) < min1:
            raise _too_short(r1_path, index, read1, structures[0])
        if len(read2.seq) < min2:
            raise _too_short(r2_path, index, read2, structures[1])
        yield read1, read2


def _too_short(
    path: Path, index: int, read: FastqRecord, structure: ReadStructure | None
) -> InputDataError:
    needed = structure.min_read_length if structure else 0
    return InputDataError(
        str(path),
        f"record {index} ({read.name}) has {len(read.seq)} bases but read structure "
        f"{structure} needs at least {needed}",
        "give a read structure that fits these reads, e.g. '8M+T' for variable lengths",
    )
