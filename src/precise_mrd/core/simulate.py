"""Simulation maths: a tumour-informed cfDNA sample with UMIs and known truth.

This module draws everything as numpy arrays (no files; see
:mod:`precise_mrd.pipeline.simulation` for the writer). Every draw comes from the
``np.random.Generator`` passed in, so a seed fixes the whole sample.

The model, from genome to reads
-------------------------------
1. **Reference.** Random contigs with a human-like GC content; CpG dinucleotides are depleted
   as evolution depletes them (most decay to TpG/CpA), so ``cpg_retention`` of them remain.
   Each tracked variant sits in its own target window; windows are ``locus_spacing`` apart so no
   fragment of one locus reaches the next (reads come out coordinate-sorted locus by locus).
2. **Variants.** One SNV per window; REF is the reference base there, ALT one of the other three.
   Tumour AF is ``clonal_tumor_af`` or, for a ``subclonal_variant_fraction`` of variants, uniform
   in ``[min_subclonal_tumor_af, clonal_tumor_af)``.
3. **Molecules.** Per locus, ``Poisson(molecules_per_locus)`` double-stranded fragments covering the
   variant. A molecule comes from a contaminating person with probability
   ``contamination_fraction`` (carrying that person's germline SNPs), else from the patient; a
   patient molecule is tumour-derived with probability ``tumor_fraction`` (TF, as defined in
   :mod:`precise_mrd.core.records`) and then carries ALT with probability ``tumor_af``. So the
   expected fraction of ALT molecules is ``(1 - contamination_fraction) * TF * tumor_af``.
   Fragment lengths: normal around ``healthy_fragment_mode`` (167 bp, the nucleosome plus linker)
   or ``tumor_fragment_mode`` (145 bp; tumour cfDNA is shorter), with a small di-nucleosome peak.
4. **Damage.** Before amplification, each original strand independently suffers CpG deamination
   (C>T on that strand) and oxidation (G>T on that strand) at ``artifact_rate`` per eligible base.
   Expressed on the reference (top) strand, top-strand damage is C>T / G>T and bottom-strand
   damage is G>A / C>A. Damage is copied into every read of that strand's family only, which is
   exactly what duplex consensus exploits.
5. **Families.** Each captured strand (both for ``duplex``, one at random otherwise) yields a
   family of read pairs of negative-binomial size (mean ``mean_family_size``, size parameter
   ``family_size_dispersion``; zero reads = strand dropout).
6. **PCR errors.** A family's reads are leaves of a ``pcr_cycles``-deep copying tree: each read
   draws its lineage (one bit per cycle), a copy made at cycle *c* misincorporates at
   ``pcr_error_rate`` per base, and its error is carried by every read descending from that copy
   (about ``2**-c`` of the family).
7. **Reads.** Top strand: R1 forward from the fragment start, R2 reverse from its end; bottom
   strand: R1 reverse from the end, R2 forward from the start. Reads are adapter-trimmed to the
   fragment (``min(read_length, fragment_length)`` template bases, so no soft clips). Base qualities
   follow a binned model (mostly ``high_base_quality``, a rising share of low bins along the read);
   each base is miscalled with probability ``10 ** (-Q / 10)``. UMI bases are miscalled at
   ``umi_error_rate``. The top strand's pair reads UMIs ``A`` (R1) and ``B`` (R2), the bottom
   strand's ``B`` and ``A``.

Bases are coded 0..3 for A, C, G, T. Read bases are kept in reference (top-strand, forward)
orientation as BAM stores them; qualities are kept in sequencing-cycle order.

>>> params = SimulationParams.preset("smoke", n_variants=2, molecules_per_locus=20)
>>> rng = np.random.default_rng(params.seed)
>>> genome = simulate_genome(params, rng)
>>> [v.ref == genome.contigs[v.chrom][v.start0] for v in genome.variants]
[True, True]
>>> locus = simulate_locus(params, genome, 0, rng)
>>> bool((locus.r1_bases.shape[1] == params.read_length) and locus.n_pairs > 0)
True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from precise_mrd.core.errors import ConfigError
from precise_mrd.core.records import BASES, Variant

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
Bool = npt.NDArray[np.bool_]

A, C, G, T = 0, 1, 2, 3
BASE_ASCII: U8 = np.frombuffer(BASES.encode("ascii"), dtype=np.uint8).copy()
#: Quality bins below ``high_base_quality`` and their shares among low-quality bases.
LOW_QUALITY_BINS: tuple[int, ...] = (23, 12, 2)
LOW_QUALITY_SHARES: tuple[float, ...] = (0.70, 0.25, 0.05)
#: Distance kept between a target window and the contig ends / the next window.
LOCUS_GAP = 100
#: How far (either side) the variant may sit from the centre of its window slot.
VARIANT_JITTER = 50

TUMOR_FRACTION_DEFINITION = (
    "TF is the fraction of the patient's cfDNA molecules that derive from tumour cells; a tumour "
    "molecule covering variant i carries the alternate allele with probability tumor_af_i, so the "
    "expected alt-molecule fraction at locus i is (1 - contamination_fraction) * TF * tumor_af_i "
    "before errors (molecules from a contaminating sample are never tumour)."
)


@dataclass(frozen=True, slots=True)
class SimulationParams:
    """Every knob of the simulator. Rates are per base unless the name says otherwise."""

    seed: int = 0
    tumor_fraction: float = 0.001
    n_variants: int = 100
    molecules_per_locus: int = 2000
    vary_molecules_per_locus: bool = True
    mean_family_size: float = 5.0
    family_size_dispersion: float = 3.0
    duplex: bool = True
    read_length: int = 142
    umi_length: int = 8
    artifact_rate: float = 1e-4
    pcr_error_rate: float = 1e-5
    pcr_cycles: int = 10
    umi_error_rate: float = 1e-3
    contamination_fraction: float = 0.0
    contamination_snps_per_locus: int = 2
    clonal_tumor_af: float = 0.5
    subclonal_variant_fraction: float = 0.0
    min_subclonal_tumor_af: float = 0.05
    healthy_fragment_mode: int = 167
    tumor_fragment_mode: int = 145
    fragment_length_sd: float = 15.0
    dinucleosome_fraction: float = 0.03
    min_fragment_length: int = 50
    max_fragment_length: int = 400
    high_base_quality: int = 37
    low_quality_fraction_start: float = 0.01
    low_quality_fraction_end: float = 0.10
    n_contigs: int = 1
    contig_length: int | None = None
    gc_content: float = 0.41
    cpg_retention: float = 0.25
    sample_name: str = "SIM"

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # ~2 s: a pipeline smoke test with a visible signal.
        "smoke": {
            "n_variants": 10,
            "molecules_per_locus": 200,
            "mean_family_size": 3.0,
            "tumor_fraction": 0.05,
            "duplex": True,
        },
        # The benchmark sample: 100 loci x ~2,000 duplex molecules x ~5 reads per strand
        # = ~2 million read pairs.
        "standard": {
            "n_variants": 100,
            "molecules_per_locus": 2000,
            "mean_family_size": 5.0,
            "tumor_fraction": 0.001,
            "duplex": True,
        },
    }

    def __post_init__(self) -> None:
        def check(ok: bool, name: str, problem: str, fix: str) -> None:
            if not ok:
                raise ConfigError(f"simulate.{name}", problem, fix)

        check(self.seed >= 0, "seed", f"must be >= 0; got {self.seed}", "use a non-negative int")
        check(
            0.0 <= self.tumor_fraction <= 1.0,
            "tumor_fraction",
            f"must be in [0, 1]; got {self.tumor_fraction}",
            "give a fraction of molecules, e.g. 0.001 for 1,000 ppm",
        )
        for name in ("n_variants", "molecules_per_locus", "n_contigs", "read_length", "umi_length"):
            value = getattr(self, name)
            check(value >= 1, name, f"must be >= 1; got {value}", "use a positive integer")
        check(
            self.mean_family_size > 0,
            "mean_family_size",
            f"must be > 0; got {self.mean_family_size}",
            "use the mean number of read pairs per strand family, e.g. 5",
        )
        check(
            self.family_size_dispersion > 0,
            "family_size_dispersion",
            f"must be > 0; got {self.family_size_dispersion}",
            "use the negative-binomial size (large = Poisson-like, small = over-dispersed)",
        )
        check(
            1 <= self.pcr_cycles <= 30,
            "pcr_cycles",
            f"must be in [1, 30]; got {self.pcr_cycles}",
            "use a realistic cycle count, e.g. 10",
        )
        for name in (
            "artifact_rate",
            "pcr_error_rate",
            "umi_error_rate",
            "contamination_fraction",
            "subclonal_variant_fraction",
            "dinucleosome_fraction",
            "low_quality_fraction_start",
            "low_quality_fraction_end",
            "gc_content",
            "cpg_retention",
        ):
            value = getattr(self, name)
            check(0.0 <= value <= 1.0, name, f"must be in [0, 1]; got {value}", "use a fraction")
        check(
            self.umi_error_rate < 0.75 and self.pcr_error_rate < 0.1,
            "umi_error_rate",
            "error rates this high make reads random",
            "use a per-base rate such as 1e-3",
        )
        check(
            0.0 < self.clonal_tumor_af <= 1.0,
            "clonal_tumor_af",
            f"must be in (0, 1]; got {self.clonal_tumor_af}",
            "use 0.5 for a clonal heterozygous variant",
        )
        check(
            0.0 < self.min_subclonal_tumor_af <= self.clonal_tumor_af,
            "min_subclonal_tumor_af",
            f"must be in (0, clonal_tumor_af={self.clonal_tumor_af}]; "
            f"got {self.min_subclonal_tumor_af}",
            "use e.g. 0.05",
        )
        check(
            self.contamination_snps_per_locus >= 0,
            "contamination_snps_per_locus",
            f"must be >= 0; got {self.contamination_snps_per_locus}",
            "use a small count, e.g. 2",
        )
        check(
            10 <= self.min_fragment_length <= self.max_fragment_length <= 2000,
            "min_fragment_length",
            "need 10 <= min_fragment_length <= max_fragment_length <= 2000; got "
            f"{self.min_fragment_length} and {self.max_fragment_length}",
            "use e.g. 50 and 400",
        )
        for name in ("healthy_fragment_mode", "tumor_fragment_mode"):
            value = getattr(self, name)
            check(
                self.min_fragment_length <= value <= self.max_fragment_length,
                name,
                f"must lie in [min_fragment_length, max_fragment_length]; got {value}",
                "use e.g. 167 (healthy) and 145 (tumour)",
            )
        check(
            self.fragment_length_sd > 0,
            "fragment_length_sd",
            f"must be > 0; got {self.fragment_length_sd}",
            "use e.g. 15",
        )
        check(
            2 <= self.high_base_quality <= 93,
            "high_base_quality",
            f"must be in [2, 93]; got {self.high_base_quality}",
            "use e.g. 37",
        )
        check(
            self.contig_length is None or self.contig_length >= self.minimum_contig_length,
            "contig_length",
            f"{self.contig_length} cannot hold {self.loci_per_contig} loci "
            f"{self.locus_spacing} bp apart",
            f"use >= {self.minimum_contig_length} or leave it unset",
        )
        check(
            bool(self.sample_name) and all(ch.isalnum() or ch in "_-." for ch in self.sample_name),
            "sample_name",
            f"must be non-empty letters, digits, '_', '-' or '.'; got {self.sample_name!r}",
            "use e.g. SIM",
        )

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> SimulationParams:
        """A named preset (``smoke`` or ``standard``) with some fields overridden."""
        if name not in cls.PRESETS:
            raise ConfigError(
                "simulate.preset",
                f"unknown preset {name!r}",
                f"use one of {', '.join(sorted(cls.PRESETS))}",
            )
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ConfigError(
                f"simulate.{unknown[0]}",
                "is not a simulation parameter",
                f"use one of {', '.join(sorted(names))}",
            )
        return cls(**{**cls.PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        """Plain values for JSON (the resolved parameters)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @property
    def window_half_width(self) -> int:
        """Bases either side of the variant that a fragment covering it can reach."""
        return self.max_fragment_length

    @property
    def locus_spacing(self) -> int:
        """Distance between neighbouring window slots on a contig."""
        return 2 * (self.window_half_width + VARIANT_JITTER) + LOCUS_GAP

    @property
    def loci_per_contig(self) -> int:
        return -(-self.n_variants // self.n_contigs)

    @property
    def minimum_contig_length(self) -> int:
        return self.loci_per_contig * self.locus_spacing + 2 * LOCUS_GAP

    @property
    def read_structure(self) -> str:
        """fgbio read structure of each FASTQ read: the UMI, then the template."""
        return f"{self.umi_length}M{self.read_length}T"


@dataclass(frozen=True, slots=True)
class ContaminantSnp:
    """A germline SNP of the contaminating person. ``start0`` is 0-based."""

    chrom: str
    start0: int
    ref: str
    alt: str
    allele_fraction: float


@dataclass(frozen=True, slots=True)
class SimulatedGenome:
    """The reference, the tracked variants (one per locus) and contaminant SNPs per locus."""

    contigs: dict[str, str]
    contig_codes: tuple[U8, ...]
    variants: tuple[Variant, ...]
    variant_contig_index: tuple[int, ...]
    contaminant_snps: tuple[tuple[ContaminantSnp, ...], ...]

    @property
    def contig_lengths(self) -> dict[str, int]:
        return {name: len(seq) for name, seq in self.contigs.items()}


@dataclass(frozen=True, slots=True)
class LocusTruth:
    """What really happened at one locus (counts are molecules unless named otherwise)."""

    variant_key: str
    tumor_af: float
    n_molecules: int
    n_tumor_molecules: int
    n_mutant_molecules: int
    n_contaminant_molecules: int
    n_molecules_sequenced: int
    n_mutant_molecules_sequenced: int
    n_families: int
    n_empty_families: int
    n_read_pairs: int
    n_damage_deamination: int
    n_damage_oxidation: int
    n_damage_alt_strands: int
    n_pcr_errors: int
    n_sequencing_errors: int
    n_umi_errors: int

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True, slots=True)
class SimulatedLocus:
    """Molecules and read pairs of one locus, as columns.

    Molecule columns (length ``n_molecules``): ``molecule_*``. Read-pair columns (length
    ``n_pairs``): ``pair_*``, ``r1_*``, ``r2_*``. Positions are 0-based on the contig.
    ``r*_bases`` (n_pairs, read_length) are in reference orientation, valid up to
    ``pair_read_length``; so are ``r*_quality`` (same shape, Phred, as BAM stores them);
    ``r*_umi_quality`` (n_pairs, umi_length) are the UMI cycles' qualities. ``pair_strand`` is
    0 for the top strand, 1 for the bottom strand.
    ``pair_name_index`` is a random permutation used for read names (it reveals nothing).
    """

    locus_index: int
    contig_index: int
    molecule_is_tumor: Bool
    molecule_is_contaminant: Bool
    molecule_carries_alt: Bool
    molecule_fragment_length: I64
    molecule_start: I64
    molecule_family_sizes: I64
    pair_molecule: I64
    pair_strand: I64
    pair_read_length: I64
    pair_name_index: I64
    r1_start: I64
    r2_start: I64
    r1_bases: U8
    r2_bases: U8
    r1_quality: U8
    r2_quality: U8
    r1_umi_quality: U8
    r2_umi_quality: U8
    r1_umi: U8
    r2_umi: U8
    damage_top: Bool
    damage_bottom: Bool
    truth: LocusTruth = field(repr=False)

    @property
    def n_pairs(self) -> int:
        return int(self.pair_molecule.shape[0])

    @property
    def pair_fragment_length(self) -> I64:
        return self.molecule_fragment_length[self.pair_molecule]


