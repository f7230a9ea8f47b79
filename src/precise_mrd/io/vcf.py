"""Tumour variants: VCF writing, and validated reading of VCF or TSV/CSV.

Tracked variants arrive as a VCF (plain or gzip/bgzip) or as a delimited table with a header row
``CHROM POS REF ALT [AF]`` (tab or comma separated, header case-insensitive, ``#CHROM`` accepted).
Positions are 1-based as in VCF. The tumour allele fraction is read, in order of preference, from
INFO ``TAF``, INFO ``AF``, or FORMAT ``AF`` of the first sample (VCF), or the ``AF`` column (table);
otherwise :data:`~precise_mrd.core.records.DEFAULT_TUMOR_AF` is used.

Only SNVs are tracked. Multi-allelic records are split into one SNV per ALT allele; indels, MNVs,
symbolic alleles and VCF records whose FILTER is neither ``PASS`` nor ``.`` are skipped and reported
in :attr:`VariantSet.skipped`. Everything else that is wrong raises an :class:`InputError` naming
the file, the line and the fix: a contig missing from the reference, a REF base that disagrees with
the reference (usually the wrong genome build), a duplicate variant, a malformed line, or a file
with no usable SNV at all. Variants come back sorted by reference contig order, then position.

The tumour AF travels in INFO ``TAF`` when writing, so a written VCF reads back unchanged:

>>> import tempfile, pathlib
>>> from precise_mrd.io.fasta import open_reference, write_fasta
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> write_fasta(d / "ref.fa", {"chr1": "ACGT" * 30})
>>> write_vcf(d / "v.vcf", [Variant("chr1", 2, "C", "T", 0.3)], {"chr1": 120})
>>> with open_reference(d / "ref.fa") as reference:
...     read_variants(d / "v.vcf", reference)
[Variant(chrom='chr1', pos=2, ref='C', alt='T', tumor_af=0.3)]
"""

from __future__ import annotations

import gzip
import logging
import math
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from precise_mrd.core.errors import InputDataError, InputFileError
from precise_mrd.core.records import DEFAULT_TUMOR_AF, Variant
from precise_mrd.io.fasta import ReferenceGenome

logger = logging.getLogger(__name__)

VCF_HEADER_INFO = (
    '##INFO=<ID=TAF,Number=1,Type=Float,Description="Allele fraction of the variant in the tumour">'
)
VCF_FIXED_COLUMNS = ("#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO")
_TABLE_ALIASES = {
    "chrom": ("chrom", "chr", "chromosome", "contig"),
    "pos": ("pos", "position", "start_1based"),
    "ref": ("ref",),
    "alt": ("alt",),
    "af": ("af", "taf", "tumor_af", "tumour_af", "vaf"),
}
_ALLOWED_ALLELE_CHARACTERS = frozenset("ACGTN")


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


@dataclass(frozen=True, slots=True)
class SkippedRecord:
    """A variant record that was read but not tracked. ``line_number`` is 1-based."""

    line_number: int
    description: str
    reason: str


@dataclass(frozen=True, slots=True)
class VariantSet:
    """The SNVs read from one file, plus what was skipped and why."""

    source: str
    variants: tuple[Variant, ...]
    skipped: tuple[SkippedRecord, ...]

    def __post_init__(self) -> None:
        if not self.variants:
            raise ValueError("a VariantSet needs at least one variant")

    def skipped_summary(self) -> str:
        """E.g. ``"2 indel, 1 MNV"`` ("" when nothing was skipped)."""
        counts = Counter(record.reason for record in self.skipped)
        return ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))


