"""Read structure parsing and extraction (fgbio notation)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from precise_mrd.core.errors import InputDataError
from precise_mrd.core.read_structure import (
    ReadSegment,
    ReadStructure,
    ReadStructureError,
    SegmentType,
)


@pytest.mark.parametrize(
    ("text", "fixed", "min_length", "has_umi"),
    [
        ("8M142T", 150, 150, True),
        ("8M+T", 8, 9, True),
        ("5M2S+T", 7, 8, True),
        ("+T", 0, 1, False),
        ("6B4M10S+T", 20, 21, True),
        ("8m+t", 8, 9, True),
    ],
)
def test_parse_valid(text: str, fixed: int, min_length: int, has_umi: bool) -> None:
    structure = ReadStructure.parse(text)
    assert str(structure) == text.upper()
    assert structure.fixed_length == fixed
    assert structure.min_read_length == min_length
    assert structure.has_umi is has_umi
    assert ReadStructure.parse(str(structure)) == structure


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "it is empty"),
        ("8X+T", "unknown segment type 'X'"),
        ("+T8M", "only the last segment may have length '+'"),
        ("8M", "no template"),
        ("8M142", "not followed by a type letter"),
        ("M142T", "expected a length"),
        ("8M0T", "has length 0"),
        ("8M 142T", "expected a length"),
    ],
)
def test_malformed_structure_names_string_and_gives_example(text: str, problem: str) -> None:
    with pytest.raises(ReadStructureError) as caught:
        ReadStructure.parse(text)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, InputDataError)
    message = str(caught.value)
    assert message.startswith(f"read structure {text!r}: ")
    assert problem in message
    assert message.endswith("; fix: write <length or +><T|M|B|S> segments, e.g. '8M142T' or '8M+T'")
    assert "\n" not in message


def test_extract_fixed_structure_ignores_trailing_bases() -> None:
    structure = ReadStructure.parse("4M6T")
    seq, qual = "ACGTTTTTTTGGG", "ABCDEFGHIJKLM"
    assert structure.extract(seq, qual) == ("ACGT", "TTTTTT", "EFGHIJ")


def test_extract_concatenates_segments_of_one_type_in_read_order() -> None:
    structure = ReadStructure.parse("2M1S2M3T2B+T")
    seq = "AAxCCGGGbbTTTT"
    qual = "0123456789abcd"
    umi, template, template_qual = structure.extract(seq, qual)
    assert umi == "AACC"
    assert template == "GGGTTTT"
    assert template_qual == "567abcd"
    assert structure.sample_barcode(seq) == "bb"


def test_extract_rejects_short_reads_and_bad_qualities() -> None:
    structure = ReadStructure.parse("8M+T")
    with pytest.raises(ValueError, match="read of length 8 is shorter than read structure 8M\\+T"):
        structure.extract("A" * 8, "I" * 8)
    with pytest.raises(ValueError, match="9 bases but quality has 8"):
        structure.extract("A" * 9, "I" * 8)


def test_segments_must_tile_the_read() -> None:
    with pytest.raises(ValueError, match="segment 1 starts at 5, not 4"):
        ReadStructure(
            (
                ReadSegment(0, 4, SegmentType.MOLECULAR_BARCODE),
                ReadSegment(5, None, SegmentType.TEMPLATE),
            )
        )
    with pytest.raises(ValueError, match="segment length must be >= 1"):
        ReadSegment(0, 0, SegmentType.TEMPLATE)


@given(
    umi_length=st.integers(1, 12),
    skip_length=st.integers(0, 5),
    read_length=st.integers(0, 60),
)
def test_extract_partitions_the_read(umi_length: int, skip_length: int, read_length: int) -> None:
    """UMI + skipped + template bases are exactly the read, in order, for any fitting read."""
    text = f"{umi_length}M" + (f"{skip_length}S" if skip_length else "") + "+T"
    structure = ReadStructure.parse(text)
    seq = ("ACGTN" * 20)[:read_length]
    if read_length < structure.min_read_length:
        with pytest.raises(ValueError, match="shorter than read structure"):
            structure.extract(seq, seq)
        return
    umi, template, template_qual = structure.extract(seq, seq.lower())
    assert umi + seq[umi_length : umi_length + skip_length] + template == seq
    assert template_qual == template.lower()
    assert len(template) == read_length - umi_length - skip_length >= 1
