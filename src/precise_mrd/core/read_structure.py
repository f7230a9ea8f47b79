"""Read structures: which bases of a read are template, UMI, sample barcode or to be skipped.

The notation is fgbio's (https://github.com/fulcrumgenomics/fgbio/wiki/Read-Structures): a read
structure is a run of segments, each a length followed by a type letter:

========  =====================  ================================================
letter    segment type           what happens to its bases
========  =====================  ================================================
``T``     template               kept: these bases (and qualities) are aligned
``M``     molecular barcode      the UMI; goes to the ``RX`` tag, removed from the read
``B``     sample barcode         removed from the read (kept apart, see ``sample_barcode``)
``S``     skip                   dropped (e.g. a fixed spacer / A-tail)
========  =====================  ================================================

A length of ``+`` means "the rest of the read" and is only allowed on the last segment.
``8M142T`` is an 8-nt UMI followed by 142 template bases; ``8M+T`` is the same for reads of any
length >= 9; ``5M2S+T`` reads a 5-nt UMI, skips a 2-nt spacer and keeps the rest.

Extraction semantics (:meth:`ReadStructure.extract`):

* The read must cover every fixed-length segment, and a ``+`` segment needs at least one base;
  :attr:`ReadStructure.min_read_length` is that length. A shorter read raises ``ValueError``.
* Bases beyond the last fixed-length segment of a structure without ``+`` are ignored (fgbio's
  non-strict behaviour: reads may be longer than the structure describes).
* Several segments of one type are concatenated in read order (two ``M`` segments give one UMI).
* Qualities are sliced exactly like bases; strings in, strings out (Phred+33 stays Phred+33).

>>> rs = ReadStructure.parse("5M2S+T")
>>> str(rs), rs.min_read_length, rs.fixed_length
('5M2S+T', 8, 7)
>>> rs.extract("AACCGTTACGTACGT", "IIIII##FFFFFFFF")
('AACCG', 'ACGTACGT', 'FFFFFFFF')
>>> ReadStructure.parse("8M142T").extract("A" * 7, "I" * 7)
Traceback (most recent call last):
...
ValueError: read of length 7 is shorter than read structure 8M142T needs (150 bases)
>>> ReadStructure.parse("8X+T")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
precise_mrd.core.read_structure.ReadStructureError: read structure '8X+T': unknown segment type ...

A malformed structure raises :class:`ReadStructureError`, which is both a ``ValueError`` and an
:class:`~precise_mrd.core.errors.InputDataError`, so the CLI prints it on one line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum

from precise_mrd.core.errors import InputDataError

EXAMPLE = "'8M142T' or '8M+T'"
_SEGMENT_PATTERN = re.compile(r"(\d+|\+)([A-Za-z])")


class SegmentType(Enum):
    """The kind of bases a segment holds (fgbio letters)."""

    TEMPLATE = "T"
    MOLECULAR_BARCODE = "M"
    SAMPLE_BARCODE = "B"
    SKIP = "S"


@dataclass(frozen=True, slots=True)
class ReadSegment:
    """One segment: ``offset`` is 0-based in the read, ``length`` None means "rest of the read"."""

    offset: int
    length: int | None
    kind: SegmentType

    def __post_init__(self) -> None:
        if self.offset < 0:
            raise ValueError(f"offset must be >= 0; got {self.offset}")
        if self.length is not None and self.length < 1:
            raise ValueError(f"segment length must be >= 1 or None ('+'); got {self.length}")

    def __str__(self) -> str:
        return f"{'+' if self.length is None else self.length}{self.kind.value}"


class ReadStructureError(InputDataError, ValueError):
    """A read structure string is malformed; the message quotes it and shows a valid one."""


def _invalid(text: str, problem: str) -> ReadStructureError:
    return ReadStructureError(
        f"read structure {text!r}",
        problem,
        f"write <length or +><T|M|B|S> segments, e.g. {EXAMPLE}",
    )


@dataclass(frozen=True, slots=True)
class ReadStructure:
    """A validated read structure; build it with :meth:`parse`."""

    segments: tuple[ReadSegment, ...]
    # Derived in __post_init__ so extract() does no per-read set-up.
    _umi_slices: tuple[slice, ...] = field(init=False, repr=False, compare=False)
    _template_slices: tuple[slice, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        text = "".join(str(s) for s in self.segments)
        if not self.segments:
            raise _invalid(text, "it has no segments")
        offset = 0
        for index, segment in enumerate(self.segments):
            if segment.offset != offset:
                raise _invalid(text, f"segment {index} starts at {segment.offset}, not {offset}")
            if segment.length is None:
                if index != len(self.segments) - 1:
                    raise _invalid(text, "only the last segment may have length '+'")
            else:
                offset += segment.length
        if not any(s.kind is SegmentType.TEMPLATE for s in self.segments):
            raise _invalid(text, "it has no template (T) segment, so nothing would be aligned")
        object.__setattr__(self, "_umi_slices", self._slices(SegmentType.MOLECULAR_BARCODE))
        object.__setattr__(self, "_template_slices", self._slices(SegmentType.TEMPLATE))

    @classmethod
    def parse(cls, text: str) -> ReadStructure:
        """Parse fgbio notation such as ``8M142T``, ``8M+T`` or ``5M2S+T`` (case-insensitive)."""
        compact = text.strip()
        if not compact:
            raise _invalid(text, "it is empty")
        segments: list[ReadSegment] = []
        position = 0
        offset = 0
        while position < len(compact):
            match = _SEGMENT_PATTERN.match(compact, position)
            if match is None:
                if compact[position].isdigit() or compact[position] == "+":
                    problem = f"length at offset {position} is not followed by a type letter"
                else:
                    problem = f"expected a length (digits or '+') at offset {position}"
                raise _invalid(text, problem)
            length_text, letter = match.groups()
            try:
                kind = SegmentType(letter.upper())
            except ValueError:
                raise _invalid(
                    text,
                    f"unknown segment type {letter!r} at offset {match.start(2)} "
                    "(use T, M, B or S)",
                ) from None
            length = None if length_text == "+" else int(length_text)
            if length == 0:
                raise _invalid(text, f"segment at offset {position} has length 0")
            segments.append(ReadSegment(offset=offset, length=length, kind=kind))
            if length is not None:
                offset += length
            position = match.end()
        return cls(tuple(segments))

    def __str__(self) -> str:
        return "".join(str(s) for s in self.segments)

    @property
    def fixed_length(self) -> int:
        """Total length of the fixed-length segments."""
        return sum(s.length for s in self.segments if s.length is not None)

    @property
    def has_variable_length(self) -> bool:
        """True when the last segment is ``+``."""
        return self.segments[-1].length is None

    @property
    def min_read_length(self) -> int:
        """The shortest read this structure can be applied to (``+`` needs >= 1 base)."""
        return self.fixed_length + (1 if self.has_variable_length else 0)

    @property
    def has_umi(self) -> bool:
        """True when the structure has at least one molecular barcode (M) segment."""
        return any(s.kind is SegmentType.MOLECULAR_BARCODE for s in self.segments)

    def _slices(self, kind: SegmentType) -> tuple[slice, ...]:
        return tuple(
            slice(s.offset, None if s.length is None else s.offset + s.length)
            for s in self.segments
            if s.kind is kind
        )

    def check_length(self, read_length: int) -> None:
        """Raise ``ValueError`` if a read of ``read_length`` bases is too short."""
        if read_length < self.min_read_length:
            raise ValueError(
                f"read of length {read_length} is shorter than read structure {self} needs "
                f"({self.min_read_length} bases)"
            )

    def extract(self, seq: str, qual: str) -> tuple[str, str, str]:
        """Split one read into ``(umi, template_seq, template_qual)``; see the module docstring.

        ``umi`` is the concatenation of the M segments ("" when there are none).
        """
        self.check_length(len(seq))
        if len(qual) != len(seq):
            raise ValueError(f"sequence has {len(seq)} bases but quality has {len(qual)}")
        umi_slices, template_slices = self._umi_slices, self._template_slices
        umi = "".join(seq[s] for s in umi_slices)
        if len(template_slices) == 1:
            only = template_slices[0]
            return umi, seq[only], qual[only]
        return (
            umi,
            "".join(seq[s] for s in template_slices),
            "".join(qual[s] for s in template_slices),
        )

    def sample_barcode(self, seq: str) -> str:
        """The concatenated sample-barcode (B) bases of ``seq`` ("" when there are none)."""
        self.check_length(len(seq))
        return "".join(seq[s] for s in self._slices(SegmentType.SAMPLE_BARCODE))