def random_reference(
    length: int, gc_content: float, cpg_retention: float, rng: np.random.Generator
) -> U8:
    """Base codes with the given GC content and CpG depletion (decayed CpGs become TpG or CpA)."""
    # NB: CpG decay turns G/C into A/T, so start a little richer in GC to end at ``gc_content``:
    # the final GC is g - (1 - retention) * (g / 2) ** 2 for an initial GC of g.
    loss = (1.0 - cpg_retention) / 4.0
    g = (
        gc_content
        if loss == 0
        else (1.0 - np.sqrt(max(1.0 - 4.0 * loss * gc_content, 0.0))) / (2.0 * loss)
    )
    at, gc = (1.0 - g) / 2.0, g / 2.0
    codes = rng.choice(4, size=length, p=[at, gc, gc, at]).astype(np.uint8)
    cpg = np.flatnonzero((codes[:-1] == C) & (codes[1:] == G))
    decayed = cpg[rng.random(cpg.size) >= cpg_retention]
    to_tpg = rng.random(decayed.size) < 0.5
    codes[decayed[to_tpg]] = T
    codes[decayed[~to_tpg] + 1] = A
    return codes


def simulate_genome(params: SimulationParams, rng: np.random.Generator) -> SimulatedGenome:
    """Draw the reference contigs, the tracked variants and the contaminant's SNPs."""
    length = params.contig_length or params.minimum_contig_length
    names = [f"chr{i + 1}" for i in range(params.n_contigs)]
    codes = tuple(
        random_reference(length, params.gc_content, params.cpg_retention, rng) for _ in names
    )
    variants: list[Variant] = []
    contig_index: list[int] = []
    snps: list[tuple[ContaminantSnp, ...]] = []
    half = params.window_half_width
    for locus in range(params.n_variants):
        contig, slot = divmod(locus, params.loci_per_contig)
        centre = LOCUS_GAP + slot * params.locus_spacing + VARIANT_JITTER + half
        start0 = centre + int(rng.integers(-VARIANT_JITTER, VARIANT_JITTER + 1))
        ref = int(codes[contig][start0])
        alt = (ref + int(rng.integers(1, 4))) % 4
        if rng.random() < params.subclonal_variant_fraction:
            af = float(rng.uniform(params.min_subclonal_tumor_af, params.clonal_tumor_af))
        else:
            af = params.clonal_tumor_af
        chrom = names[contig]
        variants.append(Variant(chrom, start0 + 1, BASES[ref], BASES[alt], round(af, 6)))
        contig_index.append(contig)
        # The contaminant's SNPs sit where reads covering the variant also reach.
        offsets = rng.choice(
            np.setdiff1d(np.arange(-100, 101), [0]),
            size=params.contamination_snps_per_locus,
            replace=False,
        )
        locus_snps = []
        for offset in np.sort(offsets):
            position = start0 + int(offset)
            snp_ref = int(codes[contig][position])
            snp_alt = (snp_ref + int(rng.integers(1, 4))) % 4
            snp_af = 1.0 if rng.random() < 1 / 3 else 0.5
            locus_snps.append(
                ContaminantSnp(chrom, position, BASES[snp_ref], BASES[snp_alt], snp_af)
            )
        snps.append(tuple(locus_snps))
    contigs = {
        name: BASE_ASCII[c].tobytes().decode("ascii") for name, c in zip(names, codes, strict=True)
    }
    return SimulatedGenome(contigs, codes, tuple(variants), tuple(contig_index), tuple(snps))


