"""Unit tests of the simulation maths (core/simulate.py): arrays in, arrays out, no files."""

from __future__ import annotations

import numpy as np
import pytest

from precise_mrd.core.errors import ConfigError
from precise_mrd.core.records import BASES
from precise_mrd.core.simulate import (
    C,
    G,
    SimulatedGenome,
    SimulatedLocus,
    SimulationParams,
    draw_fragment_lengths,
    random_reference,
    simulate_genome,
    simulate_locus,
)

#: Switch off every error source so reads equal the (damaged) molecules exactly.
CLEAN = {
    "artifact_rate": 0.0,
    "pcr_error_rate": 0.0,
    "umi_error_rate": 0.0,
    "high_base_quality": 93,
    "low_quality_fraction_start": 0.0,
    "low_quality_fraction_end": 0.0,
}


def simulate(params: SimulationParams) -> tuple[SimulatedGenome, list[SimulatedLocus]]:
    rng = np.random.default_rng(params.seed)
    genome = simulate_genome(params, rng)
    return genome, [simulate_locus(params, genome, i, rng) for i in range(params.n_variants)]


def window_codes(genome: SimulatedGenome, locus: SimulatedLocus, starts: np.ndarray) -> np.ndarray:
    """Reference codes under each read (rows), aligned like ``r*_bases``."""
    contig = genome.contig_codes[locus.contig_index]
    index = np.minimum(starts[:, None] + np.arange(locus.r1_bases.shape[1]), contig.size - 1)
    return contig[index]


def test_presets_and_overrides() -> None:
    smoke = SimulationParams.preset("smoke")
    assert (smoke.n_variants, smoke.molecules_per_locus, smoke.duplex) == (10, 200, True)
    standard = SimulationParams.preset("standard", seed=7)
    assert (standard.n_variants, standard.molecules_per_locus, standard.seed) == (100, 2000, 7)
    assert standard.read_structure == "8M142T"


@pytest.mark.parametrize(
    ("overrides", "path"),
    [
        ({"tumor_fraction": 1.5}, "simulate.tumor_fraction"),
        ({"mean_family_size": 0.0}, "simulate.mean_family_size"),
        ({"n_variants": 0}, "simulate.n_variants"),
        ({"artifact_rate": -0.1}, "simulate.artifact_rate"),
        ({"tumor_fragment_mode": 10}, "simulate.tumor_fragment_mode"),
        ({"contig_length": 100}, "simulate.contig_length"),
        ({"sample_name": "a b"}, "simulate.sample_name"),
    ],
)
def test_invalid_params_name_the_field(overrides: dict[str, object], path: str) -> None:
    with pytest.raises(ConfigError) as info:
        SimulationParams.preset("smoke", **overrides)
    assert info.value.path == path


def test_unknown_preset_and_override() -> None:
    with pytest.raises(ConfigError, match="unknown preset"):
        SimulationParams.preset("huge")
    with pytest.raises(ConfigError, match="not a simulation parameter"):
        SimulationParams.preset("smoke", tumour_fraction=0.1)


def test_reference_composition_and_cpg_depletion() -> None:
    codes = random_reference(200_000, 0.41, 0.25, np.random.default_rng(1))
    gc = np.isin(codes, [C, G]).mean()
    cpg = ((codes[:-1] == C) & (codes[1:] == G)).mean()
    expected_cpg = (codes == C).mean() * (codes == G).mean()
    assert 0.38 < gc < 0.42
    assert 0.15 < cpg / expected_cpg < 0.35


def test_variants_match_reference_and_windows_do_not_overlap() -> None:
    params = SimulationParams.preset("smoke", n_variants=30, n_contigs=3)
    genome = simulate_genome(params, np.random.default_rng(3))
    for variant in genome.variants:
        assert genome.contigs[variant.chrom][variant.start0] == variant.ref != variant.alt
    assert sorted(genome.contigs) == ["chr1", "chr2", "chr3"]
    for chrom in genome.contigs:
        starts = np.array([v.start0 for v in genome.variants if v.chrom == chrom])
        assert (np.diff(starts) > 2 * params.max_fragment_length).all()


def test_subclonal_tumor_afs() -> None:
    params = SimulationParams.preset("smoke", n_variants=200, subclonal_variant_fraction=0.5)
    genome = simulate_genome(params, np.random.default_rng(4))
    afs = np.array([v.tumor_af for v in genome.variants])
    subclonal = afs < params.clonal_tumor_af
    assert 0.35 < subclonal.mean() < 0.65
    assert (afs[subclonal] >= params.min_subclonal_tumor_af).all()


def test_same_seed_same_arrays_other_seed_differs() -> None:
    params = SimulationParams.preset("smoke", n_variants=2)
    _, first = simulate(params)
    _, again = simulate(params)
    _, other = simulate(SimulationParams.preset("smoke", n_variants=2, seed=1))
    for a, b in zip(first, again, strict=True):
        assert np.array_equal(a.r1_bases, b.r1_bases) and np.array_equal(a.r2_umi, b.r2_umi)
        assert a.truth == b.truth
    assert first[0].n_pairs != other[0].n_pairs or not np.array_equal(
        first[0].r1_start, other[0].r1_start
    )


