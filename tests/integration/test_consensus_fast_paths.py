"""The fast consensus paths agree with the reference formulations, record for record.

* :func:`group_and_call_consensus` (group records streamed straight into the consensus caller)
  gives the same grouping statistics and the same consensus records as ``group_bam`` followed
  by ``call_consensus_bam``;
* the compiled family-likelihood loop gives the numpy reference's consensus bit for bit;
* the columnar decoder reads what pysam reads; the encoder writes what pysam parses back;
* the 6-significant-digit float tags equal the SAM-text round trip.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import numpy as np
import pysam
import pytest

from precise_mrd.core.consensus import ConsensusParams, _call_families_numpy, call_families
from precise_mrd.core.errors import InputFileError
from precise_mrd.core.simulate import SimulationParams
from precise_mrd.io.bam import iter_record_chunks, prefetch
from precise_mrd.io.bam_columns import (
    STATUS_NO_MI,
    _round_significant,
    decode_consensus_columns,
    decode_status,
)
from precise_mrd.pipeline.consensus import call_consensus_bam, group_and_call_consensus
from precise_mrd.pipeline.group import group_bam
from precise_mrd.pipeline.simulation import simulate_sample


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    params = SimulationParams.preset("smoke", seed=5, tumor_fraction=0.01)
    return Path(simulate_sample(tmp_path_factory.mktemp("fast"), params).bam_path)


def _records(path: Path) -> list[str]:
    with pysam.AlignmentFile(str(path), "rb") as bam:
        return sorted(read.to_string() for read in bam)


def test_fused_group_and_consensus_equals_the_two_stages(sample: Path, tmp_path: Path) -> None:
    params = ConsensusParams(min_reads=(2, 1, 0))
    grouped = tmp_path / "grouped.bam"
    group_stats = group_bam(sample, grouped, strategy="paired")
    two_stage = call_consensus_bam(grouped, tmp_path / "a.bam", params=params)
    fused_group, fused = group_and_call_consensus(
        sample, tmp_path / "b.bam", params=params, strategy="paired"
    )
    assert fused_group == group_stats
    assert fused == two_stage
    assert fused.n_consensus_reads_out > 100
    a, b = _records(tmp_path / "a.bam"), _records(tmp_path / "b.bam")
    assert a == b
    # coordinate order without a sort pass, and an index that works
    with pysam.AlignmentFile(str(tmp_path / "b.bam"), "rb") as bam:
        keys = [(r.reference_id, r.reference_start) for r in bam]
        assert keys == sorted(keys)
        contig = bam.references[0]
        assert bam.count(contig) == sum(1 for _ in bam.fetch(contig))


def test_decoder_reads_what_pysam_reads(sample: Path, tmp_path: Path) -> None:
    status, _ = decode_status(next(iter_record_chunks(sample)))
    assert (status == STATUS_NO_MI).all()  # raw reads: mapped, primary, no MI yet
    grouped = tmp_path / "grouped.bam"
    group_bam(sample, grouped, strategy="paired")
    with pysam.AlignmentFile(str(grouped), "rb") as bam:
        reads = [r for _, r in zip(range(3000), bam, strict=False)]
    columns = decode_consensus_columns(next(iter_record_chunks(grouped)))
    n = min(len(columns), len(reads))
    assert n > 1000
    code = {"A": 0, "C": 1, "G": 2, "T": 3}
    for i in range(n):
        read = reads[i]
        assert columns.keys[i] == (read.reference_id << 32) | read.reference_start
        seq = read.query_sequence or ""
        assert columns.bases[i, : len(seq)].tolist() == [code.get(b, 4) for b in seq]
        assert columns.quals[i, : len(seq)].tolist() == list(read.query_qualities or [])
        rx = str(read.get_tag("RX"))
        assert bytes(columns.rx_text[i, : columns.rx_lengths[i]]).decode() == rx
        mi = str(read.get_tag("MI"))
        assert bytes(columns.mi_text[i, : columns.mi_lengths[i]]).decode() == mi[:-2]
        assert columns.mi_codes[i] == int(mi[:-2])
        assert columns.strand_b[i] == (mi[-1] == "B")


def test_compiled_family_loop_equals_the_numpy_reference() -> None:
    rng = np.random.default_rng(11)
    sizes = rng.integers(1, 9, 400)
    n = int(sizes.sum())
    truth = rng.integers(0, 4, (len(sizes), 60))
    bases = truth[np.repeat(np.arange(len(sizes)), sizes)].astype(np.uint8)
    noisy = rng.random(bases.shape) < 0.1
    bases[noisy] = rng.integers(0, 5, int(noisy.sum()))
    quals = rng.integers(0, 45, bases.shape).astype(np.uint8)
    offsets = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    for params in (ConsensusParams(), ConsensusParams(max_consensus_quality=93)):
        fast = call_families(bases, quals, offsets, params)
        slow = _call_families_numpy(bases, quals, offsets, params)
        for name in ("bases", "quals", "raw_bases", "counts", "depths", "errors"):
            assert np.array_equal(getattr(fast, name), getattr(slow, name)), name
    assert n == len(bases)


def test_float_tags_match_the_sam_text_round_trip() -> None:
    rng = np.random.default_rng(2)
    values = np.concatenate(
        [
            rng.integers(0, 60, 20000) / rng.integers(1, 4000, 20000),
            [0.0, 0.03046875, 0.002734375, 1e7 / 3, 123.4567, 1.0],
        ]
    )
    expected = np.array([float(f"{v:.6g}") for v in values.tolist()], dtype=np.float32)
    assert np.array_equal(_round_significant(values), expected)


def test_decoder_handles_long_and_integer_molecule_ids(tmp_path: Path) -> None:
    header = {"HD": {"VN": "1.6", "SO": "coordinate"}, "SQ": [{"SN": "chr1", "LN": 1000}]}
    path = tmp_path / "ids.bam"
    long_mi = "molecule-" + "x" * 70 + "/B"
    long_rx = "ACGT" * 15
    with pysam.AlignmentFile(str(path), "wb", header=header) as writer:
        mis: list[str | int] = [long_mi, 12345, "007/A"]
        for i, mi in enumerate(mis):
            read = pysam.AlignedSegment(writer.header)
            read.query_name, read.flag, read.reference_id = f"r{i}", 0, 0
            read.reference_start, read.cigarstring = 10 + i, "4M"
            read.query_sequence = "ACGN"
            read.query_qualities = pysam.qualitystring_to_array("I#I5")
            read.set_tag("MI", mi)
            read.set_tag("RX", long_rx if i == 0 else "AC-GT")
            writer.write(read)
    columns = decode_consensus_columns(next(iter_record_chunks(path)))
    texts = [bytes(columns.mi_text[i, : columns.mi_lengths[i]]).decode() for i in range(3)]
    assert texts == [long_mi[:-2], "12345", "007"]
    assert columns.strand_b.tolist() == [1, 0, 0]
    assert columns.has_suffix.tolist() == [True, False, True]
    # numeric ids keep their value; text ids (and "007", which is not canonical) are hashed
    assert columns.mi_codes[1] == 12345
    assert columns.mi_codes[0] < 0 and columns.mi_codes[2] < 0
    assert bytes(columns.rx_text[0, : columns.rx_lengths[0]]).decode() == long_rx
    assert columns.bases[0, :4].tolist() == [0, 1, 2, 4]
    assert columns.quals[0, :4].tolist() == [40, 2, 40, 20]


def test_prefetch_keeps_order_raises_producer_errors_and_stops_early() -> None:
    assert list(prefetch(iter(range(50)), depth=3)) == list(range(50))

    def failing() -> Iterator[int]:
        yield 1
        raise InputFileError("x.bam", "is truncated", "re-create it")

    with pytest.raises(InputFileError, match="truncated"):
        list(prefetch(failing()))
    produced: list[int] = []

    def counting() -> Iterator[int]:
        for i in range(1000):
            produced.append(i)
            yield i

    stream = prefetch(counting(), depth=2)
    assert next(stream) == 0
    assert isinstance(stream, Generator)
    stream.close()  # the producer stops within a few items instead of running to the end
    assert len(produced) < 10
