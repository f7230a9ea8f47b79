"""Apply the ML artefact filter to a sample's evidence without biasing the tumour-fraction model.

Each observation (:mod:`precise_mrd.ml.features`) gets an artefact probability; observations above
the model's threshold are dropped. Dropping only *alt* molecules would bias every estimate
downward and every background comparison in the caller's favour, so the same filter is applied to
numerator and denominators alike:

* at a tracked variant, **every informative molecule** (ref or alt) is scored as if it carried the
  variant's alt (same class features) and kept only if it passes. A true mutant molecule looks
  like an ordinary molecule with a different base, so the passing reference molecules measure how
  many true mutant molecules the filter also removes; ``P(alt | pass) = TF*AF + e'`` still holds;
* the background rate ``e'`` must be the error rate **among passing molecules**: background
  mismatches are scored exactly (every one of them), and the pass rate of ordinary molecules
  per (molecule type, SBS class) is measured on a seeded sample of background reference
  observations scored once per possible alternate. The adjusted counts are
  ``opportunities' = opportunities * f_ref(m, context)`` and
  ``errors' = errors * f_err(m, class) * f_ref(m, context) / f_ref(m, class)``, rounded, where
  ``f_err`` is the pass fraction of the background errors and ``f_ref`` that of reference
  molecules (shrunk toward the molecule-type mean with 20 pseudo-observations). The per-position
  counts used for locus dispersion are scaled by molecule type only (an approximation).

The result is an ordinary :class:`~precise_mrd.core.calling.Evidence`, so the statistical caller
runs unchanged on it: ``call_sample(apply_ml_filter(...).variants, BackgroundModel.fit(...), ...)``.

``model_type`` is a tabular type (:data:`precise_mrd.ml.ensemble.MODEL_TYPES`) or a network type
(:data:`precise_mrd.ml.deep.DL_MODEL_TYPES`); both score the same observations, the networks
from their sequence windows as well.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from precise_mrd.core.background import (
    N_CLASSES,
    N_CONTEXTS,
    BackgroundCounts,
    class_context,
)
from precise_mrd.core.calling import Evidence, VariantCounts
from precise_mrd.core.errors import InputDataError
from precise_mrd.core.records import Variant
from precise_mrd.ml.deep import DL_MODEL_TYPES, load_network
from precise_mrd.ml.ensemble import load_model
from precise_mrd.ml.features import (
    KIND_BACKGROUND_ERROR,
    KIND_BACKGROUND_REF,
    KIND_VARIANT,
    ObservationTable,
    extract_observations,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
_PSEUDO = 20.0


class ArtefactScorer(Protocol):
    """A loaded artefact model: tabular (``ensemble.LoadedModel``) or ``deep.LoadedNetwork``."""

    @property
    def needs_windows(self) -> bool: ...

    @property
    def threshold(self) -> float: ...

    def score(self, table: ObservationTable) -> FloatArray: ...


def load_scorer(model_type: str, model_path: Path | None = None) -> ArtefactScorer:
    """The shipped (or given) model of ``model_type``: a tabular type or a network type."""
    if model_type in DL_MODEL_TYPES:
        return load_network(model_type, model_path=model_path)
    return load_model(model_type, model_path=model_path)


def _pass_fractions(
    table: ObservationTable, passed: npt.NDArray[np.bool_], kind: int
) -> FloatArray:
    """Shrunk pass fraction per (molecule type, class) of observations of ``kind``."""
    out = np.ones((2, N_CLASSES))
    for m in (0, 1):
        sel = (table.kind == kind) & (table.duplex == m)
        n = np.bincount(table.sbs_class[sel], minlength=N_CLASSES).astype(float)
        k = np.bincount(table.sbs_class[sel & passed], minlength=N_CLASSES).astype(float)
        pooled = (k.sum() + 1.0) / (n.sum() + 1.0)
        out[m] = (k + _PSEUDO * pooled) / (n + _PSEUDO)
    return out


def filter_variant_counts(
    original: VariantCounts, table: ObservationTable, passed: npt.NDArray[np.bool_], index: int
) -> VariantCounts:
    """Counts of variant ``index`` from its passing observations."""
    sel = (table.kind == KIND_VARIANT) & (table.variant_index == index) & passed
    alt = table.is_alt[sel]
    duplex, template = table.duplex[sel], table.template[sel]
    # NB: as the evidence stage: a molecule seen on both strands counts on each
    both = (
        np.zeros(len(template), bool)
        if table.both_strands is None
        else table.both_strands[sel] == 1
    )
    top, bottom = (template == 0) | both, (template == 1) | both
    return replace(
        original,
        n_simplex=int((duplex == 0).sum()),
        alt_simplex=int((alt & (duplex == 0)).sum()),
        n_duplex=int((duplex == 1).sum()),
        alt_duplex=int((alt & (duplex == 1)).sum()),
        n_forward=int(top.sum()),
        n_reverse=int(bottom.sum()),
        alt_forward=int((alt & top).sum()),
        alt_reverse=int((alt & bottom).sum()),
        alt_read_end_distances=tuple(int(d) for d in table.read_end_distance[sel][alt]),
    )


def filter_background(
    background: BackgroundCounts, table: ObservationTable, passed: npt.NDArray[np.bool_]
) -> BackgroundCounts:
    """Background counts as if measured on passing molecules only (module docstring)."""
    f_err = _pass_fractions(table, passed, KIND_BACKGROUND_ERROR)
    f_ref = _pass_fractions(table, passed, KIND_BACKGROUND_REF)
    ctx_of_class = class_context(np.arange(N_CLASSES))
    f_ctx = np.ones((2, N_CONTEXTS))
    for k in range(N_CONTEXTS):
        f_ctx[:, k] = f_ref[:, ctx_of_class == k].mean(axis=1)
    opportunities = np.rint(background.opportunities * f_ctx[:, None, :]).astype(np.int64)
    scale = f_err * f_ctx[:, ctx_of_class] / f_ref
    errors = np.rint(background.errors * scale[:, None, :]).astype(np.int64)
    # NB: rounding may push a context's errors above its opportunities only when both are tiny
    errors = np.minimum(errors, opportunities[:, :, ctx_of_class])
    raw = background.errors.sum(axis=(1, 2)).astype(float)
    ratio = np.where(raw > 0, errors.sum(axis=(1, 2)) / np.maximum(raw, 1.0), 1.0)
    opp_scale = f_ctx.mean(axis=1)
    pos_opp = np.rint(background.position_opportunities * opp_scale[:, None]).astype(np.int64)
    pos_err = np.minimum(
        np.rint(background.position_errors * ratio[:, None]).astype(np.int64), pos_opp
    )
    return BackgroundCounts(
        errors=errors,
        opportunities=opportunities,
        position_context=background.position_context,
        position_errors=pos_err,
        position_opportunities=pos_opp,
    )


def apply_ml_filter(
    evidence: Evidence,
    consensus_bam_path: Path,
    reference_path: Path,
    variants: Sequence[Variant],
    model_type: str = "ensemble",
    *,
    model_path: Path | None = None,
    threshold: float | None = None,
    seed: int = 0,
    regions: Sequence[tuple[str, int, int]] | None = None,
    flank: int = 100,
    min_base_quality: int = 30,
    min_mapping_quality: int = 20,
    variant_exclusion_window: int = 5,
) -> Evidence:
    """``evidence`` with artefact-filtered variant and background counts.

    ``variants`` and the evidence options must be those ``evidence`` was collected with;
    ``threshold`` defaults to the one in the model card; ``seed`` seeds the sample of background
    reference observations.
    """
    if len(variants) != len(evidence.variants) or any(
        vc.variant != v for vc, v in zip(evidence.variants, variants, strict=True)
    ):
        raise InputDataError(
            "variants",
            "do not match the variants the evidence was collected for",
            "pass the same variant list to collect_evidence and apply_ml_filter",
        )
    model = load_scorer(model_type, model_path)
    cut = model.threshold if threshold is None else threshold
    if not 0.0 < cut <= 1.0:
        raise InputDataError("threshold", f"must be in (0, 1]; got {cut}", "use e.g. 0.5")
    table = extract_observations(
        consensus_bam_path,
        reference_path,
        variants,
        np.random.default_rng(seed),
        regions=regions,
        flank=flank,
        min_base_quality=min_base_quality,
        min_mapping_quality=min_mapping_quality,
        variant_exclusion_window=variant_exclusion_window,
        with_windows=model.needs_windows,
    )
    passed = model.score(table) <= cut
    counts = tuple(
        filter_variant_counts(vc, table, passed, i) for i, vc in enumerate(evidence.variants)
    )
    return Evidence(
        variants=counts,
        background=filter_background(evidence.background, table, passed),
        n_records=evidence.n_records,
        n_records_skipped=evidence.n_records_skipped,
    )