def draw_fragment_lengths(
    is_tumor: Bool, params: SimulationParams, rng: np.random.Generator
) -> I64:
    """cfDNA fragment lengths: mono-nucleosome peak (tumour shorter) plus a di-nucleosome peak."""
    n = is_tumor.shape[0]
    mode = np.where(is_tumor, params.tumor_fragment_mode, params.healthy_fragment_mode)
    lengths = mode + params.fragment_length_sd * rng.standard_normal(n)
    di = np.less(rng.random(n), params.dinucleosome_fraction)
    lengths[di] = 2 * mode[di] + 2 * params.fragment_length_sd * rng.standard_normal(int(di.sum()))
    clipped = np.clip(np.rint(lengths), params.min_fragment_length, params.max_fragment_length)
    return clipped.astype(np.int64)


def draw_qualities(n_reads: int, params: SimulationParams, rng: np.random.Generator) -> U8:
    """Binned base qualities in cycle order (UMI cycles then template cycles)."""
    n_cycles = params.umi_length + params.read_length
    low_share = np.linspace(
        params.low_quality_fraction_start, params.low_quality_fraction_end, n_cycles
    ).astype(np.float32)
    u = rng.random((n_reads, n_cycles), dtype=np.float32)
    quality = np.full((n_reads, n_cycles), params.high_base_quality, dtype=np.uint8)
    is_low = u < low_share
    # NB: conditional on u < share, u / share is again uniform, so it picks the low bin.
    rescaled = u[is_low] / np.broadcast_to(low_share, u.shape)[is_low]
    bins = np.searchsorted(np.cumsum(LOW_QUALITY_SHARES)[:-1], rescaled, side="right")
    quality[is_low] = np.asarray(LOW_QUALITY_BINS, dtype=np.uint8)[bins]
    return quality


