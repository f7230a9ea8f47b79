"""ML observation extraction from raw BAM records agrees exactly with the pysam reference reader.

``features._read_window`` decodes the records of a region found through the ``.bai`` or ``.csi``
(:class:`~precise_mrd.io.bam_regions.IndexedRecordReader`, :func:`decode_aligned_bases`);
:func:`pysam_reference.read_feature_window` is the reference (one pysam object per read). Both
must give the same reads, bit for bit, on a simulated consensus BAM and on hand-built records with
clips, indels, odd flags and tag types (``MI`` of every type), through either index and with a
CIGAR kept in ``CG``; and so the whole :class:`ObservationTable`.
"""

from __future__ import annotations

import shutil
from array import array
from dataclasses import fields
from pathlib import Path

import numpy as np
import pysam
import pytest

from precise_mrd.core.errors import InputDataError
from precise_mrd.core.records import Variant, merge_regions
from precise_mrd.core.simulate import SimulationParams
from precise_mrd.io.bam_regions import (
    IndexedRecordReader,
)
from precise_mrd.io.fasta import open_reference
from precise_mrd.io.vcf import read_variants
from precise_mrd.ml import features
from precise_mrd.ml.features import ObservationTable, extract_observations
from precise_mrd.pipeline.consensus import group_and_call_consensus
from precise_mrd.pipeline.params import PipelineParams
from precise_mrd.pipeline.run import consensus_params_from
from precise_mrd.pipeline.simulation import simulate_sample
from pysam_reference import features_through_pysam, read_feature_window

CONTIG_LENGTHS = (40_000, 5_000, 3_000)  # chr1 spans three 16 kb linear-index windows


def _reads_equal(fast: features._Reads | None, slow: features._Reads | None) -> None:
    """Same reads, or both without a confident base (the reference may give empty rows)."""
    if slow is not None and slow.pos.size == 0:
        slow = None
    assert (fast is None) == (slow is None)
    if fast is None or slow is None:
        return
    for field in fields(features._Reads):
        a, b = getattr(fast, field.name), getattr(slow, field.name)
        assert a.dtype == b.dtype, field.name
        np.testing.assert_array_equal(a, b, err_msg=field.name)


def _tables_equal(a: ObservationTable, b: ObservationTable) -> None:
    for field in fields(ObservationTable):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if x is None or y is None:
            assert x is None and y is None, field.name
            continue
        assert x.dtype == y.dtype and x.shape == y.shape, field.name
        np.testing.assert_array_equal(x, y, err_msg=field.name)


def _compare_regions(bam_path: Path, regions: list[tuple[str, int, int]], **thresholds: int) -> int:
    """Compare both readers over ``regions`` in the given order; the number with reads."""
    n_with_reads = 0
    reader = IndexedRecordReader.open(bam_path)
    assert reader is not None
    with pysam.AlignmentFile(str(bam_path), "rb") as bam, reader:
        for chrom, start, end in regions:
            args = (chrom, start, end, thresholds["bq"], thresholds["mapq"])
            fast = features._read_window(bam, reader, *args)
            _reads_equal(fast, read_feature_window(bam, *args))
            n_with_reads += fast is not None
    return n_with_reads


# --------------------------------------------------------------------------------------------
# simulated consensus sample (duplex and simplex molecules)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    out = tmp_path_factory.mktemp("ml-features-fast")
    params = SimulationParams.preset(
        "smoke", seed=11, tumor_fraction=0.05, artifact_rate=1e-3, molecules_per_locus=300
    )
    sim = simulate_sample(out, params)
    consensus = out / "consensus.bam"
    group_and_call_consensus(
        sim.bam_path, consensus, params=consensus_params_from(PipelineParams()), strategy="paired"
    )
    return consensus, sim.reference_path, sim.vcf_path


