"""collect_evidence on small hand-built consensus BAMs (seeded builders, no checked-in files)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pysam
import pytest

from precise_mrd.core.background import BackgroundModel, context_index, sbs96_index
from precise_mrd.core.calling import CallingParams, call_sample
from precise_mrd.core.errors import InputDataError, InputFileError
from precise_mrd.core.records import Variant
from precise_mrd.pipeline.evidence import collect_evidence

READ_LEN = 100


@dataclass
class Read:
    mi: str
    start: int  # 0-based
    read1: bool
    reverse: bool
    edits: dict[int, str]  # reference position (0-based) -> base
    low_quality: tuple[int, ...] = ()
    duplex: bool = False
    mapq: int = 60


def write_reference(path: Path, rng: np.random.Generator, length: int = 2000) -> str:
    seq = "".join(rng.choice(list("ACGT"), size=length))
    path.write_text(">chr1\n" + "\n".join(seq[i : i + 60] for i in range(0, length, 60)) + "\n")
    pysam.faidx(str(path))
    return seq


def write_bam(path: Path, reference: str, reads: list[Read]) -> None:
    header = {"HD": {"VN": "1.6", "SO": "coordinate"}, "SQ": [{"SN": "chr1", "LN": len(reference)}]}
    unsorted = path.with_suffix(".unsorted.bam")
    with pysam.AlignmentFile(str(unsorted), "wb", header=header) as out:
        for r in reads:
            seg = pysam.AlignedSegment(out.header)
            seg.query_name = f"m{r.mi}"
            bases = list(reference[r.start : r.start + READ_LEN])
            for pos, base in r.edits.items():
                if r.start <= pos < r.start + READ_LEN:
                    bases[pos - r.start] = base
            seg.query_sequence = "".join(bases)
            quals = [40] * READ_LEN
            for pos in r.low_quality:
                quals[pos - r.start] = 10
            for i, b in enumerate(bases):
                if b == "N":
                    quals[i] = 2
            seg.query_qualities = pysam.qualitystring_to_array("".join(chr(q + 33) for q in quals))
            seg.flag = 1 | 2 | (64 if r.read1 else 128) | (16 if r.reverse else 0)
            seg.flag |= 32 if not r.reverse else 0
            seg.reference_id = 0
            seg.reference_start = r.start
            seg.mapping_quality = r.mapq
            seg.cigartuples = [(0, READ_LEN)]
            seg.next_reference_id = 0
            seg.next_reference_start = r.start
            seg.set_tag("MI", r.mi)
            seg.set_tag("cD", 4)
            if r.duplex:
                seg.set_tag("aD", 2)
                seg.set_tag("bD", 2)
            else:
                seg.set_tag("aD", 4)
                seg.set_tag("bD", 0)
            out.write(seg)
    pysam.sort("-o", str(path), str(unsorted))
    pysam.index(str(path))


@pytest.fixture
def sample(tmp_path: Path) -> tuple[Path, Path, str, Variant]:
    rng = np.random.default_rng(7)
    ref_path = tmp_path / "ref.fa"
    reference = write_reference(ref_path, rng)
    pos0 = 1000
    ref = reference[pos0]
    alt = "ACGT"[("ACGT".index(ref) + 1) % 4]
    other = "ACGT"[("ACGT".index(ref) + 2) % 4]

    def mismatch(p: int) -> str:
        return "ACGT"[("ACGT".index(reference[p]) + 1) % 4]

    reads = [
        # molecule 1: simplex, alt on both overlapping mates -> one alt molecule;
        # plus a background error at 1030 in the overlap (counted once) and one at 1003
        # (inside the exclusion window, never counted)
        Read("1", 950, True, False, {pos0: alt, 1030: mismatch(1030), 1003: mismatch(1003)}),
        Read("1", 980, False, True, {pos0: alt, 1030: mismatch(1030), 1003: mismatch(1003)}),
        # molecule 2: duplex, ref at the variant (only read 2 covers it)
        Read("2", 900, True, False, {}, duplex=True),
        Read("2", 990, False, True, {}, duplex=True),
        # molecule 3: duplex alt
        Read("3", 960, True, False, {pos0: alt}, duplex=True),
        # molecule 4: low base quality alt -> not informative
        Read("4", 970, True, True, {pos0: alt}, low_quality=(pos0,)),
        # molecule 5: N at the variant; molecule 6: third allele (not informative)
        Read("5", 975, True, False, {pos0: "N"}),
        Read("6", 976, True, False, {pos0: other}),
        # molecule 7: low mapping quality
        Read("7", 978, True, False, {pos0: alt}, mapq=5),
        # molecule 8: mates disagree at 1040 -> dropped there only
        Read("8", 1001, True, False, {1040: mismatch(1040)}),
        Read("8", 1010, False, True, {}),
    ]
    bam_path = tmp_path / "consensus.bam"
    write_bam(bam_path, reference, reads)
    return bam_path, ref_path, reference, Variant("chr1", pos0 + 1, ref, alt)


def test_variant_counts_dedup_duplex_and_filters(sample: tuple[Path, Path, str, Variant]) -> None:
    bam_path, ref_path, reference, variant = sample
    evidence = collect_evidence(bam_path, ref_path, [variant])
    (vc,) = evidence.variants
    assert vc.ref_context == reference[999:1002]
    assert (vc.n_simplex, vc.alt_simplex) == (1, 1)  # molecule 1 once; 4, 5, 6 not informative
    assert (vc.n_duplex, vc.alt_duplex) == (2, 1)  # molecules 2 (ref) and 3 (alt)
    assert vc.n_low_mapq == 1
    assert (evidence.n_records, evidence.n_records_skipped) == (11, 0)
    assert vc.alt_forward + vc.alt_reverse == 2
    # molecule 1: read 1 forward; molecule 3: read 1 forward -> both template orientation 0
    assert vc.alt_forward == 2
    assert sorted(vc.alt_read_end_distances) == [40, 49]  # min(40, 59) and min(50, 49)


def test_background_counts_molecules_and_excludes_tracked_window(
    sample: tuple[Path, Path, str, Variant],
) -> None:
    bam_path, ref_path, reference, variant = sample
    evidence = collect_evidence(bam_path, ref_path, [variant], variant_exclusion_window=5)
    bg = evidence.background
    # exactly one background error: molecule 1 at 1030 (once, though both mates carry it);
    # 1003 is within the exclusion window, molecule 8's conflicting base is dropped
    assert int(bg.errors.sum()) == 1
    cls = sbs96_index(reference[1029:1032], "ACGT"[("ACGT".index(reference[1030]) + 1) % 4])
    assert int(bg.errors[0, :, cls].sum()) == 1
    # opportunities: independent slow count of (molecule, position) pairs
    covered: dict[int, set[int]] = {}
    spans = {
        1: [(950, 1050), (980, 1080)],
        2: [(900, 1000), (990, 1090)],
        3: [(960, 1060)],
        4: [(970, 1070)],
        5: [(975, 1075)],
        6: [(976, 1076)],
        8: [(1001, 1101), (1010, 1110)],
    }
    for mol, ranges in spans.items():
        covered[mol] = {p for s, e in ranges for p in range(s, e)}
    covered[4].discard(1000)
    covered[5].discard(1000)
    covered[8].discard(1040)  # mates disagree
    duplex = {2, 3}
    expected = np.zeros((2, 32), dtype=np.int64)
    for mol, positions in covered.items():
        for p in positions:
            if not 900 <= p < 1101 or abs(p - 1000) <= 5:
                continue
            expected[int(mol in duplex), context_index(reference[p - 1 : p + 2])[0]] += 1
    assert np.array_equal(bg.opportunities.sum(axis=1), expected)
    assert int(bg.position_opportunities.sum()) == int(expected.sum())
    assert int(bg.position_errors.sum()) == 1
    # the tracked position never enters the per-position background
    assert bg.position_context.size == 201 - 11


def test_strand_orientation_of_mates_agrees(sample: tuple[Path, Path, str, Variant]) -> None:
    bam_path, ref_path, reference, variant = sample
    bg = collect_evidence(bam_path, ref_path, [variant]).background
    # molecule 1 (read 1 forward, read 2 reverse: template orientation 0 for both mates) has one
    # error at 1030; its orientation is 0 when the pyrimidine reference is on the + strand
    expected = 0 if reference[1030] in "CT" else 1
    per_orientation = bg.errors.sum(axis=(0, 2))
    assert per_orientation[expected] == 1 and per_orientation[1 - expected] == 0


def test_evidence_feeds_the_caller(sample: tuple[Path, Path, str, Variant]) -> None:
    bam_path, ref_path, _, variant = sample
    evidence = collect_evidence(bam_path, ref_path, [variant])
    model = BackgroundModel.fit(evidence.background)
    call, table = call_sample(
        evidence.variants, model, CallingParams(n_bootstrap=200), np.random.default_rng(0)
    )
    assert call.decision == "undetermined"  # 3 informative molecules
    assert call.qc["informative_molecules"]["passed"] is False
    assert table.rows[0].alt_simplex == 1 and table.rows[0].alt_duplex == 1


def test_ref_mismatch_and_missing_files(
    sample: tuple[Path, Path, str, Variant], tmp_path: Path
) -> None:
    bam_path, ref_path, _, variant = sample
    wrong = Variant("chr1", variant.pos, variant.alt, variant.ref)
    with pytest.raises(InputDataError, match="REF"):
        collect_evidence(bam_path, ref_path, [wrong])
    with pytest.raises(InputFileError, match="not found"):
        collect_evidence(tmp_path / "missing.bam", ref_path, [variant])