def reference_orientation(values: U8, read_len: I64, is_reverse: Bool) -> U8:
    """Per-base values from cycle order to reference order (and back): reverse reads flip.

    Only the first ``read_len`` columns of each row are meaningful; the rest are padding.
    """
    offsets = np.arange(values.shape[1])
    index = np.where(is_reverse[:, None], read_len[:, None] - 1 - offsets, offsets)
    flipped: U8 = np.take_along_axis(values, np.clip(index, 0, values.shape[1] - 1), 1)
    return flipped


def _threshold(probability: float | F64) -> npt.NDArray[np.uint32]:
    """Integer thresholds for :func:`_bernoulli` (resolution 2**-32, so Q93 is still honoured)."""
    return np.asarray(np.floor(np.asarray(probability) * 2.0**32).clip(0, 2**32 - 1), np.uint32)


def _bernoulli(
    rng: np.random.Generator, shape: tuple[int, ...], threshold: npt.NDArray[np.uint32]
) -> Bool:
    """Independent Bernoulli draws ``u < threshold`` on 32-bit integers (cheaper than float64)."""
    draws = rng.integers(0, 2**32, size=shape, dtype=np.uint32)
    return np.less(draws, threshold)


def _sparse_bernoulli(rng: np.random.Generator, eligible: Bool, probability: float) -> Bool:
    """A mask that is True at each eligible cell with ``probability`` (draws only there)."""
    cells = np.flatnonzero(eligible)
    hits = np.zeros(eligible.shape, dtype=bool)
    hits.flat[cells[_bernoulli(rng, (cells.size,), _threshold(probability))]] = True
    return hits