def test_simulated_sample_has_duplex_and_simplex_molecules(
    sample: tuple[Path, Path, Path],
) -> None:
    consensus, _, _ = sample
    with pysam.AlignmentFile(str(consensus), "rb") as bam:
        duplex = [r.has_tag("aD") and r.get_tag("bD") > 0 for r in bam]  # type: ignore[operator]
    assert any(duplex) and not all(duplex)


def test_reads_of_each_region_match_pysam(sample: tuple[Path, Path, Path]) -> None:
    consensus, reference, vcf = sample
    variants = read_variants(vcf, open_reference(reference))
    chrom = variants[0].chrom
    length = open_reference(reference).length(chrom)
    regions = merge_regions([(v.chrom, max(0, v.start0 - 100), v.pos + 100) for v in variants])
    # NB: after the variant regions, one far before them (the reader starts over) and the
    # contig's last base (no reads)
    regions += [(chrom, 0, 300), (chrom, length - 1, length)]
    for bq, mapq in ((30, 20), (0, 0), (60, 61)):
        n = _compare_regions(consensus, regions, bq=bq, mapq=mapq)
        assert n == (0 if mapq > 60 else len(regions) - 1)


def test_observation_table_matches_the_pysam_path(
    sample: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    consensus, reference, vcf = sample
    variants = read_variants(vcf, open_reference(reference))
    chrom = variants[0].chrom
    length = open_reference(reference).length(chrom)
    regions = [(v.chrom, max(0, v.start0 - 100), v.pos + 100) for v in variants]
    regions.append((chrom, length - 50, length))  # no reads there
    kwargs = {"regions": regions, "with_windows": True}
    fast = extract_observations(consensus, reference, variants, np.random.default_rng(4), **kwargs)
    features_through_pysam(monkeypatch)
    slow = extract_observations(consensus, reference, variants, np.random.default_rng(4), **kwargs)
    assert len(fast) > 1000 and fast.windows is not None
    assert {0, 1} <= set(fast.duplex.tolist())
    _tables_equal(fast, slow)


# --------------------------------------------------------------------------------------------
# hand-built records: clips, indels, skipped flags, missing and odd tags, several contigs
# --------------------------------------------------------------------------------------------

_CIGARS = (
    "60M",
    "5S55M",
    "50M10S",
    "3H20M4I36M",
    "30M12D30M",
    "25M400N35M",
    "10S20M2D15M1I14M",
    "60=",
    "20M3X37M",
    "4S40M2P16M",
)


def _random_record(
    header: pysam.AlignmentHeader, rng: np.random.Generator, i: int
) -> pysam.AlignedSegment:
    tid = int(rng.choice(len(CONTIG_LENGTHS), p=[0.8, 0.2, 0.0]))
    record = pysam.AlignedSegment(header)
    record.query_name = f"r{i}"
    cigar = str(rng.choice(_CIGARS))
    record.cigarstring = cigar
    n_query = sum(length for op, length in record.cigartuples or [] if op in (0, 1, 4, 7, 8))
    record.reference_id = tid
    record.reference_start = int(rng.integers(0, CONTIG_LENGTHS[tid] - 600))
    record.query_sequence = "".join(rng.choice(list("ACGTNNacgt"[:6]), size=n_query))
    record.query_qualities = pysam.qualitystring_to_array(
        "".join(chr(33 + int(q)) for q in rng.integers(2, 60, size=n_query))
    )
    record.flag = int(rng.choice([0x1 | 0x2 | 0x40 | 0x20, 0x1 | 0x80 | 0x10, 0x10, 0]))
    if rng.random() < 0.08:
        record.flag |= int(rng.choice([0x4, 0x100, 0x200, 0x800]))
    record.mapping_quality = int(rng.choice([0, 10, 20, 60, 60, 60]))
    record.template_length = int(rng.integers(-400, 400))
    molecule = int(rng.integers(0, 300))
    kind = rng.random()
    if kind < 0.6:
        record.set_tag("MI", str(molecule), value_type="Z")
    elif kind < 0.7:
        record.set_tag("MI", f"{molecule}/{'AB'[molecule % 2]}", value_type="Z")
    elif kind < 0.8:
        record.set_tag(
            "MI", molecule, value_type="C" if molecule < 256 and molecule % 2 == 0 else "i"
        )
    elif kind < 0.85:
        record.set_tag("MI", "AB"[molecule % 2], value_type="A")
    elif kind < 0.87:
        record.set_tag("MI", molecule / 4, value_type="f")
    elif kind < 0.89:
        record.set_tag("MI", array("i" if molecule % 2 else "B", [molecule % 256, 1]))
    elif kind < 0.9:
        record.set_tag("MI", f"{molecule:X}", value_type="H")  # 10 and 11 are A-typed "A", "B"
    if rng.random() < 0.9:
        record.set_tag("cD", int(rng.integers(1, 250)), value_type=str(rng.choice(["C", "S", "i"])))
    if rng.random() < 0.5:
        record.set_tag("aD", int(rng.integers(0, 5)), value_type="c")
        record.set_tag("bD", int(rng.integers(0, 5)), value_type="s")
    elif rng.random() < 0.3:
        record.set_tag("aD", int(rng.integers(1, 5)), value_type="I")
    if rng.random() < 0.7:
        record.set_tag("cE", float(rng.random() / 7), value_type="f")
    if rng.random() < 0.3:
        record.set_tag("RX", "ACGT-TTGA")
    return record


@pytest.fixture(scope="module")
def built_bam(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ml-features-built")
    header = pysam.AlignmentHeader.from_dict(
        {
            "HD": {"VN": "1.6", "SO": "coordinate"},
            "SQ": [{"SN": f"chr{i + 1}", "LN": n} for i, n in enumerate(CONTIG_LENGTHS)],
        }
    )
    rng = np.random.default_rng(2024)
    unsorted = out / "unsorted.bam"
    with pysam.AlignmentFile(str(unsorted), "wb", header=header) as bam:
        for i in range(6_000):
            bam.write(_random_record(header, rng, i))
        # no sequence / no qualities / no CIGAR: skipped by both readers
        for i, (cigar, sequence, has_quals) in enumerate(
            [("10M", "ACGTACGTAC", False), (None, "ACGT", True), ("5M5D5M", "ACGTACGTAC", True)]
        ):
            record = pysam.AlignedSegment(header)
            record.query_name, record.reference_id, record.reference_start = f"odd{i}", 0, 1000
            record.mapping_quality = 60
            if cigar is not None:
                record.cigarstring = cigar
            record.query_sequence = sequence
            if has_quals:
                record.query_qualities = pysam.qualitystring_to_array("I" * len(sequence))
            record.set_tag("MI", f"odd{i}")
            bam.write(record)
    path = out / "built.bam"
    pysam.sort("-o", str(path), str(unsorted))
    pysam.index(str(path))
    return path


def _built_regions() -> list[tuple[str, int, int]]:
    regions = [("chr1", s, s + 201) for s in range(0, 39_800, 700)]
    regions += [("chr1", 16_300, 16_500), ("chr1", 16_350, 16_360)]  # overlapping, ascending
    regions += [("chr1", 100, 40_000)]  # goes back: the reader starts over
    regions += [("chr2", 0, 5_000), ("chr2", 4_990, 5_000)]
    regions += [("chr3", 0, 3_000), ("chr1", 39_990, 40_000)]
    return regions


def test_built_records_match_pysam(built_bam: Path) -> None:
    for bq, mapq in ((30, 20), (0, 0), (13, 60)):
        n = _compare_regions(built_bam, _built_regions(), bq=bq, mapq=mapq)
        assert n > 50
    with (
        pysam.AlignmentFile(str(built_bam), "rb") as bam,
        IndexedRecordReader(built_bam, Path(f"{built_bam}.bai")) as reader,
    ):
        for read in (
            lambda: features._read_window(bam, reader, "chr9", 0, 100, 30, 20),
            lambda: read_feature_window(bam, "chr9", 0, 100, 30, 20),
        ):
            with pytest.raises(ValueError, match="invalid contig"):
                read()


def _variants_at(reference: Path, sites: list[tuple[str, int]]) -> list[Variant]:
    fasta = open_reference(reference)
    out = []
    for chrom, pos0 in sites:
        ref = fasta.fetch(chrom, pos0, pos0 + 1).upper()
        alt = "A" if ref != "A" else "C"
        out.append(Variant(chrom=chrom, pos=pos0 + 1, ref=ref, alt=alt))
    return out


def test_built_records_observation_table_matches_the_pysam_path(
    built_bam: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = tmp_path / "ref.fa"
    rng = np.random.default_rng(5)
    with open(reference, "w") as handle:
        for i, n in enumerate(CONTIG_LENGTHS):
            handle.write(f">chr{i + 1}\n{''.join(rng.choice(list('ACGT'), size=n))}\n")
    pysam.faidx(str(reference))
    variants = _variants_at(reference, [("chr1", 16_380), ("chr1", 20_000), ("chr2", 600)])
    regions = [("chr1", 0, 40_000), ("chr2", 0, 5_000), ("chr3", 0, 3_000)]
    kwargs = {"regions": regions, "with_windows": True, "min_base_quality": 20}
    fast = extract_observations(built_bam, reference, variants, np.random.default_rng(1), **kwargs)
    features_through_pysam(monkeypatch)
    slow = extract_observations(built_bam, reference, variants, np.random.default_rng(1), **kwargs)
    assert len(fast) > 100
    _tables_equal(fast, slow)


def test_a_numeric_tag_that_is_not_a_number_is_an_input_error(tmp_path: Path) -> None:
    header = {"HD": {"VN": "1.6", "SO": "coordinate"}, "SQ": [{"SN": "chr1", "LN": 1000}]}
    path = tmp_path / "text_tag.bam"
    with pysam.AlignmentFile(str(path), "wb", header=header) as bam:
        for i, (value, value_type) in enumerate([(3, "C"), ("5", "Z")]):
            record = pysam.AlignedSegment(bam.header)
            record.query_name, record.reference_id, record.reference_start = f"r{i}", 0, 10 + i
            record.cigarstring, record.query_sequence = "10M", "ACGTACGTAC"
            record.query_qualities = pysam.qualitystring_to_array("I" * 10)
            record.mapping_quality = 60
            record.set_tag("MI", str(i))
            record.set_tag("cD", value, value_type=value_type)
            bam.write(record)
    pysam.index(str(path))
    # NB: cD:Z:5 would be float("5") to pysam; a text family size is not read as one
    with (
        pysam.AlignmentFile(str(path), "rb") as bam,
        IndexedRecordReader(path, Path(f"{path}.bai")) as reader,
        pytest.raises(InputDataError, match="tag cD of type Z, where a number is expected"),
    ):
        features._read_window(bam, reader, "chr1", 0, 100, 30, 20)


def test_a_cigar_kept_in_the_cg_tag_is_read_as_htslib_reads_it(tmp_path: Path) -> None:
    header = {"HD": {"VN": "1.6", "SO": "coordinate"}, "SQ": [{"SN": "chr1", "LN": 100_000}]}
    path = tmp_path / "long.bam"
    with pysam.AlignmentFile(str(path), "wb", header=header) as bam:
        record = pysam.AlignedSegment(bam.header)
        record.query_name, record.reference_id, record.reference_start = "long", 0, 100
        record.cigartuples = [(0, 1), (1, 1)] * 35_000  # 70,000 operations: written to CG
        record.query_sequence = "AC" * 35_000
        record.query_qualities = pysam.qualitystring_to_array("I" * 70_000)
        record.mapping_quality = 60
        record.set_tag("MI", "1")
        bam.write(record)
    pysam.index(str(path))
    with (
        pysam.AlignmentFile(str(path), "rb") as bam,
        IndexedRecordReader(path, Path(f"{path}.bai")) as reader,
    ):
        raw = reader.region_records(0, 200, 400)
        assert raw.size > 0 and b"CG" in raw.tobytes()  # the placeholder CIGAR is on disk
        reads = features._read_window(bam, reader, "chr1", 200, 400, 30, 20)
        assert reads is not None and reads.pos.tolist() == list(range(200, 400))
        _reads_equal(reads, read_feature_window(bam, "chr1", 200, 400, 30, 20))


@pytest.mark.parametrize("min_shift", [14, 11])
def test_built_records_through_a_csi_index_match_pysam(
    built_bam: Path, tmp_path: Path, min_shift: int
) -> None:
    path = tmp_path / "csi.bam"
    shutil.copyfile(built_bam, path)
    pysam.index("-c", "-m", str(min_shift), str(path))
    assert Path(f"{path}.csi").is_file() and not Path(f"{path}.bai").is_file()
    assert _compare_regions(path, _built_regions(), bq=30, mapq=20) > 50


def test_without_an_index_there_is_no_reader(tmp_path: Path) -> None:
    path = tmp_path / "x.bam"
    path.write_bytes(b"")
    assert IndexedRecordReader.open(path) is None


def _molecule_rows_by_dict(reads: features._Reads) -> list[int]:
    """One row per (molecule, position) in that order: the first, unless a base disagrees."""
    groups: dict[tuple[int, int], list[int]] = {}
    for row, (read, pos) in enumerate(zip(reads.read.tolist(), reads.pos.tolist(), strict=True)):
        groups.setdefault((int(reads.mol[read]), pos), []).append(row)
    return [
        rows[0]
        for _, rows in sorted(groups.items())
        if all(reads.base[r] == reads.base[rows[0]] for r in rows)
    ]


def test_molecule_rows_keep_the_first_concordant_row(sample: tuple[Path, Path, Path]) -> None:
    consensus, reference, vcf = sample
    variant = read_variants(vcf, open_reference(reference))[0]
    with pysam.AlignmentFile(str(consensus), "rb") as bam:
        real = read_feature_window(
            bam, variant.chrom, variant.start0 - 100, variant.pos + 100, 30, 20
        )
    assert real is not None
    rng = np.random.default_rng(8)
    n_rows, n_reads = 5_000, 400
    read = np.sort(rng.integers(0, n_reads, size=n_rows))
    synthetic = features._Reads(
        pos=rng.integers(1_000, 1_040, size=n_rows),
        base=rng.choice(4, size=n_rows, p=[0.85, 0.05, 0.05, 0.05]),
        qual=np.full(n_rows, 30),
        dist=np.zeros(n_rows, dtype=np.int64),
        read=read,
        mol=rng.integers(0, 150, size=n_reads),
        family_size=np.ones(n_reads),
        min_strand=np.zeros(n_reads),
        duplex=np.zeros(n_reads, dtype=np.int64),
        error_rate=np.zeros(n_reads),
        mapq=np.full(n_reads, 60.0),
        fragment=np.full(n_reads, 150.0),
        template=np.zeros(n_reads, dtype=np.int64),
        strand=np.zeros(n_reads, dtype=np.int64),
        both=np.zeros(n_reads, dtype=np.int64),
    )
    for reads in (real, synthetic):
        expected = _molecule_rows_by_dict(reads)
        assert features._molecule_rows(reads).tolist() == expected
    # the synthetic molecules disagree often: some positions must have been dropped
    assert len(_molecule_rows_by_dict(synthetic)) < len(
        {
            (m, p)
            for m, p in zip(
                synthetic.mol[synthetic.read].tolist(), synthetic.pos.tolist(), strict=True
            )
        }
    )
