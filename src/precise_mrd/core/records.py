"""Plain records shared by every layer.

Coordinates: :class:`Variant` uses 1-based closed positions as in VCF (``pos``); everything named
``start``/``end`` elsewhere in the package is 0-based half-open as in BAM/pysam, and says so.

Tumour fraction (TF) is defined once, here, and used by the simulator and the caller alike:
**TF is the fraction of cfDNA molecules in the sample that derive from tumour cells.** A tumour
molecule covering tracked variant *i* carries the alternate allele with probability ``tumor_af``
(the variant's allele fraction in the tumour itself: 0.5 for a clonal heterozygous mutation in a
diploid region). So the expected fraction of alt molecules at locus *i* is ``TF * tumor_af`` before
background errors. A variant without a tumour AF is taken as clonal heterozygous (0.5).

>>> v = Variant(chrom="chr1", pos=100, ref="C", alt="T")
>>> v.key, v.tumor_af
('chr1:100:C>T', 0.5)
>>> Variant(chrom="chr1", pos=0, ref="C", alt="T")
Traceback (most recent call last):
...
ValueError: pos must be >= 1 (1-based); got 0
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

BASES = "ACGT"
DEFAULT_TUMOR_AF = 0.5


@dataclass(frozen=True, slots=True)
class Variant:
    """A tumour-informed SNV to track. ``pos`` is 1-based (VCF convention)."""

    chrom: str
    pos: int
    ref: str
    alt: str
    tumor_af: float = DEFAULT_TUMOR_AF

    def __post_init__(self) -> None:
        if self.pos < 1:
            raise ValueError(f"pos must be >= 1 (1-based); got {self.pos}")
        if self.ref not in BASES or len(self.ref) != 1:
            raise ValueError(f"ref must be one of A, C, G, T; got {self.ref!r}")
        if self.alt not in BASES or len(self.alt) != 1:
            raise ValueError(f"alt must be one of A, C, G, T; got {self.alt!r}")
        if self.ref == self.alt:
            raise ValueError(f"alt must differ from ref; got {self.ref}>{self.alt}")
        if not 0.0 < self.tumor_af <= 1.0:
            raise ValueError(f"tumor_af must be in (0, 1]; got {self.tumor_af}")

    @property
    def key(self) -> str:
        """A stable identifier ``chrom:pos:ref>alt``."""
        return f"{self.chrom}:{self.pos}:{self.ref}>{self.alt}"

    @property
    def start0(self) -> int:
        """The 0-based position of the variant base."""
        return self.pos - 1


Region = tuple[str, int, int]
"""A genomic interval ``(chrom, start, end)``, 0-based half-open."""


def merge_regions(regions: Sequence[Region]) -> list[Region]:
    """Merge overlapping or touching intervals per contig (contigs in first-seen order).

    >>> merge_regions([("c1", 10, 20), ("c2", 0, 5), ("c1", 15, 30), ("c1", 30, 31)])
    [('c1', 10, 31), ('c2', 0, 5)]
    """
    by_chrom: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for chrom, start, end in regions:
        by_chrom[chrom].append((start, end))
    merged: list[Region] = []
    for chrom, spans in by_chrom.items():
        spans.sort()
        current_start, current_end = spans[0]
        for start, end in spans[1:]:
            if start <= current_end:
                current_end = max(current_end, end)
            else:
                merged.append((chrom, current_start, current_end))
                current_start, current_end = start, end
        merged.append((chrom, current_start, current_end))
    return merged