def test_alt_molecule_fraction_is_tf_times_af() -> None:
    params = SimulationParams.preset(
        "smoke", tumor_fraction=0.05, n_variants=10, molecules_per_locus=2000, mean_family_size=1.0
    )
    _, loci = simulate(params)
    n = sum(locus.truth.n_molecules for locus in loci)
    alt = sum(locus.truth.n_mutant_molecules for locus in loci)
    expected = params.tumor_fraction * params.clonal_tumor_af
    assert abs(alt / n - expected) < 4 * np.sqrt(expected * (1 - expected) / n)
    for locus in loci:  # only tumour molecules carry the alt
        assert not (locus.molecule_carries_alt & ~locus.molecule_is_tumor).any()


def test_contaminant_molecules_are_never_tumour() -> None:
    params = SimulationParams.preset("smoke", tumor_fraction=0.5, contamination_fraction=0.2)
    _, loci = simulate(params)
    for locus in loci:
        assert not (locus.molecule_is_contaminant & locus.molecule_is_tumor).any()
    share = sum(lo.truth.n_contaminant_molecules for lo in loci) / sum(
        lo.truth.n_molecules for lo in loci
    )
    assert 0.15 < share < 0.25


def test_tumour_fragments_are_shorter() -> None:
    params = SimulationParams.preset("smoke", dinucleosome_fraction=0.0)
    is_tumor = np.arange(20_000) % 2 == 0
    lengths = draw_fragment_lengths(is_tumor, params, np.random.default_rng(5))
    assert abs(np.median(lengths[is_tumor]) - params.tumor_fragment_mode) <= 1
    assert abs(np.median(lengths[~is_tumor]) - params.healthy_fragment_mode) <= 1
    assert lengths.min() >= params.min_fragment_length


def test_family_sizes_are_overdispersed_around_the_mean() -> None:
    params = SimulationParams.preset(
        "smoke", n_variants=4, molecules_per_locus=3000, mean_family_size=4.0
    )
    _, loci = simulate(params)
    sizes = np.concatenate([locus.molecule_family_sizes.ravel() for locus in loci])
    assert abs(sizes.mean() - 4.0) < 0.1
    expected_variance = 4.0 + 4.0**2 / params.family_size_dispersion
    assert abs(sizes.var() / expected_variance - 1) < 0.1
    assert (sizes == 0).any()  # strand dropout happens
    assert sum(locus.n_pairs for locus in loci) == sizes.sum()


def test_simplex_captures_one_strand_per_molecule() -> None:
    _, loci = simulate(SimulationParams.preset("smoke", duplex=False, n_variants=2))
    for locus in loci:
        assert (locus.molecule_family_sizes.min(axis=1) == 0).all()
        assert 0.4 < (locus.pair_strand == 0).mean() < 0.6


def test_clean_reads_equal_reference_except_the_variant() -> None:
    params = SimulationParams.preset("smoke", tumor_fraction=0.3, **CLEAN)
    genome, loci = simulate(params)
    for locus in loci:
        variant = genome.variants[locus.locus_index]
        for starts, bases in ((locus.r1_start, locus.r1_bases), (locus.r2_start, locus.r2_bases)):
            valid = np.arange(bases.shape[1]) < locus.pair_read_length[:, None]
            mismatch = valid & (bases != window_codes(genome, locus, starts))
            rows, cols = np.nonzero(mismatch)
            assert (starts[rows] + cols == variant.start0).all()
            assert (bases[rows, cols] == BASES.index(variant.alt)).all()
            assert locus.molecule_carries_alt[locus.pair_molecule[rows]].all()


def test_umis_pair_up_across_strands() -> None:
    _, loci = simulate(SimulationParams.preset("smoke", n_variants=2, **CLEAN))
    for locus in loci:
        top = locus.pair_strand == 0
        # the UMI R1 reads on the top strand (A) is the one R2 reads on the bottom strand
        first_top = {m: i for i, m in enumerate(locus.pair_molecule) if top[i]}
        checked = 0
        for i in np.flatnonzero(~top):
            j = first_top.get(int(locus.pair_molecule[i]))
            if j is not None:
                assert np.array_equal(locus.r2_umi[i], locus.r1_umi[j])
                assert np.array_equal(locus.r1_umi[i], locus.r2_umi[j])
                checked += 1
        assert checked > 50


