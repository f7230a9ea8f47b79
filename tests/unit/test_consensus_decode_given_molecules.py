"""``decode_status`` with molecule ids as arrays decodes what the ``MI``-tagged records decode to.

The fused group -> consensus path hands the group stage's molecule ids to the decoder instead of
writing them as ``MI`` tags and parsing them back; both must give the same columns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pysam
import pytest

from precise_mrd.io.bam import count_records, iter_record_chunks, tag_records
from precise_mrd.io.bam_columns import (
    STATUS_ABSENT,
    STATUS_SKIPPED,
    ReadColumns,
    decode_status,
)


def _write_bam(path: Path) -> None:
    header = {"HD": {"VN": "1.6", "SO": "coordinate"}, "SQ": [{"SN": "chr1", "LN": 10_000}]}
    with pysam.AlignmentFile(str(path), "wb", header=header) as bam:
        for i in range(12):
            read = pysam.AlignedSegment(bam.header)
            read.query_name = f"read{i}"
            read.reference_id = 0
            read.reference_start = 100 + 10 * i
            read.mapping_quality = 60
            read.cigartuples = [(0, 8)]
            read.query_sequence = "ACGTACGT"
            read.query_qualities = pysam.qualitystring_to_array("IIIIIIII")
            read.flag = 0x4 if i == 5 else 0
            tags: list[tuple[str, object]] = [("RX", f"AAC-GT{i % 3}")]
            if i % 4 == 1:
                tags.append(("MI", "999/B"))  # an old tag, replaced by the given id
            if i % 4 == 2:
                tags.insert(0, ("MI", 3))  # an integer one
            read.set_tags(tags)
            bam.write(read)


def _used(status: np.ndarray, columns: ReadColumns) -> ReadColumns:
    return columns.take(np.flatnonzero(status == 0))


def test_given_molecules_decode_like_the_tagged_records(tmp_path: Path) -> None:
    path = tmp_path / "in.bam"
    _write_bam(path)
    (chunk,) = list(iter_record_chunks(path))
    n = count_records(chunk)
    assert n == 12
    molecules = np.array([0, 7, -1, 12345678901234, 7, 3, 0, -1, 42, 9, 10, 100], dtype=np.int64)
    strands = np.array([1, 2, 0, 0, 1, 2, 2, 1, 0, 1, 0, 2], dtype=np.int8)
    tagged, n_written = tag_records(chunk, molecules, strands, np.frombuffer(b"MI", np.uint8))
    assert n_written == 10
    status_t, columns_t = decode_status(tagged)
    status_g, columns_g = decode_status(chunk, molecules=molecules, strands=strands)
    # the absent records are exactly the dropped ones; the rest have the tagged stream's status
    assert (status_g == STATUS_ABSENT).tolist() == (molecules < 0).tolist()
    assert status_g[molecules >= 0].tolist() == status_t.tolist()
    assert int((status_t == STATUS_SKIPPED).sum()) == 1
    used_t, used_g = _used(status_t, columns_t), _used(status_g, columns_g)
    assert len(used_g) == 9
    text_lengths = {"mi_text": "mi_lengths", "rx_text": "rx_lengths"}
    text_lengths.update(bases="lengths", quals="lengths")
    for name in ReadColumns.__dataclass_fields__:
        if name in ("name_starts", "cigar_starts"):
            continue  # byte offsets in their own chunk
        a, b = getattr(used_t, name), getattr(used_g, name)
        if name in text_lengths:  # padded matrices: the widths may differ, the text may not
            lengths = getattr(used_t, text_lengths[name]).tolist()
            assert [a[i, :k].tolist() for i, k in enumerate(lengths)] == [
                b[i, :k].tolist() for i, k in enumerate(lengths)
            ], name
        else:
            assert np.array_equal(a, b), name
    assert used_g.mi_codes.tolist() == [0, 7, 12345678901234, 7, 0, 42, 9, 10, 100]
    assert used_g.strand_b.tolist() == [0, 1, 0, 0, 1, 0, 0, 0, 1]
    assert used_g.has_suffix.tolist() == [True, True, False, True, True, False, True, False, True]


def test_given_molecules_need_both_arrays_of_the_right_length(tmp_path: Path) -> None:
    path = tmp_path / "in.bam"
    _write_bam(path)
    (chunk,) = list(iter_record_chunks(path))
    with pytest.raises(ValueError, match="both"):
        decode_status(chunk, molecules=np.zeros(12, dtype=np.int64))
    with pytest.raises(ValueError, match="11 molecule ids for 12 records"):
        decode_status(
            chunk, molecules=np.zeros(11, dtype=np.int64), strands=np.zeros(11, dtype=np.int8)
        )
