"""Reference FASTA: writing, and validated reading through :func:`open_reference`.

:class:`ReferenceGenome` is a thin wrapper over ``pysam.FastaFile`` that answers the questions the
pipeline asks of a reference (contig names and lengths, a base, a trinucleotide context), always in
upper case, with 0-based coordinates. A missing ``.fai`` index is built next to the FASTA when that
directory is writable; every problem with the file raises :class:`InputFileError` naming it.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> write_fasta(d / "ref.fa", {"chr1": "ACGT" * 30})
>>> sorted(p.name for p in d.iterdir())
['ref.fa', 'ref.fa.fai']
>>> with open_reference(d / "ref.fa") as reference:
...     reference.contig_lengths, reference.base_at("chr1", 1), reference.trinucleotide("chr1", 1)
({'chr1': 120}, 'C', 'ACG')
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import pysam

from precise_mrd.core.errors import InputDataError, InputFileError

FASTA_LINE_WIDTH = 60
_GZIP_MAGIC = b"\x1f\x8b"


def write_fasta(path: Path, contigs: Mapping[str, str]) -> None:
    """Write ``contigs`` (name -> sequence) as FASTA with 60-column lines, then index it (.fai)."""
    with open(path, "w", encoding="ascii") as handle:
        for name, sequence in contigs.items():
            handle.write(f">{name}\n")
            for offset in range(0, len(sequence), FASTA_LINE_WIDTH):
                handle.write(sequence[offset : offset + FASTA_LINE_WIDTH])
                handle.write("\n")
    pysam.faidx(str(path))


class ReferenceGenome:
    """An open, indexed reference FASTA. Coordinates are 0-based; sequences are upper case.

    Use :func:`open_reference` to build one (it validates the file); close it when done or use it
    as a context manager.
    """

    def __init__(self, path: Path, fasta: pysam.FastaFile) -> None:
        self.path = path
        self._fasta = fasta
        self.contig_lengths: dict[str, int] = dict(
            zip(fasta.references, fasta.lengths, strict=True)
        )

    @property
    def contigs(self) -> tuple[str, ...]:
        """Contig names in FASTA order."""
        return tuple(self.contig_lengths)

    def __contains__(self, chrom: object) -> bool:
        return chrom in self.contig_lengths

    def length(self, chrom: str) -> int:
        """Length of ``chrom``; ``KeyError`` if the contig is absent."""
        return self.contig_lengths[chrom]

    def fetch(self, chrom: str, start: int, end: int) -> str:
        """Bases ``[start, end)`` (0-based half-open) of ``chrom``, upper case.

        ``start``/``end`` are clipped to the contig, so a window at an edge is shorter.
        """
        if chrom not in self.contig_lengths:
            raise KeyError(f"contig {chrom!r} is not in reference {self.path.name}")
        length = self.contig_lengths[chrom]
        start, end = max(0, start), min(length, end)
        if end <= start:
            return ""
        return str(self._fasta.fetch(chrom, start, end)).upper()

    def base_at(self, chrom: str, pos0: int) -> str:
        """The base at 0-based ``pos0`` of ``chrom`` (upper case); ``IndexError`` off the contig."""
        if not 0 <= pos0 < self.length(chrom):
            raise IndexError(f"{chrom}:{pos0} (0-based) is outside the contig")
        return self.fetch(chrom, pos0, pos0 + 1)

    def trinucleotide(self, chrom: str, pos0: int) -> str:
        """The 3-mer centred on 0-based ``pos0``; positions off the contig's ends read as ``N``."""
        if not 0 <= pos0 < self.length(chrom):
            raise IndexError(f"{chrom}:{pos0} (0-based) is outside the contig")
        left = "N" if pos0 == 0 else ""
        right = "N" if pos0 == self.length(chrom) - 1 else ""
        return left + self.fetch(chrom, pos0 - 1, pos0 + 2) + right

    def missing_contig_error(self, source: str, chrom: str, where: str) -> InputDataError:
        """The error for a contig named in ``source`` (at ``where``) that this reference lacks.

        Lists the reference's contigs and suggests the ``chr`` prefix fix when that is the mismatch.
        """
        names = self.contigs
        shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
        alternative = chrom[3:] if chrom.lower().startswith("chr") else f"chr{chrom}"
        if alternative in self.contig_lengths:
            fix = (
                f"the reference calls it {alternative!r}: "
                + ("remove" if chrom.lower().startswith("chr") else "add")
                + " the 'chr' prefix in "
                + source
                + " or use a reference with matching names"
            )
        else:
            fix = "use the reference the variants were called against (same genome build)"
        return InputDataError(
            source,
            f"{where}: contig {chrom!r} is not in reference {self.path.name} (contigs: {shown})",
            fix,
        )

    def close(self) -> None:
        self._fasta.close()

    def __enter__(self) -> ReferenceGenome:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _first_non_blank_byte(path: Path) -> bytes:
    with open(path, "rb") as handle:
        head = handle.read(4096)
    if head.startswith(_GZIP_MAGIC):
        return _GZIP_MAGIC
    stripped = head.lstrip()
    return stripped[:1]


def open_reference(path: Path) -> ReferenceGenome:
    """Open and validate a reference FASTA (plain or bgzip), building ``.fai`` if it is missing."""
    name = str(path)
    if not path.exists():
        raise InputFileError(name, "reference FASTA does not exist", "check the path")
    if path.is_dir():
        raise InputFileError(name, "is a directory, not a FASTA file", "pass the .fa file itself")
    try:
        first = _first_non_blank_byte(path)
    except OSError as error:
        raise InputFileError(
            name, f"cannot be read ({error.strerror})", "check the file permissions"
        ) from error
    if first == b"":
        raise InputFileError(name, "reference FASTA is empty", "pass a FASTA with >= 1 sequence")
    if first not in (b">", _GZIP_MAGIC):
        raise InputFileError(
            name,
            f"is not FASTA (first character {first.decode('latin-1')!r}, expected '>')",
            "pass a reference FASTA file (.fa/.fasta, plain or bgzip-compressed)",
        )
    index_path = Path(f"{path}.fai")
    if not index_path.exists():
        if not os.access(path.parent, os.W_OK):
            raise InputFileError(
                name,
                "has no .fai index and its directory is not writable, so none can be built",
                f"run `samtools faidx {path}` where you can write, or copy the FASTA somewhere "
                "writable",
            )
        try:
            pysam.faidx(name)
        except pysam.utils.SamtoolsError as error:
            if first == _GZIP_MAGIC:
                problem = "is gzip-compressed but not with bgzip, so it cannot be indexed"
                fix = "recompress it with `bgzip` or decompress it"
            else:
                problem = "is malformed FASTA: samtools faidx cannot index it"
                fix = "make every line of a sequence the same length (e.g. `seqtk seq -l 60`)"
            raise InputFileError(name, problem, fix) from error
    try:
        fasta = pysam.FastaFile(name)
    except (OSError, ValueError) as error:
        raise InputFileError(
            name, f"cannot be opened as FASTA ({error})", "re-index it with `samtools faidx`"
        ) from error
    if fasta.nreferences == 0:
        fasta.close()
        raise InputFileError(name, "reference FASTA has no sequences", "pass a non-empty FASTA")
    reference = ReferenceGenome(path, fasta)
    empty = [chrom for chrom, length in reference.contig_lengths.items() if length == 0]
    if len(empty) == len(reference.contig_lengths):
        reference.close()
        raise InputDataError(name, "every sequence in the FASTA is empty", "pass a real reference")
    return reference
