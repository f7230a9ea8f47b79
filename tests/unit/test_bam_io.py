"""io/bam.py: every bad BAM is refused with an InputFileError naming the file and the fix."""

from __future__ import annotations

import gzip
from pathlib import Path

import pysam
import pytest

from precise_mrd.core.errors import InputFileError
from precise_mrd.io.bam import (
    BGZF_EOF,
    iter_alignments,
    open_bam,
    require_umis,
    umi_of,
)

HEADER = {"HD": {"VN": "1.6", "SO": "coordinate"}, "SQ": [{"SN": "chr1", "LN": 100_000}]}


def write_bam(
    path: Path,
    positions: list[int],
    *,
    sort_order: str = "coordinate",
    with_tag: bool = True,
    name_umi: bool = False,
) -> Path:
    header = {**HEADER, "HD": {"VN": "1.6", "SO": sort_order}}
    with pysam.AlignmentFile(str(path), "wb", header=header) as out:
        for i, pos in enumerate(positions):
            read = pysam.AlignedSegment(out.header)
            read.query_name = f"read{i}_ACGTAC" if name_umi else f"read{i}"
            read.reference_id = 0
            read.reference_start = pos
            read.cigarstring = "20M"
            read.query_sequence = "A" * 20
            read.query_qualities = pysam.qualitystring_to_array("I" * 20)
            read.mapping_quality = 60
            if with_tag:
                read.set_tag("RX", "ACGTAC")
            out.write(read)
    return path


def test_good_bam_opens_and_streams(tmp_path: Path) -> None:
    path = write_bam(tmp_path / "ok.bam", [10, 20, 20, 30])
    with open_bam(path) as bam:
        starts = [r.reference_start for r in iter_alignments(bam, path)]
    assert starts == [10, 20, 20, 30]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match=r"nope\.bam: does not exist"):
        open_bam(tmp_path / "nope.bam")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="is a directory"):
        open_bam(tmp_path)


def test_sam_text_is_not_a_bam(tmp_path: Path) -> None:
    path = tmp_path / "reads.sam"
    path.write_text("@HD\tVN:1.6\tSO:coordinate\n")
    with pytest.raises(InputFileError, match=r"reads\.sam: is not a BAM file.*samtools view -b"):
        open_bam(path)


def test_plain_gzip_is_not_a_bam(tmp_path: Path) -> None:
    path = tmp_path / "reads.bam"
    path.write_bytes(gzip.compress(b"hello"))
    with pytest.raises(InputFileError, match="is not a BAM file"):
        open_bam(path)


def test_truncated_bam_without_eof_block(tmp_path: Path) -> None:
    path = write_bam(tmp_path / "cut.bam", list(range(0, 5000, 5)))
    data = path.read_bytes()
    assert data.endswith(BGZF_EOF)
    path.write_bytes(data[: -len(BGZF_EOF)])
    with pytest.raises(InputFileError, match=r"cut\.bam: is truncated.*re-create"):
        open_bam(path)


def test_bam_cut_inside_a_block_fails_while_streaming(tmp_path: Path) -> None:
    path = write_bam(tmp_path / "cut.bam", list(range(0, 20000, 2)))
    data = path.read_bytes()
    # keep the EOF marker so the header check passes, but lose bytes from the middle
    path.write_bytes(data[: len(data) // 2] + BGZF_EOF)
    with pytest.raises(InputFileError, match="truncated or corrupt"), open_bam(path) as bam:
        for _ in iter_alignments(bam, path):
            pass


def test_header_not_coordinate_sorted(tmp_path: Path) -> None:
    path = write_bam(tmp_path / "q.bam", [10, 20], sort_order="queryname")
    with pytest.raises(
        InputFileError, match=r"not coordinate-sorted \(header SO is queryname\).*samtools sort"
    ):
        open_bam(path)
    with open_bam(path, require_sorted=False) as bam:
        assert bam.header.to_dict()["HD"]["SO"] == "queryname"


def test_records_out_of_order_despite_header(tmp_path: Path) -> None:
    path = write_bam(tmp_path / "lie.bam", [30, 10])
    with (
        pytest.raises(InputFileError, match="read read1 at chr1:11 comes after"),
        open_bam(path) as bam,
    ):
        list(iter_alignments(bam, path))


def test_no_umi_tag_tells_the_user_what_to_do(tmp_path: Path) -> None:
    path = write_bam(tmp_path / "nou.bam", [10, 20], with_tag=False)
    with pytest.raises(
        InputFileError, match=r"nou\.bam: has no UMI in the RX tag.*--umi-from-read-name"
    ):
        require_umis(path, umi_tag="RX", from_read_name=False, separator="_")


def test_no_umi_in_read_name(tmp_path: Path) -> None:
    path = write_bam(tmp_path / "nou.bam", [10, 20], with_tag=True)
    with pytest.raises(InputFileError, match="no UMI at the end of the read name"):
        require_umis(path, umi_tag="RX", from_read_name=True, separator="_")


def test_umis_found(tmp_path: Path) -> None:
    tagged = write_bam(tmp_path / "t.bam", [10], with_tag=True)
    named = write_bam(tmp_path / "n.bam", [10], with_tag=False, name_umi=True)
    require_umis(tagged, umi_tag="RX", from_read_name=False, separator="_")
    require_umis(named, umi_tag="RX", from_read_name=True, separator="_")
    with open_bam(named) as bam:
        read = next(iter_alignments(bam, named))
    assert umi_of(read, "RX", True, "_") == "ACGTAC"
    assert umi_of(read, "RX", False, "_") is None
    assert umi_of(read, "RX", True, ":") is None


def test_columnar_pass_agrees_with_pysam(tmp_path: Path) -> None:
    import numpy as np

    from precise_mrd.io.bam import (
        STATUS_KEPT,
        iter_record_chunks,
        summarise_records,
    )

    path = write_bam(tmp_path / "c.bam", list(range(0, 30000, 3)), with_tag=True)
    order_state = np.array([-1, -1, 0], dtype=np.int64)
    n = 0
    for chunk in iter_record_chunks(path):
        status, _flags, tids, pos5, *_, umis, lengths, unsorted = summarise_records(
            chunk, np.frombuffer(b"RX", np.uint8), False, ord("_"), 0, order_state
        )
        assert unsorted == -1
        assert (tids == 0).all()
        assert (status == STATUS_KEPT).all()
        assert (pos5 == np.arange(n, n + len(status)) * 3).all()
        assert (lengths == 6).all()
        assert umis[0, :6].tobytes() == b"ACGTAC"
        n += len(status)
    assert n == 10000


def test_tag_records_replaces_an_existing_tag(tmp_path: Path) -> None:
    import numpy as np

    from precise_mrd.io.bam import BgzfWriter, bam_header_bytes, iter_record_chunks, tag_records

    path = write_bam(tmp_path / "in.bam", [10, 20, 30])
    out_path = tmp_path / "out.bam"
    tag = np.frombuffer(b"RX", np.uint8)
    with BgzfWriter(out_path) as writer:
        writer.write(bam_header_bytes(HEADER, tmp_path))
        for chunk in iter_record_chunks(path):
            tagged, n_written = tag_records(
                chunk, np.array([7, -1, 12345]), np.array([0, 0, 2], np.int8), tag
            )
            assert n_written == 2
            writer.write(tagged)
    with open_bam(out_path) as bam:
        reads = list(iter_alignments(bam, out_path))
    assert [r.reference_start for r in reads] == [10, 30]
    assert [r.get_tags() for r in reads] == [[("RX", "7")], [("RX", "12345/B")]]
