"""The whole-file record reader inflates BGZF blocks with ISA-L: same bytes as pysam's, and a
corrupt deflate stream is an InputFileError that names the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pysam
import pytest

from precise_mrd.core.errors import InputFileError
from precise_mrd.io.bam import count_records, iter_record_chunks

_HEADER = {"HD": {"VN": "1.6", "SO": "coordinate"}, "SQ": [{"SN": "chr1", "LN": 100_000}]}


def _write_bam(path: Path, n_reads: int) -> None:
    rng = np.random.default_rng(7)
    with pysam.AlignmentFile(str(path), "wb", header=_HEADER) as out:
        for i in range(n_reads):
            read = pysam.AlignedSegment(out.header)
            read.query_name = f"r{i}"
            read.reference_id, read.reference_start = 0, 10 + i
            read.cigarstring = "50M"
            read.query_sequence = "".join(rng.choice(list("ACGT"), size=50))
            read.query_qualities = pysam.qualitystring_to_array("I" * 50)
            out.write(read)


def test_chunks_hold_every_record_pysam_wrote(tmp_path: Path) -> None:
    path = tmp_path / "reads.bam"
    _write_bam(path, 3000)
    chunks = list(iter_record_chunks(path))
    assert sum(int(count_records(chunk)) for chunk in chunks) == 3000
    with pysam.AlignmentFile(str(path), "rb") as bam:
        first = next(iter(bam))
    size = int.from_bytes(bytes(chunks[0][:4]), "little")
    assert bytes(chunks[0][36 : 36 + len("r0")]) == first.query_name.encode()
    assert size > 50


def test_corrupt_deflate_stream_is_an_input_file_error(tmp_path: Path) -> None:
    path = tmp_path / "reads.bam"
    _write_bam(path, 3000)
    data = bytearray(path.read_bytes())
    xlen = data[10] | (data[11] << 8)
    first_block_end = (data[12 + xlen - 2] | (data[12 + xlen - 1] << 8)) + 1
    second = first_block_end + 12 + 6  # payload of the second block
    data[second : second + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    with pytest.raises(InputFileError, match=r"reads\.bam: is corrupt"):
        list(iter_record_chunks(path))
