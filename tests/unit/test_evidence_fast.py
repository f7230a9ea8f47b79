"""The evidence stage read from raw BAM records agrees exactly with the pysam reference reader.

``evidence._read_window`` decodes the records of a window found through the ``.bai`` or ``.csi``
(:class:`~precise_mrd.io.bam_regions.IndexedRecordReader`, ``decode_aligned_bases``,
``decode_record_status``); :func:`pysam_reference.read_evidence_window` is the reference (one
pysam object per read). ``collect_evidence`` must give the same :class:`Evidence`, field for
field, either way: on a simulated consensus sample and on hand-built molecules with clips, indels,
low mapping quality, missing ``MI``, odd flags and tag types, with reads spanning window
boundaries; and on what htslib reads specially (a CIGAR kept in ``CG``, ``MI`` of any type).
"""

from __future__ import annotations

import shutil
from array import array
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import pysam
import pytest

from precise_mrd.core.calling import Evidence
from precise_mrd.core.errors import InputDataError, InputFileError
from precise_mrd.core.records import Variant
from precise_mrd.core.simulate import SimulationParams
from precise_mrd.io.bam_regions import (
    RECORD_LOW_MAPQ,
    RECORD_NO_DATA,
    RECORD_NO_KEY,
    RECORD_USED,
    IndexedRecordReader,
    decode_record_status,
)
from precise_mrd.io.fasta import open_reference
from precise_mrd.io.vcf import read_variants
from precise_mrd.pipeline import evidence
from precise_mrd.pipeline.consensus import group_and_call_consensus
from precise_mrd.pipeline.evidence import collect_evidence
from precise_mrd.pipeline.params import PipelineParams
from precise_mrd.pipeline.run import consensus_params_from
from precise_mrd.pipeline.simulation import simulate_sample
from pysam_reference import evidence_through_pysam

CONTIG_LENGTHS = (40_000, 5_000, 3_000)  # chr1 spans several 5 kb windows and 16 kb bins
SKIP_FLAGS = 0x4 | 0x100 | 0x200 | 0x800


def _assert_same_evidence(fast: Evidence, slow: Evidence) -> None:
    assert fast.n_records == slow.n_records
    assert fast.n_records_skipped == slow.n_records_skipped
    assert len(fast.variants) == len(slow.variants)
    for a, b in zip(fast.variants, slow.variants, strict=True):
        assert a == b, a.variant.key
    for field in fields(fast.background):
        x, y = getattr(fast.background, field.name), getattr(slow.background, field.name)
        assert x.dtype == y.dtype and x.shape == y.shape, field.name
        np.testing.assert_array_equal(x, y, err_msg=field.name)


def _both_ways(
    monkeypatch: pytest.MonkeyPatch, *args: Any, **kwargs: Any
) -> tuple[Evidence, Evidence]:
    """``collect_evidence`` through the raw reader and through the pysam reference."""
    fast = collect_evidence(*args, **kwargs)
    with monkeypatch.context() as patch:
        evidence_through_pysam(patch)
        slow = collect_evidence(*args, **kwargs)
    return fast, slow


# --------------------------------------------------------------------------------------------
# simulated consensus sample (duplex and simplex molecules)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[Variant]]:
    out = tmp_path_factory.mktemp("evidence-fast")
    params = SimulationParams.preset(
        "smoke", seed=11, tumor_fraction=0.05, artifact_rate=1e-3, molecules_per_locus=300
    )
    sim = simulate_sample(out, params)
    consensus = out / "consensus.bam"
    group_and_call_consensus(
        sim.bam_path, consensus, params=consensus_params_from(PipelineParams()), strategy="paired"
    )
    variants = read_variants(sim.vcf_path, open_reference(sim.reference_path))
    return consensus, sim.reference_path, variants


@pytest.mark.parametrize("window", [5_000, 57])
def test_simulated_sample_evidence_matches_the_pysam_path(
    sample: tuple[Path, Path, list[Variant]], monkeypatch: pytest.MonkeyPatch, window: int
) -> None:
    consensus, reference, variants = sample
    # NB: with 57 bp windows every read spans window boundaries (counted once, in its first)
    monkeypatch.setattr(evidence, "_WINDOW", window)
    fast, slow = _both_ways(monkeypatch, consensus, reference, variants)
    _assert_same_evidence(fast, slow)
    assert sum(v.informative for v in fast.variants) > 1000
    assert sum(v.alt for v in fast.variants) > 0
    assert fast.background.opportunities.sum() > 10_000
    duplex = [v.n_duplex for v in fast.variants]
    assert any(duplex) and sum(v.n_simplex for v in fast.variants) > 0