@dataclass(frozen=True, slots=True)
class _Candidate:
    line_number: int
    chrom: str
    pos: int
    ref: str
    alt: str
    tumor_af: float


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(1-based line number, line without newline)``; wraps decoding errors."""
    name = str(path)
    if not path.exists():
        raise InputFileError(name, "variant file does not exist", "check the path")
    if path.is_dir():
        raise InputFileError(name, "is a directory, not a variant file", "pass the VCF/TSV file")
    try:
        with open(path, "rb") as probe:
            is_gzip = probe.read(2) == b"\x1f\x8b"
        handle: IO[str] = (
            gzip.open(path, "rt", encoding="utf-8", newline=None)  # noqa: SIM115 - closed below
            if is_gzip
            else open(path, encoding="utf-8", newline=None)  # noqa: SIM115
        )
    except OSError as error:
        raise InputFileError(
            name, f"cannot be read ({error.strerror or error})", "check the file permissions"
        ) from error
    line_number = 0
    try:
        with handle:
            for line_number, line in enumerate(handle, start=1):
                yield line_number, line.rstrip("\r\n")
    except UnicodeDecodeError as error:
        raise InputFileError(
            name,
            f"line {line_number + 1} is not text (byte offset {error.start})",
            "pass a VCF or TSV/CSV text file (optionally gzip-compressed)",
        ) from error
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise InputFileError(
            name, f"gzip stream is truncated or corrupt after line {line_number}", "re-export it"
        ) from error


def _parse_af(text: str, allele_index: int, source: str, where: str) -> float | None:
    """One AF value out of a possibly per-allele comma list; None when missing ('.')."""
    values = text.split(",")
    value = values[allele_index] if allele_index < len(values) else values[0]
    if value in (".", ""):
        return None
    try:
        af = float(value)
    except ValueError:
        raise InputDataError(
            source, f"{where}: tumour AF {value!r} is not a number", "write AF as a fraction"
        ) from None
    if not (0.0 < af <= 1.0) or math.isnan(af):
        raise InputDataError(
            source,
            f"{where}: tumour AF {value} is outside (0, 1]",
            "write AF as a fraction (0.25, not 25%); leave it out for the default 0.5",
        )
    return af


def _classify(ref: str, alt: str) -> str | None:
    """None for a usable SNV, otherwise the reason it is skipped."""
    if alt.startswith("<") or alt == "*" or "[" in alt or "]" in alt:
        return "symbolic ALT"
    if len(ref) != len(alt):
        return "indel"
    if len(ref) > 1:
        return "MNV"
    if alt == "N" or ref == "N":
        return "N allele"
    return None


def _check_alleles(ref: str, alts: list[str], source: str, where: str) -> None:
    for allele in [ref, *alts]:
        if allele.startswith("<") or allele == "*" or "[" in allele or "]" in allele:
            continue
        if not allele or not set(allele) <= _ALLOWED_ALLELE_CHARACTERS:
            raise InputDataError(
                source,
                f"{where}: allele {allele!r} is not made of A, C, G, T, N",
                "fix the REF/ALT columns",
            )


def _parse_pos(text: str, source: str, where: str) -> int:
    try:
        pos = int(text)
    except ValueError:
        raise InputFileError(
            source, f"{where}: POS {text!r} is not an integer", "fix the POS column"
        ) from None
    if pos < 1:
        raise InputDataError(source, f"{where}: POS {pos} is < 1", "positions are 1-based")
    return pos


def _vcf_record(
    fields: list[str],
    line_number: int,
    source: str,
    default_af: float,
    candidates: list[_Candidate],
    skipped: list[SkippedRecord],
) -> None:
    where = f"line {line_number}"
    if len(fields) < 8:
        raise InputFileError(
            source,
            f"{where}: malformed VCF record ({len(fields)} tab-separated columns, need >= 8)",
            "separate columns with tabs",
        )
    chrom, pos_text, _id, ref, alt_text, _qual, filter_text, info = fields[:8]
    pos = _parse_pos(pos_text, source, where)
    ref = ref.upper()
    description = f"{chrom}:{pos} {ref}>{alt_text}"
    if alt_text in (".", ""):
        skipped.append(SkippedRecord(line_number, description, "no ALT allele"))
        return
    alts = alt_text.upper().split(",")
    _check_alleles(ref, alts, source, where)
    if filter_text not in ("PASS", "."):
        skipped.append(SkippedRecord(line_number, description, f"FILTER {filter_text}"))
        return
    info_values: dict[str, str] = {}
    if info not in (".", ""):
        for item in info.split(";"):
            key, _, value = item.partition("=")
            info_values[key] = value
    format_af: str | None = None
    if len(fields) >= 10:
        format_keys = fields[8].split(":")
        if "AF" in format_keys:
            sample_values = fields[9].split(":")
            index = format_keys.index("AF")
            if index < len(sample_values):
                format_af = sample_values[index]
    for allele_index, alt in enumerate(alts):
        reason = _classify(ref, alt)
        if reason is not None:
            skipped.append(SkippedRecord(line_number, f"{chrom}:{pos} {ref}>{alt}", reason))
            continue
        af: float | None = None
        for text in (info_values.get("TAF"), info_values.get("AF"), format_af):
            if text is not None and af is None:
                af = _parse_af(text, allele_index, source, where)
        candidates.append(
            _Candidate(line_number, chrom, pos, ref, alt, default_af if af is None else af)
        )


def _table_columns(header: str, delimiter: str) -> dict[str, int] | None:
    names = [name.strip().lstrip("#").strip().lower() for name in header.split(delimiter)]
    columns: dict[str, int] = {}
    for key, aliases in _TABLE_ALIASES.items():
        for alias in aliases:
            if alias in names:
                columns[key] = names.index(alias)
                break
    if not {"chrom", "pos", "ref", "alt"} <= columns.keys():
        return None
    return columns


def _table_record(
    line: str,
    line_number: int,
    delimiter: str,
    columns: dict[str, int],
    source: str,
    default_af: float,
    candidates: list[_Candidate],
    skipped: list[SkippedRecord],
) -> None:
    where = f"line {line_number}"
    fields = [field.strip() for field in line.split(delimiter)]
    needed = max(columns[key] for key in ("chrom", "pos", "ref", "alt")) + 1
    if len(fields) < needed:
        raise InputFileError(
            source,
            f"{where}: malformed row ({len(fields)} columns, the header has >= {needed})",
            f"give every row the header's columns, separated by {delimiter!r}",
        )
    chrom = fields[columns["chrom"]]
    pos = _parse_pos(fields[columns["pos"]], source, where)
    ref = fields[columns["ref"]].upper()
    alts = fields[columns["alt"]].upper().split(",")
    _check_alleles(ref, alts, source, where)
    af_text = fields[columns["af"]] if "af" in columns and columns["af"] < len(fields) else "."
    for allele_index, alt in enumerate(alts):
        reason = _classify(ref, alt)
        if reason is not None:
            skipped.append(SkippedRecord(line_number, f"{chrom}:{pos} {ref}>{alt}", reason))
            continue
        af = _parse_af(af_text, allele_index, source, where)
        candidates.append(
            _Candidate(line_number, chrom, pos, ref, alt, default_af if af is None else af)
        )


#: variant records a file may hold: genome-wide tumour-informed panels track tens of thousands of
#: SNVs; past this the file is refused as it is read (bounded time and memory), not after
MAX_VARIANT_RECORDS = 200_000


def _parse_file(path: Path, default_af: float) -> tuple[list[_Candidate], list[SkippedRecord], str]:
    source = str(path)
    n_records = 0
    candidates: list[_Candidate] = []
    skipped: list[SkippedRecord] = []
    kind = ""
    delimiter = "\t"
    columns: dict[str, int] = {}
    for line_number, line in _lines(path):
        if not line.strip():
            continue
        if not kind:
            if line.startswith("##"):
                continue
            header_fields = [field.strip() for field in line.split("\t")]
            if tuple(field.upper() for field in header_fields[:8]) == VCF_FIXED_COLUMNS:
                kind = "VCF"
                continue
            delimiter = "\t" if "\t" in line else ","
            found = _table_columns(line, delimiter)
            if found is None:
                raise InputFileError(
                    source,
                    f"line {line_number} is neither a VCF '#CHROM' header nor a table header "
                    "with columns CHROM, POS, REF, ALT",
                    "pass a VCF, or a TSV/CSV whose first row names CHROM POS REF ALT [AF]",
                )
            kind, columns = "table", found
            continue
        if line.startswith("#"):
            continue
        n_records += 1
        if n_records > MAX_VARIANT_RECORDS:
            raise InputDataError(
                source,
                f"has more than {MAX_VARIANT_RECORDS:,} variant records (line {line_number})",
                "track the patient's tumour variants only (a panel of tens to tens of thousands)",
            )
        if kind == "VCF":
            fields = line.split("\t")
            _vcf_record(fields, line_number, source, default_af, candidates, skipped)
        else:
            _table_record(
                line, line_number, delimiter, columns, source, default_af, candidates, skipped
            )
    if not kind:
        raise InputDataError(
            source,
            "contains no header and no variant records",
            "pass a VCF or TSV/CSV with at least one SNV",
        )
    return candidates, skipped, kind


def read_variant_set(
    path: Path, reference: ReferenceGenome, *, default_tumor_af: float = DEFAULT_TUMOR_AF
) -> VariantSet:
    """Read and validate tracked SNVs from a VCF or TSV/CSV against ``reference``."""
    source = str(path)
    candidates, skipped, kind = _parse_file(path, default_tumor_af)
    if not candidates:
        detail = f" (skipped: {_summarise(skipped)})" if skipped else ""
        raise InputDataError(
            source,
            f"contains no usable SNV{detail}",
            "track at least one single-nucleotide variant (indels and MNVs are not supported)",
        )
    seen: dict[tuple[str, int, str, str], int] = {}
    mismatches: list[str] = []
    variants: list[Variant] = []
    for candidate in candidates:
        where = f"line {candidate.line_number}"
        if candidate.chrom not in reference:
            raise reference.missing_contig_error(source, candidate.chrom, where)
        length = reference.length(candidate.chrom)
        if candidate.pos > length:
            raise InputDataError(
                source,
                f"{where}: {candidate.chrom}:{candidate.pos} is past the contig's end ({length})",
                "use the reference the variants were called against (same genome build)",
            )
        key = (candidate.chrom, candidate.pos, candidate.ref, candidate.alt)
        if key in seen:
            raise InputDataError(
                source,
                f"{where}: {candidate.chrom}:{candidate.pos} {candidate.ref}>{candidate.alt} "
                f"duplicates line {seen[key]}",
                "list each variant once",
            )
        seen[key] = candidate.line_number
        reference_base = reference.base_at(candidate.chrom, candidate.pos - 1)
        if reference_base != candidate.ref:
            mismatches.append(
                f"{candidate.chrom}:{candidate.pos} {kind} REF {candidate.ref} vs reference "
                f"{reference_base} ({where})"
            )
            continue
        variants.append(
            Variant(
                candidate.chrom, candidate.pos, candidate.ref, candidate.alt, candidate.tumor_af
            )
        )
    if mismatches:
        raise InputDataError(
            source,
            f"{len(mismatches)} of {len(candidates)} SNVs have a REF base that differs from "
            f"reference {reference.path.name}, e.g. {mismatches[0]}",
            "check that the variants and the reference use the same genome build "
            "(e.g. GRCh37 vs GRCh38)",
        )
    order = {chrom: index for index, chrom in enumerate(reference.contigs)}
    variants.sort(key=lambda v: (order[v.chrom], v.pos, v.alt))
    return VariantSet(source=source, variants=tuple(variants), skipped=tuple(skipped))


def _summarise(skipped: list[SkippedRecord]) -> str:
    counts = Counter(record.reason for record in skipped)
    return ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))


def read_variants(path: Path, reference: ReferenceGenome) -> list[Variant]:
    """Read tracked SNVs (see :func:`read_variant_set`); skipped records are logged at WARNING."""
    variant_set = read_variant_set(path, reference)
    if variant_set.skipped:
        logger.warning(
            "%s: skipped %d record(s) that are not trackable SNVs: %s",
            path,
            len(variant_set.skipped),
            variant_set.skipped_summary(),
        )
    return list(variant_set.variants)
