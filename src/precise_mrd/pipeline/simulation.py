"""Write a simulated sample to disk: reference, reads (BAM, optionally FASTQ), variants, truth.

:func:`simulate_sample` draws a sample with :mod:`precise_mrd.core.simulate` locus by locus and
streams it to real files, so memory stays at one locus' worth of reads:

=====================================  ==========================================================
``reference.fa`` (+ ``.fai``)          random contigs holding one target window per variant
``reads.bam`` (+ ``.bai``)             coordinate-sorted, paired-end, ``RX`` = ``A-B`` (top
                                       strand) / ``B-A`` (bottom strand), ``MC``, ``RG``, MAPQ 60
``variants.vcf``                       the tracked variants, tumour AF in ``INFO/TAF``
``truth.json``                         TF definition, per-variant truth, artefact counts, params
``reads_R1.fastq.gz``/``_R2``          optional; each read is ``<UMI><template>`` (read structure
                                       ``{umi_length}M{read_length}T``), adapter read-through
                                       after short fragments
=====================================  ==========================================================

Everything is written into a hidden temporary directory inside ``out_dir`` and moved into place
at the end, so a crash leaves no half-written files. The same seed gives byte-identical files.
Read names look like ``SIM:00003:0001234`` (sample, locus, a random pair number): unique, but
they reveal neither the molecule nor the strand.

>>> import tempfile
>>> from pathlib import Path
>>> out = simulate_sample(Path(tempfile.mkdtemp()), SimulationParams.preset(
...     "smoke", n_variants=2, molecules_per_locus=20))
>>> out.bam_path.name, out.n_variants, out.n_records == 2 * out.n_read_pairs
('reads.bam', 2, True)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pysam

from precise_mrd import __version__
from precise_mrd.core.simulate import (
    BASE_ASCII,
    TUMOR_FRACTION_DEFINITION,
    SimulatedGenome,
    SimulatedLocus,
    SimulationParams,
    reference_orientation,
    simulate_genome,
    simulate_locus,
)
from precise_mrd.io.fasta import write_fasta
from precise_mrd.io.fastq import FastqPairWriter
from precise_mrd.io.sim_bam import BamRecordColumns, ColumnarBamWriter
from precise_mrd.io.vcf import write_vcf

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]

REFERENCE_NAME = "reference.fa"
BAM_NAME = "reads.bam"
VCF_NAME = "variants.vcf"
TRUTH_NAME = "truth.json"
FASTQ_R1_NAME = "reads_R1.fastq.gz"
FASTQ_R2_NAME = "reads_R2.fastq.gz"
MAPPING_QUALITY = 60
#: Illumina TruSeq adapter read-through after a fragment shorter than the read (R1, R2).
ADAPTERS = ("AGATCGGAAGAGCACACGTCTGAACTCCAGTCAC", "AGATCGGAAGAGCGTCGTGTAGGGAAAGAGTGT")
#: SAM flags of a pair: (R1, R2) for the top strand and for the bottom strand.
TOP_FLAGS = (99, 147)  # R1 forward at the fragment start, R2 reverse at its end
BOTTOM_FLAGS = (83, 163)  # R1 reverse at the fragment end, R2 forward at its start
_COMPLEMENT = np.frombuffer(bytes.maketrans(b"ACGTN", b"TGCAN"), dtype=np.uint8)


@dataclass(frozen=True, slots=True)
class SimulationOutputs:
    """Paths of the written files and summary counts."""

    out_dir: Path
    reference_path: Path
    bam_path: Path
    vcf_path: Path
    truth_path: Path
    fastq_r1_path: Path | None
    fastq_r2_path: Path | None
    n_variants: int
    n_molecules: int
    n_read_pairs: int
    n_records: int

    @property
    def bam_index_path(self) -> Path:
        return self.bam_path.with_name(self.bam_path.name + ".bai")

    @property
    def reference_index_path(self) -> Path:
        return self.reference_path.with_name(self.reference_path.name + ".fai")


def simulate_sample(
    out_dir: Path, params: SimulationParams, *, write_fastq: bool = False
) -> SimulationOutputs:
    """Simulate the sample described by ``params`` (seeded by ``params.seed``) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".simulate-", dir=out_dir))
    try:
        seeds = np.random.SeedSequence(params.seed).spawn(params.n_variants + 1)
        genome = simulate_genome(params, np.random.default_rng(seeds[0]))
        write_fasta(work / REFERENCE_NAME, genome.contigs)
        write_vcf(work / VCF_NAME, genome.variants, genome.contig_lengths)
        loci = (
            simulate_locus(params, genome, i, np.random.default_rng(seeds[i + 1]))
            for i in range(params.n_variants)
        )
        truths, n_records = _write_reads(work, params, genome, loci, write_fastq)
        pysam.index(str(work / BAM_NAME))
        truth = _truth_document(params, genome, truths, n_records, write_fastq)
        (work / TRUTH_NAME).write_text(json.dumps(truth, indent=2, sort_keys=True) + "\n")
        names = [REFERENCE_NAME, REFERENCE_NAME + ".fai", BAM_NAME, BAM_NAME + ".bai", VCF_NAME]
        names += [FASTQ_R1_NAME, FASTQ_R2_NAME] if write_fastq else []
        names.append(TRUTH_NAME)  # last: its presence marks a complete sample
        for name in names:
            os.replace(work / name, out_dir / name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return SimulationOutputs(
        out_dir=out_dir,
        reference_path=out_dir / REFERENCE_NAME,
        bam_path=out_dir / BAM_NAME,
        vcf_path=out_dir / VCF_NAME,
        truth_path=out_dir / TRUTH_NAME,
        fastq_r1_path=out_dir / FASTQ_R1_NAME if write_fastq else None,
        fastq_r2_path=out_dir / FASTQ_R2_NAME if write_fastq else None,
        n_variants=params.n_variants,
        n_molecules=sum(t["n_molecules"] for t in truths),
        n_read_pairs=sum(t["n_read_pairs"] for t in truths),
        n_records=n_records,
    )


def bam_header_text(params: SimulationParams, genome: SimulatedGenome) -> str:
    """SAM header text: sorted, one read group, one program line (no dates: reproducible)."""
    lines = ["@HD\tVN:1.6\tSO:coordinate"]
    lines += [f"@SQ\tSN:{name}\tLN:{length}" for name, length in genome.contig_lengths.items()]
    name = params.sample_name
    lines.append(f"@RG\tID:{name}\tSM:{name}\tLB:{name}-lib\tPL:ILLUMINA")
    lines.append(
        f"@PG\tID:precise-mrd\tPN:precise-mrd\tVN:{__version__}"
        f"\tCL:precise-mrd simulate --seed {params.seed}"
    )
    return "\n".join(lines) + "\n"


def _write_reads(
    work: Path,
    params: SimulationParams,
    genome: SimulatedGenome,
    loci: Iterator[SimulatedLocus],
    write_fastq: bool,
) -> tuple[list[dict[str, Any]], int]:
    references = list(genome.contig_lengths.items())
    fastq = FastqPairWriter(work / FASTQ_R1_NAME, work / FASTQ_R2_NAME) if write_fastq else None
    truths: list[dict[str, Any]] = []
    try:
        with ColumnarBamWriter(work / BAM_NAME, bam_header_text(params, genome), references) as bam:
            for locus in loci:
                names = read_names(params.sample_name, locus.locus_index, locus.pair_name_index)
                bam.write(locus_records(params, locus, names))
                if fastq is not None:
                    _write_fastq_pairs(fastq, params, locus, names)
                truths.append(locus.truth.to_dict())
            n_records = bam.n_records
    finally:
        if fastq is not None:
            fastq.close()
    return truths, n_records


def read_names(sample: str, locus_index: int, name_index: I64) -> U8:
    """Fixed-width ASCII read names ``<sample>:<locus 5 digits>:<pair number 7 digits>``."""
    prefix = np.frombuffer(f"{sample}:{locus_index:05d}:".encode("ascii"), dtype=np.uint8)
    digits = 7
    powers = 10 ** np.arange(digits - 1, -1, -1, dtype=np.int64)
    number = (name_index[:, None] // powers) % 10 + ord("0")
    return np.concatenate(
        [np.broadcast_to(prefix, (name_index.size, prefix.size)), number.astype(np.uint8)], axis=1
    )


def _digits_table(max_value: int, suffix: str) -> tuple[U8, I64]:
    """ASCII of ``f"{v}{suffix}"`` for v = 0..max_value, padded, with lengths."""
    texts = [f"{v}{suffix}".encode("ascii") for v in range(max_value + 1)]
    width = max(len(t) for t in texts)
    table = np.zeros((len(texts), width), dtype=np.uint8)
    for row, text in enumerate(texts):
        table[row, : len(text)] = np.frombuffer(text, dtype=np.uint8)
    return table, np.array([len(t) for t in texts], dtype=np.int64)


def locus_records(params: SimulationParams, locus: SimulatedLocus, names: U8) -> BamRecordColumns:
    """The BAM records of one locus (R1 and R2 of every pair), coordinate-sorted."""
    n = locus.n_pairs
    top = locus.pair_strand == 0
    read_len = locus.pair_read_length
    fragment = locus.pair_fragment_length
    flag_r1 = np.where(top, TOP_FLAGS[0], BOTTOM_FLAGS[0])
    flag_r2 = np.where(top, TOP_FLAGS[1], BOTTOM_FLAGS[1])
    # the forward read of the pair (R1 on top, R2 on bottom) gets +TLEN
    tlen_r1 = np.where(top, fragment, -fragment)
    rx = np.concatenate(
        [
            BASE_ASCII[locus.r1_umi],
            np.full((n, 1), ord("-"), dtype=np.uint8),
            BASE_ASCII[locus.r2_umi],
        ],
        axis=1,
    )
    mc_table, mc_length = _digits_table(params.read_length, "M")
    rg = np.frombuffer(params.sample_name.encode("ascii"), dtype=np.uint8)

    def both(first: I64 | U8, second: I64 | U8) -> Any:
        return np.concatenate([first, second])

    order = np.lexsort(
        (
            both(np.zeros(n, np.int64), np.ones(n, np.int64)),
            both(locus.pair_name_index, locus.pair_name_index),
            both(locus.r1_start, locus.r2_start),
        )
    )
    n_records = 2 * n
    return BamRecordColumns(
        reference_id=np.full(n_records, locus.contig_index, dtype=np.int64),
        position=both(locus.r1_start, locus.r2_start)[order],
        flag=both(flag_r1, flag_r2)[order],
        mapping_quality=np.full(n_records, MAPPING_QUALITY, dtype=np.int64),
        mate_reference_id=np.full(n_records, locus.contig_index, dtype=np.int64),
        mate_position=both(locus.r2_start, locus.r1_start)[order],
        template_length=both(tlen_r1, -tlen_r1)[order],
        names=both(names, names)[order],
        name_length=np.full(n_records, names.shape[1], dtype=np.int64),
        bases=BASE_ASCII[both(locus.r1_bases, locus.r2_bases)[order]],
        qualities=both(locus.r1_quality, locus.r2_quality)[order],
        read_length=both(read_len, read_len)[order],
        string_tags=(
            ("RX", both(rx, rx)[order], np.full(n_records, rx.shape[1], dtype=np.int64)),
            (
                "MC",
                mc_table[both(read_len, read_len)[order]],
                mc_length[both(read_len, read_len)[order]],
            ),
            (
                "RG",
                np.broadcast_to(rg, (n_records, rg.size)),
                np.full(n_records, rg.size, np.int64),
            ),
        ),
    )


def _sequencing_orientation(
    params: SimulationParams,
    umi: U8,
    umi_quality: U8,
    bases: U8,
    quality: U8,
    read_len: I64,
    is_reverse: npt.NDArray[np.bool_],
    adapter: str,
) -> tuple[str, str, int]:
    """FASTQ text blocks (all reads concatenated) of one read end, in sequencing orientation.

    Past the end of a short fragment the read runs into the adapter (bases after the adapter
    are A); those cycles keep the qualities drawn for them.
    """
    offsets = np.arange(params.read_length)
    template = reference_orientation(BASE_ASCII[bases], read_len, is_reverse)
    template = np.where(is_reverse[:, None], _COMPLEMENT[template], template)
    tail_index = np.clip(offsets - read_len[:, None], 0, None)
    tail = np.frombuffer(adapter.encode("ascii").ljust(params.read_length, b"A"), dtype=np.uint8)
    template = np.where(offsets < read_len[:, None], template, tail[tail_index])
    sequence = np.concatenate([BASE_ASCII[umi], template], axis=1).astype(np.uint8)
    cycle_quality = reference_orientation(quality, read_len, is_reverse)
    phred33 = (np.concatenate([umi_quality, cycle_quality], axis=1) + 33).astype(np.uint8)
    return sequence.tobytes().decode("ascii"), phred33.tobytes().decode("ascii"), sequence.shape[1]


def _write_fastq_pairs(
    writer: FastqPairWriter, params: SimulationParams, locus: SimulatedLocus, names: U8
) -> None:
    order = np.argsort(locus.pair_name_index)
    top = locus.pair_strand[order] == 0
    read_len = locus.pair_read_length[order]
    seq1, qual1, width = _sequencing_orientation(
        params,
        locus.r1_umi[order],
        locus.r1_umi_quality[order],
        locus.r1_bases[order],
        locus.r1_quality[order],
        read_len,
        ~top,
        ADAPTERS[0],
    )
    seq2, qual2, _ = _sequencing_orientation(
        params,
        locus.r2_umi[order],
        locus.r2_umi_quality[order],
        locus.r2_bases[order],
        locus.r2_quality[order],
        read_len,
        top,
        ADAPTERS[1],
    )
    name_text = names[order].tobytes().decode("ascii")
    name_width = names.shape[1]
    for i in range(order.size):
        a, b = i * width, (i + 1) * width
        writer.write(
            name_text[i * name_width : (i + 1) * name_width],
            seq1[a:b],
            qual1[a:b],
            seq2[a:b],
            qual2[a:b],
        )


def _truth_document(
    params: SimulationParams,
    genome: SimulatedGenome,
    truths: list[dict[str, Any]],
    n_records: int,
    write_fastq: bool,
) -> dict[str, Any]:
    variants = []
    for variant, truth in zip(genome.variants, truths, strict=True):
        expected = (1 - params.contamination_fraction) * params.tumor_fraction * variant.tumor_af
        variants.append(
            {
                "key": variant.key,
                "chrom": variant.chrom,
                "pos": variant.pos,
                "ref": variant.ref,
                "alt": variant.alt,
                "expected_alt_molecule_fraction": expected,
                **truth,
            }
        )
    counters = (
        "n_molecules",
        "n_tumor_molecules",
        "n_mutant_molecules",
        "n_contaminant_molecules",
        "n_families",
        "n_empty_families",
        "n_read_pairs",
    )
    artefacts = (
        "n_damage_deamination",
        "n_damage_oxidation",
        "n_damage_alt_strands",
        "n_pcr_errors",
        "n_sequencing_errors",
        "n_umi_errors",
    )
    snps = (
        [
            {
                "chrom": s.chrom,
                "pos": s.start0 + 1,
                "ref": s.ref,
                "alt": s.alt,
                "allele_fraction": s.allele_fraction,
            }
            for locus_snps in genome.contaminant_snps
            for s in locus_snps
        ]
        if params.contamination_fraction > 0
        else []
    )
    return {
        "format_version": 1,
        "generator": f"precise-mrd {__version__}",
        "seed": params.seed,
        "tumor_fraction": params.tumor_fraction,
        "tumor_fraction_definition": TUMOR_FRACTION_DEFINITION,
        "contamination_fraction": params.contamination_fraction,
        "read_structure": {"r1": params.read_structure, "r2": params.read_structure},
        "umi": {
            "tag": "RX",
            "convention": "top-strand pairs carry A-B, bottom-strand pairs B-A; the first part is "
            "the UMI read by R1",
            "duplex": params.duplex,
        },
        "damage_definition": "counts of damage events on original strands that were sequenced: "
        "deamination = C>T at CpG on that strand, oxidation = G>T on that strand "
        "(on the reference: top C>T/G>T, bottom G>A/C>A); n_damage_alt_strands counts sequenced "
        "strands of reference molecules that damage turned into the alt at the variant",
        "totals": {key: sum(t[key] for t in truths) for key in counters} | {"n_records": n_records},
        "artifacts": {key: sum(t[key] for t in truths) for key in artefacts},
        "variants": variants,
        "contaminant_snps": snps,
        "files": {
            "reference": REFERENCE_NAME,
            "bam": BAM_NAME,
            "vcf": VCF_NAME,
            "fastq": [FASTQ_R1_NAME, FASTQ_R2_NAME] if write_fastq else [],
        },
        "params": params.to_dict(),
    }
