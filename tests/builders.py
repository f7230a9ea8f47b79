"""Seeded builders of small test files (no checked-in binaries).

:func:`build_grouped_bam` writes what the group stage hands to the consensus stage: a
coordinate-sorted, paired-end (or single-end) BAM in which every read carries ``MI`` (``"<id>"`` or
``"<id>/A"``/``"<id>/B"``) and ``RX``, simulated from known true molecules. It returns the truth so
that a test can check each consensus base:

* strand A reads copy the molecule's top strand: R1 forward at the fragment start, R2 reverse at
  its end, ``RX = "<umi_a>-<umi_b>"``; strand B reads copy the bottom strand: R1 reverse at the end,
  R2 forward at the start, ``RX = "<umi_b>-<umi_a>"`` (docs/internals.md);
* a *strand artefact* (an error in the first PCR copy of strand A) sits in every strand-A read;
* late PCR errors hit single reads; sequencing errors follow each base's Phred quality;
* an optional fraction of reads carries a minority alignment (a 3' soft clip of junk bases).

Every random draw comes from the ``rng`` passed in.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pysam

BASES = np.frombuffer(b"ACGT", dtype=np.uint8)


@dataclass(frozen=True)
class GroupedBamSpec:
    """Shape of a simulated grouped BAM. Lengths in bases; rates per base unless said otherwise."""

    n_contigs: int = 1
    contig_length: int = 5_000
    n_loci: int = 2
    molecules_per_locus: int = 40
    read_length: int = 100
    min_fragment_length: int = 120
    max_fragment_length: int = 260
    is_duplex: bool = True
    is_paired: bool = True
    mean_family_size: float = 3.0
    min_family_size: int = 1
    min_base_quality: int = 20
    max_base_quality: int = 40
    pcr_error_rate: float = 0.001
    strand_artefact_fraction: float = 0.0
    single_strand_fraction: float = 0.0
    minority_alignment_rate: float = 0.0
    umi_length: int = 6

    def __post_init__(self) -> None:
        if self.min_fragment_length < self.read_length:
            raise ValueError(
                f"min_fragment_length must be >= read_length ({self.read_length}); "
                f"got {self.min_fragment_length}"
            )
        if self.max_fragment_length < self.min_fragment_length:
            raise ValueError("max_fragment_length must be >= min_fragment_length")
        if self.contig_length < 2 * self.max_fragment_length:
            raise ValueError("contig_length must be >= 2 * max_fragment_length")


@dataclass(frozen=True)
class TrueMolecule:
    """A simulated original molecule. ``start`` is 0-based; ``sequence`` is its top strand."""

    molecule_id: int
    contig: str
    start: int
    sequence: str
    umi_a: str
    umi_b: str
    n_a: int
    n_b: int
    strand_a_artefacts: tuple[int, ...] = field(default=())

    @property
    def end(self) -> int:
        """0-based exclusive end on the contig."""
        return self.start + len(self.sequence)


@dataclass(frozen=True)
class GroupedBam:
    path: Path
    contigs: dict[str, str]
    molecules: list[TrueMolecule]
    n_reads: int


def _random_seq(rng: np.random.Generator, n: int) -> np.ndarray:
    return BASES[rng.integers(0, 4, size=n)]


def _mutate(rng: np.random.Generator, seq: np.ndarray, positions: np.ndarray) -> None:
    """Replace ``seq[positions]`` by a different base each (in place)."""
    codes = np.searchsorted(BASES, seq[positions])
    seq[positions] = BASES[(codes + rng.integers(1, 4, size=len(positions))) % 4]


def build_grouped_bam(path: Path, spec: GroupedBamSpec, rng: np.random.Generator) -> GroupedBam:
    """Simulate a grouped BAM at ``path`` (+ ``.bai``) and return the true molecules."""
    contigs = {
        f"chr{i + 1}": _random_seq(rng, spec.contig_length).tobytes().decode()
        for i in range(spec.n_contigs)
    }
    names = list(contigs)
    header = {
        "HD": {"VN": "1.6", "SO": "coordinate"},
        "SQ": [{"SN": n, "LN": len(s)} for n, s in contigs.items()],
    }
    records: list[tuple[int, int, str, int, str, int, int, bytes, bytes, str, str]] = []
    molecules: list[TrueMolecule] = []
    read_length = spec.read_length
    molecule_id = 0
    for locus in range(spec.n_loci):
        tid = locus % spec.n_contigs
        contig = contigs[names[tid]]
        centre = int(
            rng.integers(spec.max_fragment_length, spec.contig_length - spec.max_fragment_length)
        )
        for _ in range(spec.molecules_per_locus):
            length = int(rng.integers(spec.min_fragment_length, spec.max_fragment_length + 1))
            start = centre - int(rng.integers(0, length))
            start = min(max(start, 0), spec.contig_length - length)
            truth = np.frombuffer(contig[start : start + length].encode(), dtype=np.uint8).copy()
            umi_a = _random_seq(rng, spec.umi_length).tobytes().decode()
            umi_b = _random_seq(rng, spec.umi_length).tobytes().decode()
            n_a = spec.min_family_size + int(rng.poisson(max(spec.mean_family_size - 1, 0)))
            n_b = spec.min_family_size + int(rng.poisson(max(spec.mean_family_size - 1, 0)))
            if not spec.is_duplex or rng.random() < spec.single_strand_fraction:
                n_b = 0
            artefacts: tuple[int, ...] = ()
            strand_a = truth.copy()
            if rng.random() < spec.strand_artefact_fraction:
                # NB: inside the R1 read and away from its ends, so both ends of a test can see it.
                position = int(rng.integers(10, min(read_length, length) - 10))
                artefacts = (position,)
                _mutate(rng, strand_a, np.array(artefacts))
            molecule = TrueMolecule(
                molecule_id,
                names[tid],
                start,
                truth.tobytes().decode(),
                umi_a,
                umi_b,
                n_a,
                n_b,
                artefacts,
            )
            molecules.append(molecule)
            for strand_name, template, n_copies in (("A", strand_a, n_a), ("B", truth, n_b)):
                mi = f"{molecule_id}/{strand_name}" if spec.is_duplex else str(molecule_id)
                rx = f"{umi_a}-{umi_b}" if strand_name == "A" else f"{umi_b}-{umi_a}"
                for copy in range(n_copies):
                    copy_seq = template.copy()
                    n_pcr = rng.binomial(length, spec.pcr_error_rate)
                    if n_pcr:
                        _mutate(rng, copy_seq, rng.choice(length, size=n_pcr, replace=False))
                    left = (start, copy_seq[:read_length])
                    right = (start + length - read_length, copy_seq[length - read_length :])
                    # strand A: R1 = left (forward), R2 = right (reverse); strand B: the opposite.
                    r1, r2 = (left, right) if strand_name == "A" else (right, left)
                    name = f"m{molecule_id}{strand_name}{copy}"
                    mates = [(r1, 0x40), (r2, 0x80)] if spec.is_paired else [(r1, 0)]
                    for this, which in mates:
                        pos, seq = this
                        other = r2 if which == 0x40 else r1
                        flag = which | (0x10 if this is right else 0)
                        if spec.is_paired:
                            flag |= 0x1 | 0x2 | (0x20 if other is right else 0)
                        quals = rng.integers(
                            spec.min_base_quality, spec.max_base_quality + 1, size=read_length
                        ).astype(np.uint8)
                        read = seq.copy()
                        wrong = rng.random(read_length) < 10.0 ** (-quals.astype(np.float64) / 10.0)
                        if wrong.any():
                            _mutate(rng, read, np.flatnonzero(wrong))
                        cigar = f"{read_length}M"
                        if rng.random() < spec.minority_alignment_rate:
                            cigar = f"{read_length - 5}M5S"
                            read[-5:] = _random_seq(rng, 5)
                        tlen = length if this is left else -length
                        records.append(
                            (
                                tid,
                                pos,
                                name,
                                flag,
                                cigar,
                                other[0],
                                tlen if spec.is_paired else 0,
                                read.tobytes(),
                                quals.tobytes(),
                                mi,
                                rx,
                            )
                        )
            molecule_id += 1
    records.sort(key=lambda r: (r[0], r[1], r[2], r[3]))
    path.parent.mkdir(parents=True, exist_ok=True)
    with pysam.AlignmentFile(str(path), "wb", header=header) as out:
        for tid, pos, name, flag, cigar, mate_pos, tlen, seq, quals, mi, rx in records:
            segment = pysam.AlignedSegment(out.header)
            segment.query_name = name
            segment.flag = flag
            segment.reference_id = tid
            segment.reference_start = pos
            segment.mapping_quality = 60
            segment.cigarstring = cigar
            if flag & 0x1:
                segment.next_reference_id = tid
                segment.next_reference_start = mate_pos
                segment.template_length = tlen
            segment.query_sequence = seq.decode()
            segment.query_qualities = array("B", quals)
            segment.set_tag("MI", mi, "Z")
            segment.set_tag("RX", rx, "Z")
            out.write(segment)
    pysam.index(str(path))
    return GroupedBam(path, contigs, molecules, len(records))