def test_damage_sits_in_its_context_on_one_strand_only() -> None:
    params = SimulationParams.preset("smoke", n_variants=3, **{**CLEAN, "artifact_rate": 0.01})
    genome, loci = simulate(params)
    n_events = 0
    for locus in loci:
        contig = genome.contig_codes[locus.contig_index]
        for strand, allowed in ((0, {(C, 3), (G, 3)}), (1, {(G, 0), (C, 0)})):
            rows = np.flatnonzero(locus.pair_strand == strand)
            for starts, bases in (
                (locus.r1_start, locus.r1_bases),
                (locus.r2_start, locus.r2_bases),
            ):
                ref = window_codes(genome, locus, starts[rows])
                valid = np.arange(bases.shape[1]) < locus.pair_read_length[rows, None]
                is_alt = locus.molecule_carries_alt[locus.pair_molecule[rows]][:, None]
                r, c = np.nonzero(valid & (bases[rows] != ref) & ~is_alt)
                pairs = set(zip(ref[r, c].tolist(), bases[rows][r, c].tolist(), strict=True))
                assert pairs <= allowed, pairs
                position = starts[rows][r] + c
                deamination = ref[r, c] == (C if strand == 0 else G)
                # C>T (top) needs a G after it; G>A (bottom) needs a C before it
                neighbour = contig[position + (1 if strand == 0 else -1)]
                assert (neighbour[deamination] == (G if strand == 0 else C)).all()
                n_events += r.size
        # one original strand: no damage event is shared by both strands of a molecule
        assert not (locus.damage_top & locus.damage_bottom).any()
    assert n_events > 100
    assert sum(lo.truth.n_damage_deamination for lo in loci) > 0


def test_pcr_errors_follow_the_copying_tree() -> None:
    rate, cycles = 2e-4, 10
    params = SimulationParams.preset(
        "smoke", n_variants=3, **{**CLEAN, "pcr_error_rate": rate, "pcr_cycles": cycles}
    )
    genome, loci = simulate(params)
    mismatches = bases_seen = 0
    for locus in loci:
        ref = window_codes(genome, locus, locus.r1_start)
        valid = np.arange(locus.r1_bases.shape[1]) < locus.pair_read_length[:, None]
        is_variant = locus.molecule_carries_alt[locus.pair_molecule][:, None]
        mismatches += int((valid & (locus.r1_bases != ref) & ~is_variant).sum())
        bases_seen += int((valid & ~is_variant).sum())
    # a read descends through one new copy in half of the cycles on average
    expected = rate * cycles / 2
    assert 0.7 < (mismatches / bases_seen) / expected < 1.3


def test_sequencing_errors_follow_base_quality() -> None:
    params = SimulationParams.preset("smoke", n_variants=2, **{**CLEAN, "high_base_quality": 20})
    genome, loci = simulate(params)
    locus = loci[0]
    ref = window_codes(genome, locus, locus.r2_start)
    valid = np.arange(locus.r2_bases.shape[1]) < locus.pair_read_length[:, None]
    is_alt = locus.molecule_carries_alt[locus.pair_molecule][:, None]
    rate = (valid & (locus.r2_bases != ref) & ~is_alt).sum() / (valid & ~is_alt).sum()
    assert 0.008 < rate < 0.012
    assert (locus.r2_quality == 20).all()


def test_contaminant_snps_appear_only_in_contaminant_molecules() -> None:
    params = SimulationParams.preset(
        "smoke",
        tumor_fraction=0.0,
        contamination_fraction=0.3,
        n_variants=4,
        molecules_per_locus=1000,
        **CLEAN,
    )
    genome, loci = simulate(params)
    for locus in loci:
        snps = genome.contaminant_snps[locus.locus_index]
        assert len(snps) == params.contamination_snps_per_locus
        for snp in snps:
            assert genome.contigs[snp.chrom][snp.start0] == snp.ref
            offset = snp.start0 - locus.r1_start
            covered = (offset >= 0) & (offset < locus.pair_read_length)
            rows = np.flatnonzero(covered)
            base = locus.r1_bases[rows, offset[rows]]
            carriers = locus.pair_molecule[rows][base == BASES.index(snp.alt)]
            assert locus.molecule_is_contaminant[carriers].all()
            covered_molecules = np.unique(locus.pair_molecule[rows])
            contaminants = covered_molecules[locus.molecule_is_contaminant[covered_molecules]]
            share = np.isin(contaminants, carriers).mean()
            assert abs(share - snp.allele_fraction) < 0.15


def test_truth_counts_damage_that_mimics_the_variant() -> None:
    params = SimulationParams.preset(
        "smoke", tumor_fraction=0.0, n_variants=20, **{**CLEAN, "artifact_rate": 0.05}
    )
    genome, loci = simulate(params)
    for locus in loci:
        variant = genome.variants[locus.locus_index]
        alt = BASES.index(variant.alt)
        offset = variant.start0 - locus.r1_start
        rows = np.flatnonzero((offset >= 0) & (offset < locus.pair_read_length))
        alt_strands = {
            (int(m), int(s))
            for m, s, b in zip(
                locus.pair_molecule[rows],
                locus.pair_strand[rows],
                locus.r1_bases[rows, offset[rows]],
                strict=True,
            )
            if b == alt
        }
        # every strand R1 shows as alt was damaged; truth counts at least those
        assert len(alt_strands) <= locus.truth.n_damage_alt_strands
        possible = {("C", "T"), ("G", "T"), ("G", "A"), ("C", "A")}
        if (variant.ref, variant.alt) not in possible:
            assert locus.truth.n_damage_alt_strands == 0
    assert sum(lo.truth.n_damage_alt_strands for lo in loci) > 0
