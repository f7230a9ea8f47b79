"""Tumour variant VCF writing (and, later, validated reading of VCF and TSV).

The tumour allele fraction travels in the INFO field ``TAF`` (float), so the caller knows each
variant's expected share of tumour molecules (see :mod:`precise_mrd.core.records`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from precise_mrd.core.records import Variant

VCF_HEADER_INFO = (
    '##INFO=<ID=TAF,Number=1,Type=Float,Description="Allele fraction of the variant in the tumour">'
)


def write_vcf(path: Path, variants: Iterable[Variant], contig_lengths: Mapping[str, int]) -> None:
    """Write sites-only VCF 4.2 with one record per variant, in the order given."""
    lines = ["##fileformat=VCFv4.2", "##source=precise-mrd", VCF_HEADER_INFO]
    lines += [f"##contig=<ID={name},length={length}>" for name, length in contig_lengths.items()]
    lines.append("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO")
    for variant in variants:
        lines.append(
            f"{variant.chrom}\t{variant.pos}\t{variant.key}\t{variant.ref}\t{variant.alt}"
            f"\t.\tPASS\tTAF={variant.tumor_af:.6g}"
        )
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
