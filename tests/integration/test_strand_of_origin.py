"""The strand of origin of each consensus molecule reaches the evidence stage and the filters.

A duplex-grouped consensus record carries ``sO`` (1: seen on its top strand ``/A`` only, 2: its
bottom strand ``/B`` only, 3: both). Its R1 is always oriented as the top strand's R1, so its
flags cannot tell the strands apart: before ``sO`` every molecule counted as "forward" and the
strand-bias filter could not fire. Here, at one locus, damage confined to the bottom strand (an
alt base in bottom-strand-only molecules) is flagged ``strand_bias``, and at another a real
mutation, seen in top-only, bottom-only and duplex molecules alike, is not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pysam
import pytest

from precise_mrd.core.calling import CallingParams, _variant_filters
from precise_mrd.core.consensus import ConsensusParams
from precise_mrd.core.records import Variant
from precise_mrd.pipeline.consensus import call_consensus_bam
from precise_mrd.pipeline.evidence import collect_evidence

CONTIG_LENGTH = 3000
READ = 60
LOCI = {"damage": 700, "real": 2000}  # 0-based fragment starts; the variant is 30 bases in


def _molecules(rng: np.random.Generator) -> list[tuple[str, int, str, bool]]:
    """(MI root, fragment start, strands "A"/"B"/"AB", carries the alt) per molecule."""
    out = []
    for locus, start in LOCI.items():
        for k in range(60):
            strands = ("A", "B", "AB")[k % 3]
            # damage: 12 bottom-strand-only molecules; real: 4 top-only, 4 bottom-only, 4 duplex
            alt = (strands == "B" and k < 36) if locus == "damage" else k < 12
            out.append((f"{locus}{k}", start + int(rng.integers(0, 3)), strands, alt))
    return out


def _write_inputs(directory: Path) -> tuple[Path, Path, list[Variant]]:
    rng = np.random.default_rng(8)
    reference = "".join(rng.choice(list("ACGT"), CONTIG_LENGTH))
    fasta = directory / "ref.fa"
    fasta.write_text(f">c1\n{reference}\n")
    pysam.faidx(str(fasta))
    variants = []
    alt_of = {}
    for locus, start in LOCI.items():
        pos0 = start + 30
        ref = reference[pos0]
        alt = "ACGT"[("ACGT".index(ref) + 1) % 4]
        alt_of[locus] = (pos0, alt)
        variants.append(Variant("c1", pos0 + 1, ref, alt))
    header = {"HD": {"VN": "1.6", "SO": "coordinate"}, "SQ": [{"SN": "c1", "LN": CONTIG_LENGTH}]}
    rows = []
    for mi, start, strands, carries in _molecules(rng):
        locus = "damage" if mi.startswith("damage") else "real"
        pos0, alt = alt_of[locus]
        left = reference[start : start + READ]
        right = reference[start + 2 * READ : start + 3 * READ]
        if carries:
            left = left[: pos0 - start] + alt + left[pos0 - start + 1 :]
        for strand in strands:
            for copy in range(2):
                name = f"{mi}{strand}{copy}"
                # top strand: R1 forward on the left; bottom strand: R2 forward on the left
                left_flag, right_flag = (0x40, 0x80) if strand == "A" else (0x80, 0x40)
                rows.append((name, start, left, 0x1 | 0x2 | 0x20 | left_flag, start + 2 * READ))
                rows.append((name, start + 2 * READ, right, 0x1 | 0x2 | 0x10 | right_flag, start))
                rows[-1] += (f"{mi}/{strand}",)
                rows[-2] += (f"{mi}/{strand}",)
    rows.sort(key=lambda row: row[1])
    grouped = directory / "grouped.bam"
    with pysam.AlignmentFile(str(grouped), "wb", header=header) as out:
        for name, start, seq, flag, mate_start, mi in rows:
            record = pysam.AlignedSegment(out.header)
            record.query_name, record.flag = name, flag
            record.reference_id, record.reference_start = 0, start
            record.next_reference_id, record.next_reference_start = 0, mate_start
            record.mapping_quality, record.cigarstring = 60, f"{READ}M"
            record.query_sequence = seq
            record.query_qualities = pysam.qualitystring_to_array("I" * READ)
            record.set_tag("MI", mi)
            record.set_tag("RX", "AAAA-CCCC" if mi.endswith("A") else "CCCC-AAAA")
            out.write(record)
    return grouped, fasta, variants


@pytest.fixture(scope="module")
def evidence(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    directory = tmp_path_factory.mktemp("strands")
    grouped, fasta, variants = _write_inputs(directory)
    consensus = directory / "consensus.bam"
    call_consensus_bam(grouped, consensus, params=ConsensusParams())
    with pysam.AlignmentFile(str(consensus), "rb") as bam:
        origins = sorted({int(record.get_tag("sO")) for record in bam})
    assert origins == [1, 2, 3]
    return collect_evidence(consensus, fasta, variants, flank=50)


def test_damage_on_one_strand_is_flagged_as_strand_bias(evidence) -> None:  # type: ignore[no-untyped-def]
    damage = evidence.variants[0]
    assert damage.alt == 12
    # 20 top-only + 20 duplex molecules on the top strand, 20 bottom-only + 20 duplex below
    assert (damage.n_forward, damage.n_reverse) == (40, 40)
    assert (damage.alt_forward, damage.alt_reverse) == (0, 12)
    assert "strand_bias" in _variant_filters(damage, CallingParams(), ())
    # calling.min_strand_bias_p_value: 0 switches the filter off
    off = CallingParams(min_strand_bias_p_value=0.0)
    assert "strand_bias" not in _variant_filters(damage, off, ())


def test_a_mutation_on_both_strands_is_not(evidence) -> None:  # type: ignore[no-untyped-def]
    real = evidence.variants[1]
    assert real.alt == 12
    assert (real.alt_forward, real.alt_reverse) == (8, 8)  # duplex alt molecules count on both
    assert "strand_bias" not in _variant_filters(real, CallingParams(), ())
