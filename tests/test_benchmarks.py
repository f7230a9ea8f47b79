"""Benchmarks of the pipeline's hot paths on fixed, seeded inputs (pytest-benchmark).

Each test times one public function, so that a regression shows as a number, and checks what
the call returned, so that a fast wrong answer fails like any other test:

=====================================  ==========================================================
BAM decode                             :func:`~precise_mrd.io.bam.summarise_records` over every
                                       chunk of the smoke sample (the group stage's pass), and
                                       :func:`~precise_mrd.io.bam_columns.decode_consensus_columns`
                                       of the grouped records (the consensus stage's)
grouping                               :func:`~precise_mrd.pipeline.group.prepare_grouping`
                                       (collect + UMI clustering, duplex strategy)
family consensus kernel                :func:`~precise_mrd.core.consensus.call_families`
duplex kernel                          :func:`~precise_mrd.core.consensus.call_duplex_rows`
background fit                         :meth:`~precise_mrd.core.background.BackgroundModel.fit`
sample likelihood                      :func:`~precise_mrd.core.calling.call_sample` (default
                                       bootstrap and personal-LoD replicates)
report rendering                       :func:`~precise_mrd.pipeline.report.render_report`
=====================================  ==========================================================

``make bench-kernels`` runs them without xdist and saves each run under ``.benchmarks/``;
``make bench-kernels BENCH_ARGS=--benchmark-compare`` compares with the last saved run, and
``BENCH_ARGS="--benchmark-compare --benchmark-compare-fail=mean:10%"`` fails on a slowdown.
Under xdist (``make test``) pytest-benchmark switches timing off and each benchmark runs its
function once, as a plain test.

# NB: the numba kernels load from the on-disk cache on their first call in a process (~0.2 s);
# every benchmark makes one call before timing, so that load is never timed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from precise_mrd.core.background import BackgroundModel
from precise_mrd.core.calling import CallingParams, SampleCall, VariantTable, call_sample
from precise_mrd.core.consensus import (
    NO_CALL,
    ConsensusParams,
    FamilyConsensus,
    call_duplex,
    call_duplex_rows,
    call_families,
)
from precise_mrd.core.evidence_sim import SimulatedSample, simulate_evidence
from precise_mrd.io.bam import STATUS_KEPT, iter_record_chunks, summarise_records
from precise_mrd.io.bam_columns import decode_consensus_columns
from precise_mrd.pipeline.group import PreparedGrouping, prepare_grouping
from precise_mrd.pipeline.report import render_report, summary_sentence
from precise_mrd.pipeline.simulation import SimulationOutputs

U8Array = npt.NDArray[np.uint8]
I64Array = npt.NDArray[np.int64]

CONSENSUS_PARAMS = ConsensusParams()
EVIDENCE_TUMOR_FRACTION = 2e-3


# --------------------------------------------------------------------------- seeded inputs


@dataclass(frozen=True)
class DuplexFamilies:
    """Raw reads of ``n_molecules`` duplex molecules: family ``2 i`` is strand ``/A`` and family
    ``2 i + 1`` strand ``/B`` of molecule ``i``; both copy ``truth[i]`` with 1% random base errors.
    Reads are rows of ``bases``/``quals``; family ``f`` starts at row ``offsets[f]``."""

    truth: U8Array  # (n_molecules, width)
    bases: U8Array  # (n_reads, width), codes A=0 C=1 G=2 T=3
    quals: U8Array
    offsets: I64Array
    family_sizes: I64Array  # reads per family, 1..8

    @property
    def family_truth(self) -> U8Array:
        return np.repeat(self.truth, 2, axis=0)


def build_duplex_families(
    rng: np.random.Generator, *, n_molecules: int = 1000, width: int = 150
) -> DuplexFamilies:
    truth = rng.integers(0, 4, size=(n_molecules, width)).astype(np.uint8)
    family_sizes = rng.integers(1, 9, size=2 * n_molecules)
    read_truth = np.repeat(np.repeat(truth, 2, axis=0), family_sizes, axis=0)
    is_error = rng.random(read_truth.shape) < 0.01
    shifted = (read_truth + rng.integers(1, 4, size=read_truth.shape)) % 4
    bases = np.where(is_error, shifted, read_truth).astype(np.uint8)
    quals = rng.integers(25, 38, size=bases.shape).astype(np.uint8)
    offsets = np.concatenate([[0], np.cumsum(family_sizes)[:-1]]).astype(np.int64)
    return DuplexFamilies(truth, bases, quals, offsets, family_sizes.astype(np.int64))


@pytest.fixture(scope="module")
def duplex_families() -> DuplexFamilies:
    return build_duplex_families(np.random.default_rng(7))


@pytest.fixture(scope="module")
def evidence_sample() -> SimulatedSample:
    """Per-variant and background counts of a positive sample (30 loci, TF 2e-3, seed 5)."""
    return simulate_evidence(
        np.random.default_rng(5),
        n_variants=30,
        n_simplex=2000,
        n_duplex=2000,
        tumor_fraction=EVIDENCE_TUMOR_FRACTION,
        n_background_positions=5000,
    )


@pytest.fixture(scope="module")
def background_model(evidence_sample: SimulatedSample) -> BackgroundModel:
    return BackgroundModel.fit(evidence_sample.evidence.background)


def _call(sample: SimulatedSample, model: BackgroundModel) -> tuple[SampleCall, VariantTable]:
    """The sample call with the pipeline's default calling settings and a fixed seed."""
    variants = list(sample.evidence.variants)
    return call_sample(variants, model, CallingParams(), np.random.default_rng(1))


