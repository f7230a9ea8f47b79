"""ML observation features: the pinned feature list; extraction agrees with the evidence stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from precise_mrd.core.background import sbs96_index
from precise_mrd.core.simulate import SimulationParams
from precise_mrd.io.fasta import open_reference
from precise_mrd.io.vcf import read_variants
from precise_mrd.ml.features import (
    FEATURE_NAMES,
    KIND_BACKGROUND_ERROR,
    KIND_BACKGROUND_REF,
    KIND_VARIANT,
    class_features,
    extract_observations,
)
from precise_mrd.pipeline.consensus import group_and_call_consensus
from precise_mrd.pipeline.evidence import collect_evidence
from precise_mrd.pipeline.params import PipelineParams
from precise_mrd.pipeline.run import consensus_params_from
from precise_mrd.pipeline.simulation import simulate_sample

# The only features a model may see. Changing this list means re-training and re-shipping models.
EXPECTED = (
    "base_quality",
    "family_size",
    "min_strand_depth",
    "is_duplex",
    "consensus_error_rate",
    "read_end_distance",
    "mapping_quality",
    "fragment_length",
    "sbs96_class",
    "substitution",
    "is_cpg",
    "other_mismatches",
    "template_strand",
)
FORBIDDEN = ("name", "truth", "umi", "mutant", "tumor", "tumour", "label", "seed", "sim", "read_id")


def test_feature_list_is_pinned_and_carries_no_truth() -> None:
    assert FEATURE_NAMES == EXPECTED
    for feature in FEATURE_NAMES:
        assert not any(word in feature for word in FORBIDDEN), feature


def test_class_features() -> None:
    cpg_ct = sbs96_index("ACG", "T")
    t_to_c = sbs96_index("ATA", "C")
    substitution, is_cpg = class_features(np.array([cpg_ct, t_to_c]))
    assert substitution.tolist() == [2, 4]
    assert is_cpg.tolist() == [1, 0]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    out = tmp_path_factory.mktemp("ml-features")
    params = SimulationParams.preset(
        "smoke", seed=7, tumor_fraction=0.05, artifact_rate=1e-3, molecules_per_locus=300
    )
    sim = simulate_sample(out, params)
    consensus = out / "consensus.bam"
    group_and_call_consensus(
        sim.bam_path,
        consensus,
        params=consensus_params_from(PipelineParams()),
        strategy="paired",
    )
    return consensus, sim.reference_path, sim.vcf_path


def test_extraction_counts_match_the_evidence_stage(sample: tuple[Path, Path, Path]) -> None:
    consensus, reference, vcf = sample
    variants = read_variants(vcf, open_reference(reference))
    table = extract_observations(consensus, reference, variants, np.random.default_rng(0))
    evidence = collect_evidence(consensus, reference, variants)
    assert table.features.shape == (len(table), len(FEATURE_NAMES))
    n_alt_total = 0
    for i, vc in enumerate(evidence.variants):
        at = (table.kind == KIND_VARIANT) & (table.variant_index == i)
        assert at.sum() == vc.n_simplex + vc.n_duplex
        assert table.is_alt[at].sum() == vc.alt
        assert (table.duplex[at] == 1).sum() == vc.n_duplex
        n_alt_total += vc.alt
    assert n_alt_total > 0  # TF 0.05: there are mutant molecules to see
    errors = table.kind == KIND_BACKGROUND_ERROR
    assert errors.sum() == evidence.background.errors.sum()
    assert errors.sum() > 0
    # sampled reference rows: three classes each, none of them a mismatch
    refs = table.kind == KIND_BACKGROUND_REF
    assert refs.sum() % 3 == 0 and refs.sum() > 0
    assert table.is_ref[refs].all() and not table.is_alt[refs].any()


def test_feature_values_are_in_range(sample: tuple[Path, Path, Path]) -> None:
    consensus, reference, vcf = sample
    variants = read_variants(vcf, open_reference(reference))
    table = extract_observations(consensus, reference, variants, np.random.default_rng(1))
    col = {name: table.features[:, i] for i, name in enumerate(FEATURE_NAMES)}
    assert (col["base_quality"] >= 30).all()  # min_base_quality default
    assert (col["mapping_quality"] >= 20).all()
    assert (col["family_size"] >= 1).all()
    assert set(np.unique(col["is_duplex"])) <= {0.0, 1.0}
    assert (col["min_strand_depth"][col["is_duplex"] == 1] >= 1).all()
    assert (col["min_strand_depth"][col["is_duplex"] == 0] == 0).all()
    assert ((col["sbs96_class"] >= 0) & (col["sbs96_class"] < 96)).all()
    assert (col["read_end_distance"] >= 0).all() and (col["read_end_distance"] < 142).all()
    assert (col["fragment_length"] > 0).all()
    assert (col["other_mismatches"] >= 0).all()
    # at a tracked variant, a molecule showing the alt is scored with the variant's class
    at = table.kind == KIND_VARIANT
    for i, v in enumerate(variants):
        rows = at & (table.variant_index == i)
        ctx = open_reference(reference).fetch(v.chrom, v.start0 - 1, v.start0 + 2).upper()
        assert (col["sbs96_class"][rows] == sbs96_index(ctx, v.alt)).all()


def test_seeded_reference_sample_is_reproducible(sample: tuple[Path, Path, Path]) -> None:
    consensus, reference, vcf = sample
    variants = read_variants(vcf, open_reference(reference))
    a = extract_observations(consensus, reference, variants, np.random.default_rng(3))
    b = extract_observations(consensus, reference, variants, np.random.default_rng(3))
    np.testing.assert_array_equal(a.features, b.features)