def test_simulated_sample_with_other_thresholds_and_regions(
    sample: tuple[Path, Path, list[Variant]], monkeypatch: pytest.MonkeyPatch
) -> None:
    consensus, reference, variants = sample
    chrom = variants[0].chrom
    starts = sorted(v.start0 for v in variants)
    # one long region over half the variants (several windows); the rest outside every region
    regions = [(chrom, starts[0] - 300, starts[len(starts) // 2] + 1)]
    monkeypatch.setattr(evidence, "_WINDOW", 1_000)
    fast, slow = _both_ways(
        monkeypatch,
        consensus,
        reference,
        variants,
        regions=regions,
        min_base_quality=0,
        min_mapping_quality=61,  # every record is lost to mapping quality
    )
    _assert_same_evidence(fast, slow)
    assert sum(v.n_low_mapq for v in fast.variants) > 1000
    assert sum(v.informative for v in fast.variants) == 0


# --------------------------------------------------------------------------------------------
# hand-built molecules: clips, indels, low mapping quality, missing MI, odd flags and tags
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


def _reference_sequences(rng: np.random.Generator) -> list[str]:
    return ["".join(rng.choice(list("ACGT"), size=n)) for n in CONTIG_LENGTHS]


def _set_mi(record: pysam.AlignedSegment, molecule: int, kind: float) -> None:
    if kind < 0.6:
        record.set_tag("MI", str(molecule), value_type="Z")
    elif kind < 0.7:
        record.set_tag("MI", f"{molecule}/{'AB'[molecule % 2]}", value_type="Z")
    elif kind < 0.8:
        record.set_tag("MI", molecule, value_type="C" if molecule < 256 else "i")
    elif kind < 0.85:
        record.set_tag("MI", "AB"[molecule % 2], value_type="A")
    elif kind < 0.87:
        record.set_tag("MI", molecule + 0.5, value_type="f")
    elif kind < 0.89:
        record.set_tag("MI", array("I" if molecule % 2 else "h", [molecule, 7]))
    elif kind < 0.9:
        record.set_tag("MI", f"{molecule:X}", value_type="H")  # 10 and 11 are A-typed "A", "B"
    # else: no MI


def _mate(
    header: pysam.AlignmentHeader,
    rng: np.random.Generator,
    sequence: str,
    tid: int,
    start: int,
    name: str,
) -> pysam.AlignedSegment:
    record = pysam.AlignedSegment(header)
    record.query_name = name
    record.cigarstring = str(rng.choice(_CIGARS))
    record.reference_id, record.reference_start = tid, start
    query: list[str] = []
    r = start
    for op, length in record.cigartuples or []:
        if op in (0, 7, 8):
            query += list(sequence[r : r + length])
        elif op in (1, 4):
            query += list(rng.choice(list("ACGT"), size=length))
        if op in (0, 2, 3, 7, 8):
            r += length
    for i in np.flatnonzero(rng.random(len(query)) < 0.02):
        query[i] = str(rng.choice(list("ACGTN")))
    record.query_sequence = "".join(query)
    record.query_qualities = pysam.qualitystring_to_array(
        "".join(chr(33 + int(q)) for q in rng.choice([2, 12, 25, 30, 37, 41], size=len(query)))
    )
    return record


def _molecule(
    header: pysam.AlignmentHeader,
    rng: np.random.Generator,
    references: list[str],
    molecule: int,
) -> list[pysam.AlignedSegment]:
    """Read 1 and read 2 of one molecule (the mates overlap on short fragments)."""
    tid = int(rng.choice(len(CONTIG_LENGTHS), p=[0.85, 0.15, 0.0]))
    start = int(rng.integers(0, CONTIG_LENGTHS[tid] - 1_000))
    second = start + int(rng.integers(0, 120))
    # a shared variant base on both mates, sometimes a discordant one
    sequence = list(references[tid])
    for pos in rng.integers(start, second + 60, size=2):
        sequence[pos] = str(rng.choice(list("ACGT")))
    text = "".join(sequence)
    reverse = bool(rng.random() < 0.5)
    mi_kind = float(rng.random())
    mapq = int(rng.choice([0, 10, 20, 60, 60, 60]))
    duplex_tags = rng.random()
    records = []
    for is_read1, pos in ((True, start), (False, second)):
        record = _mate(header, rng, text, tid, pos, f"m{molecule}")
        record.flag = 0x1 | 0x2 | (0x40 if is_read1 else 0x80)
        record.flag |= 0x10 if reverse == is_read1 else 0x20
        if rng.random() < 0.05:
            record.flag |= int(rng.choice([0x4, 0x100, 0x200, 0x800]))
        # mates mostly share the mapping quality; sometimes one mate alone is too low
        record.mapping_quality = mapq if rng.random() < 0.9 else int(rng.choice([0, 60]))
        record.next_reference_id, record.next_reference_start = tid, start
        record.template_length = second + 60 - start
        _set_mi(record, molecule, mi_kind)
        if duplex_tags < 0.4:
            record.set_tag("aD", int(rng.integers(0, 4)), value_type="c")
            record.set_tag("bD", int(rng.integers(0, 4)), value_type="s")
        elif duplex_tags < 0.5:
            record.set_tag("aD", float(rng.integers(0, 3)), value_type="f")
            record.set_tag("bD", int(rng.integers(1, 4)), value_type="I")
        elif duplex_tags < 0.6:
            record.set_tag("bD", 3, value_type="C")  # aD missing: simplex
        records.append(record)
    return records


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("evidence-built")
    rng = np.random.default_rng(77)
    references = _reference_sequences(rng)
    reference = out / "ref.fa"
    reference.write_text(
        "".join(f">chr{i + 1}\n{seq}\n" for i, seq in enumerate(references)), encoding="ascii"
    )
    pysam.faidx(str(reference))
    header = pysam.AlignmentHeader.from_dict(
        {
            "HD": {"VN": "1.6", "SO": "coordinate"},
            "SQ": [{"SN": f"chr{i + 1}", "LN": n} for i, n in enumerate(CONTIG_LENGTHS)],
        }
    )
    unsorted = out / "unsorted.bam"
    with pysam.AlignmentFile(str(unsorted), "wb", header=header) as bam:
        for molecule in range(3_000):
            for record in _molecule(header, rng, references, molecule):
                bam.write(record)
        # no qualities / no CIGAR / no sequence / low MAPQ without CIGAR, across 5000
        for i, (cigar, sequence, has_quals, mapq) in enumerate(
            [
                ("10M", "ACGTACGTAC", False, 60),
                (None, "ACGT", True, 60),
                ("5M", None, False, 60),
                (None, "ACGT", True, 3),
                ("8M", "ACGTACGT", True, 60),
            ]
        ):
            record = pysam.AlignedSegment(header)
            record.query_name, record.reference_id, record.reference_start = f"odd{i}", 0, 4_996
            record.mapping_quality = mapq
            if cigar is not None:
                record.cigarstring = cigar
            if sequence is not None:
                record.query_sequence = sequence
            if has_quals and sequence is not None:
                record.query_qualities = pysam.qualitystring_to_array("I" * len(sequence))
            if i < 4:
                record.set_tag("MI", f"odd{i}")
            bam.write(record)
    path = out / "built.bam"
    pysam.sort("-o", str(path), str(unsorted))
    pysam.index(str(path))
    return path, reference


def _tracked(reference: Path, sites: list[tuple[str, int]]) -> list[Variant]:
    fasta = open_reference(reference)
    out = []
    for chrom, pos0 in sites:
        ref = fasta.fetch(chrom, pos0, pos0 + 1).upper()
        out.append(Variant(chrom=chrom, pos=pos0 + 1, ref=ref, alt="A" if ref != "A" else "C"))
    return out


_SITES = [
    ("chr1", 1_000),
    ("chr1", 4_999),
    ("chr1", 5_000),
    ("chr1", 5_001),
    ("chr1", 9_999),
    ("chr1", 16_384),
    ("chr1", 22_222),
    ("chr1", 38_000),
    ("chr2", 600),
    ("chr2", 4_000),
]


@pytest.mark.parametrize("window", [5_000, 333])
@pytest.mark.parametrize(("min_base_quality", "min_mapping_quality"), [(30, 20), (0, 0), (13, 60)])
def test_built_molecules_whole_contigs_match_the_pysam_path(
    built: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    window: int,
    min_base_quality: int,
    min_mapping_quality: int,
) -> None:
    bam, reference = built
    variants = _tracked(reference, _SITES)
    monkeypatch.setattr(evidence, "_WINDOW", window)
    regions = [("chr1", 0, 40_000), ("chr2", 0, 5_000), ("chr3", 0, 3_000)]
    fast, slow = _both_ways(
        monkeypatch,
        bam,
        reference,
        variants,
        regions=regions,
        min_base_quality=min_base_quality,
        min_mapping_quality=min_mapping_quality,
    )
    _assert_same_evidence(fast, slow)
    assert fast.n_records > 5_000 and fast.n_records_skipped > 500  # reads without MI
    assert sum(v.informative for v in fast.variants) > 5
    if min_mapping_quality > 0:
        assert sum(v.n_low_mapq for v in fast.variants) > 0


def test_built_molecules_flanks_and_unordered_regions_match_the_pysam_path(
    built: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    bam, reference = built
    variants = _tracked(reference, _SITES)
    # overlapping and descending regions, one past a contig end; variants outside all regions
    regions = [
        ("chr1", 30_000, 39_000),
        ("chr1", 4_900, 5_100),
        ("chr1", 5_050, 5_200),
        ("chr2", 3_990, 9_000),
        ("chr9", 0, 100),
    ]
    for kwargs in ({"flank": 40}, {"regions": regions}):
        fast, slow = _both_ways(monkeypatch, bam, reference, variants, **kwargs)
        _assert_same_evidence(fast, slow)
        assert fast.n_records > 100


def _status_by_pysam(
    bam: pysam.AlignmentFile, chrom: str, start: int, end: int, min_mapping_quality: int
) -> list[tuple[int, int, int, str]]:
    out = []
    for read in bam.fetch(chrom, start, end):
        if read.flag & SKIP_FLAGS:
            continue
        mi = str(read.get_tag("MI")) if read.has_tag("MI") else ""
        if not read.has_tag("MI"):
            status = RECORD_NO_KEY
        elif read.mapping_quality < min_mapping_quality:
            status = RECORD_LOW_MAPQ
        elif read.query_sequence is None or not read.query_qualities_str or not read.cigartuples:
            status = RECORD_NO_DATA
        else:
            status = RECORD_USED
        out.append((status, read.reference_start, read.reference_end or 0, mi))
    return out


def test_record_status_matches_pysam(built: tuple[Path, Path]) -> None:
    bam_path, _ = built
    regions = [("chr1", s, s + 451) for s in range(0, 39_500, 1_300)]
    regions += [("chr1", 4_990, 5_010), ("chr1", 100, 40_000), ("chr2", 0, 5_000)]
    regions += [("chr3", 0, 3_000)]
    seen: set[int] = set()
    reader = IndexedRecordReader.open(bam_path)
    assert reader is not None
    with pysam.AlignmentFile(str(bam_path), "rb") as bam, reader:
        for chrom, start, end in regions:
            tid = bam.get_tid(chrom)
            status = decode_record_status(
                reader.region_records(tid, start, end),
                tid=tid,
                start=start,
                end=end,
                skip_flags=SKIP_FLAGS,
                min_mapping_quality=20,
                key_tag=b"MI",
            )
            assert status is not None
            got = [
                (int(s), int(a), int(b), bytes(text[:n]).decode())
                for s, a, b, text, n in zip(
                    status.status,
                    status.starts,
                    status.ends,
                    status.key_text,
                    status.key_lengths,
                    strict=True,
                )
            ]
            assert got == _status_by_pysam(bam, chrom, start, end, 20)
            seen |= {g[0] for g in got}
    assert seen == {RECORD_USED, RECORD_NO_KEY, RECORD_LOW_MAPQ, RECORD_NO_DATA}


# what htslib reads specially: a CIGAR kept in CG, MI of any type, a .csi index
# --------------------------------------------------------------------------------------------


def _single_contig_bam(path: Path, reference: str, records: list[dict[str, Any]]) -> None:
    """Records on ``chr1`` (``reference``) that match it, with an insertion or clip of ``A``s."""
    header = {"HD": {"VN": "1.6", "SO": "coordinate"}, "SQ": [{"SN": "chr1", "LN": 100_000}]}
    with pysam.AlignmentFile(str(path), "wb", header=header) as bam:
        for i, spec in enumerate(records):
            record = pysam.AlignedSegment(bam.header)
            record.query_name, record.reference_id = f"r{i}", 0
            record.reference_start = r = spec["start"]
            record.cigartuples = spec.get("cigar", [(0, 40)])
            query: list[str] = []
            for op, length in record.cigartuples:
                query.append(
                    reference[r : r + length] if op == 0 else "A" * length * (op in (1, 4))
                )
                r += length if op in (0, 2, 3) else 0
            record.query_sequence = "".join(query)
            n = len(record.query_sequence)
            record.query_qualities = pysam.qualitystring_to_array("I" * n)
            record.mapping_quality = spec.get("mapq", 60)
            mi, mi_type = spec.get("mi", (str(i), "Z"))
            record.set_tag("MI", mi, value_type=mi_type)
            for name, value, value_type in spec.get("tags", []):
                record.set_tag(name, value, value_type=value_type)
            bam.write(record)
    pysam.index(str(path))


def _reference_of(path: Path) -> tuple[Path, str]:
    rng = np.random.default_rng(3)
    sequence = "".join(rng.choice(list("ACGT"), size=100_000))
    path.write_text(f">chr1\n{sequence}\n")
    pysam.faidx(str(path))
    return path, sequence


@pytest.mark.parametrize(
    ("records", "n_informative"),
    [
        # float MIs: one molecule of two reads, and the same MI on a low-MAPQ record
        (
            [
                {"start": 100, "mi": (1.5, "f")},
                {"start": 110, "mi": (1.5, "f")},
                {"start": 115, "mi": (2.5, "f")},
                {"start": 120, "mapq": 5, "mi": (1.5, "f")},
            ],
            2,
        ),
        # array and hex MIs (str of pysam's value: "array('i', [1, 2])", "1AE3")
        (
            [
                {"start": 100, "mi": (array("i", [1, 2]), None)},
                {"start": 105, "mi": (array("i", [1, 2]), None)},
                {"start": 108, "mi": (array("B", [1, 2]), None)},
                {"start": 110, "mi": ("1AE3", "H")},
                {"start": 112, "mi": ("1AE3", "Z")},
                {"start": 114, "mapq": 5, "mi": (array("f", [0.5]), None)},
            ],
            3,
        ),
        # a CIGAR with 70,000 operations, kept in the CG tag; a look-alike without CG
        (
            [
                {"start": 100, "cigar": [(0, 1), (1, 1)] * 35_000},
                {"start": 120},
                {"start": 125, "cigar": [(4, 40), (3, 40)]},
            ],
            2,
        ),
    ],
    ids=["float-mi", "array-and-hex-mi", "cg-cigar"],
)
def test_records_htslib_reads_specially_match_the_pysam_path(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    records: list[dict[str, Any]],
    n_informative: int,
) -> None:
    bam = tmp_path / "odd.bam"
    reference, sequence = _reference_of(tmp_path / "ref.fa")
    _single_contig_bam(bam, sequence, records)
    variants = _tracked(reference, [("chr1", 130)])
    fast, slow = _both_ways(monkeypatch, bam, reference, variants, min_base_quality=0)
    _assert_same_evidence(fast, slow)
    assert fast.n_records == len(records)
    # NB: every read matches the reference: one informative molecule per distinct MI there
    assert fast.variants[0].informative == n_informative
    assert fast.variants[0].n_low_mapq == sum(spec.get("mapq", 60) < 20 for spec in records)


def test_a_numeric_tag_that_is_not_a_number_is_an_input_error(tmp_path: Path) -> None:
    bam = tmp_path / "text_tag.bam"
    reference, sequence = _reference_of(tmp_path / "ref.fa")
    _single_contig_bam(bam, sequence, [{"start": 100}, {"start": 110, "tags": [("aD", "3", "Z")]}])
    variants = _tracked(reference, [("chr1", 130)])
    with pytest.raises(InputDataError, match="tag aD of type Z, where a number is expected"):
        collect_evidence(bam, reference, variants)


@pytest.mark.parametrize("min_shift", [14, 12])
def test_built_molecules_through_a_csi_index_match_the_pysam_path(
    built: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, min_shift: int
) -> None:
    source, reference = built
    bam = tmp_path / "csi.bam"
    shutil.copyfile(source, bam)
    pysam.index("-c", "-m", str(min_shift), str(bam))
    assert Path(f"{bam}.csi").is_file() and not Path(f"{bam}.bai").is_file()
    variants = _tracked(reference, _SITES)
    monkeypatch.setattr(evidence, "_WINDOW", 333)
    regions = [
        ("chr1", 0, 40_000),
        ("chr2", 0, 5_000),
        ("chr3", 0, 3_000),
        ("chr1", 16_000, 17_000),
    ]
    fast, slow = _both_ways(monkeypatch, bam, reference, variants, regions=regions)
    _assert_same_evidence(fast, slow)
    assert fast.n_records > 5_000


def test_a_bam_whose_index_is_not_next_to_it_is_an_input_error(
    built: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bam, reference = built
    monkeypatch.setattr(IndexedRecordReader, "open", classmethod(lambda cls, path: None))
    with pytest.raises(InputFileError, match=r"has no \.bai or \.csi index"):
        collect_evidence(bam, reference, _tracked(reference, _SITES))