@pytest.fixture(scope="module")
def sample_call(
    evidence_sample: SimulatedSample, background_model: BackgroundModel
) -> tuple[SampleCall, VariantTable]:
    return _call(evidence_sample, background_model)


@pytest.fixture(scope="module")
def grouped(smoke_sample: SimulationOutputs) -> PreparedGrouping:
    return prepare_grouping(smoke_sample.bam_path, strategy="paired")


# --------------------------------------------------------------------------- BAM decode


def decode_bam_records(bam_path: Path) -> tuple[int, int]:
    """The group stage's pass over a BAM: (records, records kept for grouping)."""
    umi_tag = np.frombuffer(b"RX", dtype=np.uint8)
    order_state = np.array([-1, -1, 0], dtype=np.int64)
    n_records = n_kept = 0
    for chunk in iter_record_chunks(bam_path):
        status, *_, first_unsorted = summarise_records(
            chunk, umi_tag, False, ord("_"), 0, order_state
        )
        assert first_unsorted == -1
        n_records += len(status)
        n_kept += int(np.count_nonzero(status == STATUS_KEPT))
    return n_records, n_kept


def test_bam_decode_records(benchmark: Any, smoke_sample: SimulationOutputs) -> None:
    decode_bam_records(smoke_sample.bam_path)
    n_records, n_kept = benchmark(decode_bam_records, smoke_sample.bam_path)
    assert n_records == n_kept == smoke_sample.n_records


def decode_columns(chunks: list[U8Array]) -> Iterator[Any]:
    for chunk in chunks:
        yield decode_consensus_columns(chunk)


def test_bam_decode_consensus_columns(benchmark: Any, grouped: PreparedGrouping) -> None:
    chunks = list(grouped.tagged_chunks([0]))
    list(decode_columns(chunks))
    parts = benchmark(lambda: list(decode_columns(chunks)))
    assert sum(len(part) for part in parts) == grouped.n_records
    molecules = np.unique(np.concatenate([part.mi_codes for part in parts]))
    assert len(molecules) == grouped.n_molecules
    strands = np.concatenate([part.strand_b for part in parts])
    assert set(strands.tolist()) == {0, 1}  # both /A and /B reads decoded


# --------------------------------------------------------------------------- grouping


def test_group_reads_by_umi(benchmark: Any, smoke_sample: SimulationOutputs) -> None:
    prepare_grouping(smoke_sample.bam_path, strategy="paired")
    prepared = benchmark(prepare_grouping, smoke_sample.bam_path, strategy="paired")
    assert prepared.n_records == smoke_sample.n_records
    assert not any(prepared.skipped.values())
    assert int(prepared.family_sizes.sum()) == smoke_sample.n_read_pairs
    # NB: molecules of one bundle whose UMIs lie within one edit merge, so a few go missing
    assert 0.95 * smoke_sample.n_molecules <= prepared.n_molecules <= smoke_sample.n_molecules


# --------------------------------------------------------------------------- consensus kernels