def _substitute(codes: U8, where: Bool, rng: np.random.Generator) -> int:
    """Replace ``codes[where]`` by a uniformly chosen different base; return the count."""
    n = int(where.sum())
    if n:
        codes[where] = (codes[where] + rng.integers(1, 4, size=n, dtype=np.uint8)) % 4
    return n


def simulate_locus(
    params: SimulationParams, genome: SimulatedGenome, locus_index: int, rng: np.random.Generator
) -> SimulatedLocus:
    """Draw the molecules, families and read pairs of one locus."""
    p = params
    variant = genome.variants[locus_index]
    contig = genome.variant_contig_index[locus_index]
    half = p.window_half_width
    width = 2 * half + 1
    window_start = variant.start0 - half
    window = genome.contig_codes[contig][window_start : window_start + width]
    vi = half  # the variant's index inside the window

    # Molecules -----------------------------------------------------------------------------
    n = (
        int(rng.poisson(p.molecules_per_locus))
        if p.vary_molecules_per_locus
        else p.molecules_per_locus
    )
    n = max(n, 1)
    is_contaminant = rng.random(n) < p.contamination_fraction
    is_tumor = ~is_contaminant & (rng.random(n) < p.tumor_fraction)
    carries_alt = is_tumor & (rng.random(n) < variant.tumor_af)
    fragment_length = draw_fragment_lengths(is_tumor, p, rng)
    start = vi - rng.integers(0, fragment_length)  # window index of the fragment's first base
    end = start + fragment_length
    umi_a = rng.integers(0, 4, size=(n, p.umi_length), dtype=np.uint8)
    umi_b = rng.integers(0, 4, size=(n, p.umi_length), dtype=np.uint8)

    molecules = np.tile(window, (n, 1))
    molecules[carries_alt, vi] = BASES.index(variant.alt)
    for snp in genome.contaminant_snps[locus_index]:
        carriers = is_contaminant & (rng.random(n) < snp.allele_fraction)
        molecules[carriers, snp.start0 - window_start] = BASES.index(snp.alt)

    # Damage on each original strand, in top-strand coordinates --------------------------------
    column = np.arange(width)
    inside = (column >= start[:, None]) & (column < end[:, None])
    is_c, is_g = molecules == C, molecules == G
    cpg_c = np.zeros_like(is_c)
    cpg_c[:, :-1] = is_c[:, :-1] & is_g[:, 1:]
    cpg_g = np.zeros_like(is_g)
    cpg_g[:, 1:] = is_g[:, 1:] & is_c[:, :-1]
    hit_top = _sparse_bernoulli(rng, inside & (cpg_c | is_g), p.artifact_rate)
    hit_bottom = _sparse_bernoulli(rng, inside & (cpg_g | is_c), p.artifact_rate)
    deam_top, ox_top = hit_top & cpg_c, hit_top & is_g  # C>T, G>T
    deam_bottom, ox_bottom = hit_bottom & cpg_g, hit_bottom & is_c  # G>A, C>A
    strands = np.stack([molecules, molecules.copy()])
    strands[0][deam_top | ox_top] = T
    strands[1][deam_bottom | ox_bottom] = A

    # Families -------------------------------------------------------------------------------
    if p.duplex:
        family_molecule = np.repeat(np.arange(n), 2)
        family_strand = np.tile(np.array([0, 1]), n)
    else:
        family_molecule = np.arange(n)
        family_strand = rng.integers(0, 2, size=n)
    r = p.family_size_dispersion
    family_size = rng.negative_binomial(r, r / (r + p.mean_family_size), size=family_molecule.size)
    family_sizes = np.zeros((n, 2), dtype=np.int64)
    family_sizes[family_molecule, family_strand] = family_size
    pair_family = np.repeat(np.arange(family_size.size), family_size)
    pair_molecule = family_molecule[pair_family]
    pair_strand = family_strand[pair_family]
    n_pairs = pair_family.size

    # Read spans (window indices), adapter-trimmed to the fragment ---------------------------
    read_len = np.minimum(p.read_length, fragment_length[pair_molecule])
    forward_start = start[pair_molecule]
    reverse_start = end[pair_molecule] - read_len
    top = pair_strand == 0
    r1_span = np.where(top, forward_start, reverse_start)
    r2_span = np.where(top, reverse_start, forward_start)
    offsets = np.arange(p.read_length)

    def gather(span: I64) -> U8:
        index = np.minimum(span[:, None] + offsets, width - 1)
        index += ((pair_strand * n + pair_molecule) * width)[:, None]
        bases: U8 = flat_strands[index]
        bases[offsets >= read_len[:, None]] = A  # padding beyond the read
        return bases

    flat_strands = strands.reshape(-1)
    r1_bases, r2_bases = gather(r1_span), gather(r2_span)

    # PCR errors along each read's lineage --------------------------------------------------
    n_pcr = _add_pcr_errors(
        p,
        rng,
        pair_family,
        fragment_length[pair_molecule],
        start[pair_molecule],
        lambda pair, position: strands[pair_strand[pair], pair_molecule[pair], position],
        ((r1_span, r1_bases), (r2_span, r2_bases)),
        read_len,
    )

    # Qualities and sequencing errors ----------------------------------------------------------
    r1_cycle_quality = draw_qualities(n_pairs, p, rng)
    r2_cycle_quality = draw_qualities(n_pairs, p, rng)
    r1_quality = reference_orientation(r1_cycle_quality[:, p.umi_length :], read_len, ~top)
    r2_quality = reference_orientation(r2_cycle_quality[:, p.umi_length :], read_len, top)
    error_threshold = _threshold(10.0 ** (-np.arange(256) / 10.0))
    n_seq_errors = 0
    valid = offsets < read_len[:, None]
    for bases, quality in ((r1_bases, r1_quality), (r2_bases, r2_quality)):
        is_error = valid & (_bernoulli(rng, bases.shape, error_threshold[quality]))
        n_seq_errors += _substitute(bases, is_error, rng)

    # UMIs as read ---------------------------------------------------------------------------
    r1_umi = np.where(top[:, None], umi_a[pair_molecule], umi_b[pair_molecule]).astype(np.uint8)
    r2_umi = np.where(top[:, None], umi_b[pair_molecule], umi_a[pair_molecule]).astype(np.uint8)
    n_umi_errors = _substitute(r1_umi, rng.random(r1_umi.shape) < p.umi_error_rate, rng)
    n_umi_errors += _substitute(r2_umi, rng.random(r2_umi.shape) < p.umi_error_rate, rng)

    # Truth ----------------------------------------------------------------------------------
    covers = (r1_span <= vi) & (vi < r1_span + read_len) | (r2_span <= vi) & (
        vi < r2_span + read_len
    )
    sequenced = np.zeros(n, dtype=bool)
    sequenced[pair_molecule[covers]] = True
    has_reads = family_size > 0
    seen_top = np.zeros(n, dtype=bool)
    seen_bottom = np.zeros(n, dtype=bool)
    seen_top[family_molecule[has_reads & (family_strand == 0)]] = True
    seen_bottom[family_molecule[has_reads & (family_strand == 1)]] = True
    # damage that turns a reference molecule's strand into the alt at the variant
    alt_code = BASES.index(variant.alt)
    fake_alt = (strands[:, :, vi] == alt_code) & ~carries_alt
    damaged_at_variant = np.stack([(deam_top | ox_top)[:, vi], (deam_bottom | ox_bottom)[:, vi]])
    truth = LocusTruth(
        variant_key=variant.key,
        tumor_af=variant.tumor_af,
        n_molecules=n,
        n_tumor_molecules=int(is_tumor.sum()),
        n_mutant_molecules=int(carries_alt.sum()),
        n_contaminant_molecules=int(is_contaminant.sum()),
        n_molecules_sequenced=int(sequenced.sum()),
        n_mutant_molecules_sequenced=int((sequenced & carries_alt).sum()),
        n_families=int(family_size.size),
        n_empty_families=int((family_size == 0).sum()),
        n_read_pairs=int(n_pairs),
        n_damage_deamination=int(deam_top[seen_top].sum() + deam_bottom[seen_bottom].sum()),
        n_damage_oxidation=int(ox_top[seen_top].sum() + ox_bottom[seen_bottom].sum()),
        n_damage_alt_strands=int(
            (fake_alt[0] & seen_top & damaged_at_variant[0]).sum()
            + (fake_alt[1] & seen_bottom & damaged_at_variant[1]).sum()
        ),
        n_pcr_errors=n_pcr,
        n_sequencing_errors=n_seq_errors,
        n_umi_errors=n_umi_errors,
    )
    return SimulatedLocus(
        locus_index=locus_index,
        contig_index=contig,
        molecule_is_tumor=is_tumor,
        molecule_is_contaminant=is_contaminant,
        molecule_carries_alt=carries_alt,
        molecule_fragment_length=fragment_length,
        molecule_start=(start + window_start).astype(np.int64),
        molecule_family_sizes=family_sizes,
        pair_molecule=pair_molecule.astype(np.int64),
        pair_strand=pair_strand.astype(np.int64),
        pair_read_length=read_len.astype(np.int64),
        pair_name_index=rng.permutation(n_pairs).astype(np.int64),
        r1_start=(r1_span + window_start).astype(np.int64),
        r2_start=(r2_span + window_start).astype(np.int64),
        r1_bases=r1_bases,
        r2_bases=r2_bases,
        r1_quality=r1_quality,
        r2_quality=r2_quality,
        r1_umi_quality=r1_cycle_quality[:, : p.umi_length],
        r2_umi_quality=r2_cycle_quality[:, : p.umi_length],
        r1_umi=r1_umi,
        r2_umi=r2_umi,
        damage_top=deam_top | ox_top,
        damage_bottom=deam_bottom | ox_bottom,
        truth=truth,
    )


