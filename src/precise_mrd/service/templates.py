"""Named starting configs for the service: each one a PipelineParams YAML with a description.

``POST /config-from-template`` merges a user's overrides into one of these and validates the
result, so a client never has to write a whole config by hand. Overrides are nested mappings or
dotted keys (``{"calling.alpha": 0.01}`` equals ``{"calling": {"alpha": 0.01}}``).

>>> sorted(TEMPLATES)
['duplex-high-depth', 'smoke', 'standard-panel', 'validation-dilution']
>>> params = params_from_template("smoke", {"calling.alpha": 0.01})
>>> params.calling.alpha, params.calling.n_bootstrap
(0.01, 200)
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from precise_mrd.core.errors import ConfigError
from precise_mrd.pipeline.params import PipelineParams


@dataclass(frozen=True)
class ConfigTemplate:
    """A named config: ``yaml`` is a valid PipelineParams document."""

    name: str
    description: str
    yaml: str
    is_runnable: bool = True
    note: str | None = None

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("-", "").isalnum():
            raise ValueError(f"template name must be letters, digits and '-'; got {self.name!r}")
        PipelineParams.from_yaml_text(self.yaml, source=f"template {self.name}")

    def mapping(self) -> dict[str, Any]:
        """The template as a plain nested mapping."""
        loaded = yaml.safe_load(self.yaml) or {}
        assert isinstance(loaded, dict)
        return loaded


_SMOKE = """\
# Seconds-long run on the small simulated sample: a check that the service works end to end.
seed: 42
threads: 1
umi:
  strategy: paired
consensus:
  min_reads: [1, 1, 0]
calling:
  alpha: 0.05
  min_informative_molecules: 100
  n_bootstrap: 200
"""

_STANDARD_PANEL = """\
# A tumour-informed panel of tens to hundreds of SNVs at typical cfDNA depth.
seed: 42
threads: 2
umi:
  strategy: paired
  max_edits: 1
consensus:
  error_rate_pre_umi: 45
  error_rate_post_umi: 40
  min_input_base_quality: 10
  min_reads: [1, 1, 0]
evidence:
  min_base_quality: 30
  min_mapping_quality: 20
calling:
  alpha: 0.05
  min_informative_molecules: 1000
  n_bootstrap: 2000
"""

_DUPLEX_HIGH_DEPTH = """\
# Deep duplex sequencing: demand both strands and larger families for the lowest error rate.
seed: 42
threads: 2
umi:
  strategy: paired
  max_edits: 1
consensus:
  error_rate_pre_umi: 45
  error_rate_post_umi: 40
  min_input_base_quality: 20
  min_reads: [3, 1, 1]
evidence:
  min_base_quality: 40
  min_mapping_quality: 30
calling:
  alpha: 0.01
  min_informative_molecules: 5000
  n_bootstrap: 5000
"""

_VALIDATION_DILUTION = """\
# A dilution series (LoB/LoD study): strict alpha, many bootstrap draws.
job_type: validation
seed: 42
threads: 2
umi:
  strategy: paired
consensus:
  min_reads: [2, 1, 1]
calling:
  alpha: 0.05
  min_informative_molecules: 1000
  n_bootstrap: 5000
validation:
  preset: smoke
  tumor_fractions: [0.0, 1.0e-5, 3.0e-5, 1.0e-4, 3.0e-4, 1.0e-3]
  replicates: 3
"""

TEMPLATES: dict[str, ConfigTemplate] = {
    template.name: template
    for template in (
        ConfigTemplate(
            "smoke",
            "Small and fast: the simulated smoke sample in seconds. Use it to check a deployment.",
            _SMOKE,
        ),
        ConfigTemplate(
            "standard-panel",
            "Defaults for a tumour-informed SNV panel (tens to hundreds of variants) at typical "
            "cfDNA depth; duplex-aware consensus, alpha 0.05.",
            _STANDARD_PANEL,
        ),
        ConfigTemplate(
            "duplex-high-depth",
            "Deep duplex data: at least 3 reads per molecule with both strands seen, Q40 evidence, "
            "alpha 0.01 and 5,000 informative molecules before a negative call is trusted.",
            _DUPLEX_HIGH_DEPTH,
        ),
        ConfigTemplate(
            "validation-dilution",
            "A dilution series (CLSI EP17-A2 LoB / probit LoD95 study): simulated blanks and "
            "tumour fractions 1e-5..1e-3 run through the pipeline; downloads validation.json "
            "and validation.html. Uploaded reads are not used.",
            _VALIDATION_DILUTION,
        ),
    )
}


def get_template(name: str) -> ConfigTemplate:
    """The template called ``name``; :class:`ConfigError` naming the choices otherwise."""
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ConfigError(
            "config_template",
            f"unknown template {name!r}",
            f"use one of {', '.join(sorted(TEMPLATES))} (GET /config-templates)",
        ) from None


def merge_overrides(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` (nested or dotted keys) into a copy of ``base``.

    >>> merge_overrides({"calling": {"alpha": 0.05, "n_bootstrap": 200}}, {"calling.alpha": 0.1})
    {'calling': {'alpha': 0.1, 'n_bootstrap': 200}}
    """
    merged: dict[str, Any] = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        parts = str(key).split(".")
        if any(not part for part in parts):
            raise ConfigError(str(key), "is not a valid key", "use section.key, e.g. calling.alpha")
        target = merged
        for part in parts[:-1]:
            child = target.get(part)
            if not isinstance(child, dict):
                child = {}
                target[part] = child
            target = child
        leaf = parts[-1]
        if isinstance(value, Mapping) and isinstance(target.get(leaf), dict):
            target[leaf] = merge_overrides(target[leaf], value)
        else:
            target[leaf] = copy.deepcopy(value)
    return merged


def params_from_template(name: str, overrides: Mapping[str, Any] | None = None) -> PipelineParams:
    """Validate template ``name`` with ``overrides`` applied."""
    template = get_template(name)
    return PipelineParams.from_mapping(merge_overrides(template.mapping(), overrides or {}))
