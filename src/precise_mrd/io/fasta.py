"""Reference FASTA writing (and, later, validated reading).

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> write_fasta(d / "ref.fa", {"chr1": "ACGT" * 30})
>>> sorted(p.name for p in d.iterdir())
['ref.fa', 'ref.fa.fai']
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pysam

FASTA_LINE_WIDTH = 60


def write_fasta(path: Path, contigs: Mapping[str, str]) -> None:
    """Write ``contigs`` (name -> sequence) as FASTA with 60-column lines, then index it (.fai)."""
    with open(path, "w", encoding="ascii") as handle:
        for name, sequence in contigs.items():
            handle.write(f">{name}\n")
            for offset in range(0, len(sequence), FASTA_LINE_WIDTH):
                handle.write(sequence[offset : offset + FASTA_LINE_WIDTH])
                handle.write("\n")
    pysam.faidx(str(path))