def test_family_consensus_kernel(benchmark: Any, duplex_families: DuplexFamilies) -> None:
    families = duplex_families
    args = (families.bases, families.quals, families.offsets, CONSENSUS_PARAMS)
    call_families(*args)
    consensus = benchmark(call_families, *args)
    truth = families.family_truth
    assert consensus.bases.shape == truth.shape
    single = families.family_sizes == 1
    read_of_single = families.bases[families.offsets[single]]
    assert np.array_equal(consensus.bases[single], read_of_single)
    large = families.family_sizes >= 3
    assert np.mean(consensus.bases[large] == truth[large]) > 0.999
    assert np.array_equal(consensus.depths.sum(axis=1), families.family_sizes * truth.shape[1])


def _rows(consensus: FamilyConsensus, rows: I64Array) -> FamilyConsensus:
    return FamilyConsensus(
        consensus.bases[rows],
        consensus.quals[rows],
        consensus.raw_bases[rows],
        consensus.counts[rows],
        consensus.depths[rows],
        consensus.errors[rows],
    )


def test_duplex_consensus_kernel(benchmark: Any, duplex_families: DuplexFamilies) -> None:
    families = duplex_families
    single_strand = call_families(
        families.bases, families.quals, families.offsets, CONSENSUS_PARAMS
    )
    a_rows = np.arange(0, len(families.offsets), 2, dtype=np.int64)
    b_rows = a_rows + 1
    args = (single_strand, a_rows, b_rows, CONSENSUS_PARAMS)
    call_duplex_rows(*args)
    duplex = benchmark(call_duplex_rows, *args)
    # the compiled rows kernel agrees with the numpy reference on copied rows
    reference = call_duplex(
        _rows(single_strand, a_rows), _rows(single_strand, b_rows), CONSENSUS_PARAMS
    )
    for name in ("bases", "quals", "depths", "errors"):
        assert np.array_equal(getattr(duplex, name), getattr(reference, name)), name
    assert np.mean(duplex.bases == families.truth) > 0.999
    assert np.mean(duplex.bases == NO_CALL) < 0.005


# --------------------------------------------------------------------------- background, calling


def test_background_fit(benchmark: Any, evidence_sample: SimulatedSample) -> None:
    counts = evidence_sample.evidence.background
    BackgroundModel.fit(counts)
    model = benchmark(BackgroundModel.fit, counts)
    true_pooled = evidence_sample.class_rates.mean(axis=(1, 2))  # per molecule type
    assert np.allclose(model.pooled_rate, true_pooled, rtol=0.2)
    assert (model.class_rates >= model.rate_floor).all()
    assert (model.class_rates < 1e-2).all()
    true_simplex = evidence_sample.class_rates[0].mean(axis=0)
    assert np.corrcoef(np.log(model.class_rates[0]), np.log(true_simplex))[0, 1] > 0.5


def test_sample_likelihood_call(
    benchmark: Any, evidence_sample: SimulatedSample, background_model: BackgroundModel
) -> None:
    # NB: ~0.25 s a call (2,000 bootstrap replicates, 400 LoD simulations): fixed rounds
    call, table = benchmark.pedantic(
        _call, args=(evidence_sample, background_model), rounds=5, iterations=1, warmup_rounds=1
    )
    assert call.decision == "positive"
    low, high = call.tumor_fraction_ci
    assert low < EVIDENCE_TUMOR_FRACTION < high
    assert 0.5 < call.tumor_fraction / EVIDENCE_TUMOR_FRACTION < 2.0
    assert np.isfinite(call.profile_log_likelihood).all()
    assert call.personal_lod is not None and call.personal_lod < EVIDENCE_TUMOR_FRACTION
    assert len(table.rows) == 30


# --------------------------------------------------------------------------- report


def test_report_rendering(
    benchmark: Any,
    sample_call: tuple[SampleCall, VariantTable],
    background_model: BackgroundModel,
) -> None:
    call, table = sample_call
    call_document = call.to_dict()
    arguments = {
        "sample_name": "BENCH",
        "sample_call": call_document,
        "variants": table.to_columns(),
        "metrics": {"consensus": {"family_size_histogram": {1: 620, 2: 410, 3: 280, 4: 150}}},
        "background": background_model.class_table(),
        "config_hash": "0" * 16,
    }
    # NB: ~1 s a call (four matplotlib figures): three rounds, no warm-up round
    html = benchmark.pedantic(
        lambda: render_report(**arguments), rounds=3, iterations=1, warmup_rounds=0
    )
    assert '<div class="decision">positive</div>' in html
    assert summary_sentence(call_document).startswith("Tumour DNA detected")
    assert "Tumour DNA detected" in html
    assert html.count("data:image/png;base64,") == 4
    assert html.count("<tr") >= len(table.rows)
