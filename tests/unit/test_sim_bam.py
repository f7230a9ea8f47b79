"""The columnar BAM writer against htslib: same records, bins, BGZF framing, determinism."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pysam
import pytest

from precise_mrd.io.sim_bam import (
    BGZF_EOF,
    BamRecordColumns,
    ColumnarBamWriter,
    bgzf_block,
    encode_header,
    encode_records,
    reg2bin,
)

HEADER = "@HD\tVN:1.6\tSO:coordinate\n@SQ\tSN:chr1\tLN:100000000\n@SQ\tSN:chr2\tLN:5000\n"
REFERENCES = [("chr1", 100_000_000), ("chr2", 5000)]


def random_batch(n: int, seed: int) -> BamRecordColumns:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 152, size=n)
    # positions spread over bins of every level, sorted
    position = np.sort(rng.integers(0, 99_999_000, size=n))
    position[: n // 4] = np.sort(rng.integers(16_300, 16_400, size=n // 4))  # bin edges
    position.sort()
    bases = ["".join(rng.choice(list("ACGTN"), size=k)) for k in lengths]
    return BamRecordColumns.build(
        reference_id=[0] * n,
        position=position.tolist(),
        flag=rng.choice([99, 147, 83, 163], size=n).tolist(),
        mate_reference_id=[0] * n,
        mate_position=(position + 50).tolist(),
        template_length=rng.integers(-300, 300, size=n).tolist(),
        names=[f"read{i}:{'x' * int(rng.integers(0, 20))}" for i in range(n)],
        bases=bases,
        qualities=[rng.integers(2, 42, size=k).tolist() for k in lengths],
        string_tags={
            "RX": [f"{'A' * int(k % 9)}-CG" for k in lengths],
            "MC": [f"{k}M" for k in lengths],
        },
        mapping_quality=60,
    )


def write(path: Path, batch: BamRecordColumns, threads: int = 2) -> Path:
    with ColumnarBamWriter(path, HEADER, REFERENCES, threads=threads) as writer:
        writer.write(batch)
    return path


def test_records_round_trip_through_htslib(tmp_path: Path) -> None:
    batch = random_batch(500, seed=1)
    ours = write(tmp_path / "ours.bam", batch)
    # htslib recomputes the bin when it writes; a rewrite must agree record for record
    with (
        pysam.AlignmentFile(str(ours), "rb") as source,
        pysam.AlignmentFile(str(tmp_path / "theirs.bam"), "wb", template=source) as sink,
    ):
        for read in source:
            sink.write(read)
    with (
        pysam.AlignmentFile(str(ours), "rb") as mine,
        pysam.AlignmentFile(str(tmp_path / "theirs.bam"), "rb") as theirs,
    ):
        pairs = list(zip(mine, theirs, strict=True))
    assert len(pairs) == 500
    for (a, b), name in zip(pairs, batch.names, strict=True):
        assert a.to_string() == b.to_string()
        assert a.bin == b.bin
        assert a.query_name == bytes(name[name != 0]).decode()
        assert a.cigarstring == f"{a.query_length}M"


def test_reg2bin_matches_the_sam_spec_examples() -> None:
    start = np.array([0, 16383, 16383, 131071, 0, 70_000_000], dtype=np.int64)
    end = np.array([1, 16384, 16385, 131073, 1 << 29, 70_000_100], dtype=np.int64)
    expected = [4681, 4681, 585, 73, 0, 4681 + (70_000_000 >> 14)]
    assert reg2bin(start, end).tolist() == expected


def test_bgzf_is_multi_member_gzip_and_deterministic_across_threads(tmp_path: Path) -> None:
    batch = random_batch(3000, seed=2)
    one = write(tmp_path / "one.bam", batch, threads=1).read_bytes()
    three = write(tmp_path / "three.bam", batch, threads=3).read_bytes()
    assert one == three
    assert one.endswith(BGZF_EOF)
    assert gzip.decompress(one) == encode_header(HEADER, REFERENCES) + encode_records(batch)
    pysam.index(str(tmp_path / "one.bam"))
    with pysam.AlignmentFile(str(tmp_path / "one.bam"), "rb") as bam:
        assert bam.count("chr1", 16_300, 16_400) > 0


def test_incompressible_block_is_stored() -> None:
    data = np.random.default_rng(3).integers(0, 256, size=0xFF00, dtype=np.uint8).tobytes()
    block = bgzf_block(data, 4)
    assert len(block) <= 65536
    assert gzip.decompress(block) == data


def test_unsorted_input_is_refused(tmp_path: Path) -> None:
    batch = random_batch(10, seed=4)
    with ColumnarBamWriter(tmp_path / "x.bam", HEADER, REFERENCES) as writer:
        writer.write(batch)
        with pytest.raises(ValueError, match="before the previous batch"):
            writer.write(batch)
    reverse = BamRecordColumns.build(
        reference_id=[0, 0],
        position=[10, 5],
        flag=[0, 0],
        mate_reference_id=[-1, -1],
        mate_position=[-1, -1],
        template_length=[0, 0],
        names=["a", "b"],
        bases=["A", "C"],
        qualities=[[30], [30]],
        string_tags={},
    )
    with (
        ColumnarBamWriter(tmp_path / "y.bam", HEADER, REFERENCES) as writer,
        pytest.raises(ValueError, match="not sorted"),
    ):
        writer.write(reverse)
    with pytest.raises(ValueError, match="SO:coordinate"):
        ColumnarBamWriter(tmp_path / "z.bam", "@HD\tVN:1.6\n", REFERENCES)


def test_bad_columns_are_refused() -> None:
    with pytest.raises(ValueError, match="read names"):
        BamRecordColumns.build(
            reference_id=[0],
            position=[1],
            flag=[0],
            mate_reference_id=[-1],
            mate_position=[-1],
            template_length=[0],
            names=[""],
            bases=["A"],
            qualities=[[30]],
            string_tags={},
        )