def _add_pcr_errors(
    p: SimulationParams,
    rng: np.random.Generator,
    pair_family: I64,
    pair_fragment_length: I64,
    pair_start: I64,
    template_base: Callable[[I64, I64], U8],
    reads: tuple[tuple[I64, U8], ...],
    read_len: I64,
) -> int:
    """Draw each read's lineage through the PCR tree and copy errors down it.

    A read's ancestor at cycle ``c`` is identified by the first ``c`` bits of its lineage; the copy
    made at cycle ``c`` is the one whose ``c``-th bit is 1. Each such copy (shared by all reads
    below it) gets ``Poisson(pcr_error_rate * fragment_length)`` errors. Returns the number of
    error events that reached at least one read.
    """
    n_pairs = pair_family.size
    if n_pairs == 0 or p.pcr_error_rate == 0.0:
        return 0
    cycles = p.pcr_cycles
    bits = rng.integers(0, 2, size=(n_pairs, cycles), dtype=np.int64)
    prefix = np.zeros((n_pairs, cycles), dtype=np.int64)
    running = np.zeros(n_pairs, dtype=np.int64)
    for c in range(cycles):
        running = running * 2 + bits[:, c]
        prefix[:, c] = running | (1 << (c + 1))  # leading 1 keeps prefixes of each depth apart
    pair_index, cycle_index = np.nonzero(bits == 1)
    keys = (pair_family[pair_index] << (cycles + 2)) | prefix[pair_index, cycle_index]
    nodes, node_of_entry = np.unique(keys, return_inverse=True)
    first_entry = np.zeros(nodes.size, dtype=np.int64)
    first_entry[node_of_entry[::-1]] = np.arange(node_of_entry.size)[::-1]
    node_pair = pair_index[first_entry]
    n_errors = rng.poisson(p.pcr_error_rate * pair_fragment_length[node_pair])
    if not n_errors.any():
        return 0
    error_node = np.repeat(np.arange(nodes.size), n_errors)
    error_offset = rng.integers(0, pair_fragment_length[node_pair[error_node]])
    error_shift = rng.integers(1, 4, size=error_node.size)
    # expand to (read pair, error) for every read below the erroneous copy
    errors_per_node = np.bincount(error_node, minlength=nodes.size)
    first_error = np.concatenate([[0], np.cumsum(errors_per_node)[:-1]])
    hit_entries = np.flatnonzero(errors_per_node[node_of_entry] > 0)
    repeats = errors_per_node[node_of_entry[hit_entries]]
    entry = np.repeat(hit_entries, repeats)
    within = np.arange(entry.size) - np.repeat(np.cumsum(repeats) - repeats, repeats)
    error = first_error[node_of_entry[entry]] + within
    pair = pair_index[entry]
    position = pair_start[pair] + error_offset[error]  # window index
    new_base = (template_base(pair, position) + error_shift[error]) % 4
    for span, bases in reads:
        offset = position - span[pair]
        ok = (offset >= 0) & (offset < read_len[pair])
        bases[pair[ok], offset[ok]] = new_base[ok].astype(np.uint8)
    return int(np.unique(error).size)
