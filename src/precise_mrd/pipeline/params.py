"""PipelineParams: the one frozen, validated configuration object of a run.

A config is YAML (or a dict) with one section per stage. Every key has a default, so an empty file
is a valid config. Unknown keys are errors (a typo must not be silently ignored).

>>> params = PipelineParams.from_mapping({"seed": 7, "umi": {"strategy": "paired"}})
>>> params.umi.strategy, params.consensus.min_reads
('paired', (1, 1, 0))
>>> len(params.config_hash)
64
>>> try:
...     PipelineParams.from_mapping({"calling": {"alpha": 2}})
... except ConfigError as error:
...     print(error.path, "|", error.problem)
calling.alpha | Input should be less than 1 (got 2)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from precise_mrd.core.errors import ConfigError, InputFileError

UmiStrategy = Literal["identity", "edit", "adjacency", "directional", "paired"]
CONFIG_FIX = "see `precise-mrd run --help` and docs/configuration.md for allowed values"


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class UmiSection(_Section):
    """How reads are grouped into molecules."""

    strategy: UmiStrategy = "paired"
    max_edits: int = Field(1, ge=0, le=3)
    umi_tag: str = Field("RX", min_length=2, max_length=2)
    umi_from_read_name: bool = False
    umi_separator: str = Field("_", min_length=1, max_length=1)
    min_mapping_quality: int = Field(0, ge=0, le=255)


class ConsensusSection(_Section):
    """fgbio-style consensus quality model (Phred-scaled error rates)."""

    error_rate_pre_umi: int = Field(45, ge=1, le=93)
    error_rate_post_umi: int = Field(40, ge=1, le=93)
    min_input_base_quality: int = Field(10, ge=0, le=93)
    min_reads: tuple[int, int, int] = (1, 1, 0)

    @field_validator("min_reads", mode="before")
    @classmethod
    def _expand_min_reads(cls, value: Any) -> Any:
        # NB: fgbio accepts 1, 2 or 3 numbers: "2" means (2, 2, 2), "2 1" means (2, 1, 1).
        if isinstance(value, int):
            return (value, value, value)
        if isinstance(value, list | tuple) and len(value) == 2:
            return (value[0], value[1], value[1])
        return value

    @field_validator("min_reads")
    @classmethod
    def _check_min_reads(cls, value: tuple[int, int, int]) -> tuple[int, int, int]:
        total, strand_a, strand_b = value
        if min(value) < 0 or total < 1:
            raise ValueError(f"min_reads must be >= 0 with the first >= 1; got {list(value)}")
        if strand_b > strand_a or strand_a > total:
            raise ValueError(
                f"min_reads must be non-increasing (total >= A >= B); got {list(value)}"
            )
        return value


class EvidenceSection(_Section):
    """Which consensus bases count as evidence, and where the background is measured."""

    min_base_quality: int = Field(30, ge=0, le=93)
    min_mapping_quality: int = Field(20, ge=0, le=255)
    flank: int = Field(100, ge=5, le=100_000)
    variant_exclusion_window: int = Field(5, ge=0, le=1000)


class CallingSection(_Section):
    """Sample-level decision thresholds."""

    alpha: float = Field(0.05, gt=0, lt=1)
    min_informative_molecules: int = Field(1000, ge=0)
    n_bootstrap: int = Field(2000, ge=100, le=1_000_000)


class MlSection(_Section):
    """Optional artefact filter: a tabular ML model or a network (off by default: see the model
    cards for their held-out figures). One of the two at a time; ``threshold`` overrides the one
    in the chosen model's card."""

    use_ml_calling: bool = False
    model_type: Literal["ensemble", "random_forest", "xgboost", "lightgbm"] = "ensemble"
    use_deep_learning: bool = False
    dl_model_type: Literal["cnn", "cnn_lstm"] = "cnn"
    threshold: float | None = Field(None, gt=0, le=1)

    @model_validator(mode="after")
    def _one_scorer(self) -> MlSection:
        if self.use_ml_calling and self.use_deep_learning:
            raise ValueError(
                "use_ml_calling and use_deep_learning are both true; choose one artefact filter"
            )
        return self

    @property
    def filter_model(self) -> str | None:
        """The model type of the artefact filter in use, or ``None`` when it is off."""
        if self.use_deep_learning:
            return self.dl_model_type
        return self.model_type if self.use_ml_calling else None


class ValidationSection(_Section):
    """The dilution series a validation job runs (only read by the ``validation-dilution`` job)."""

    preset: Literal["smoke", "standard"] = "smoke"
    tumor_fractions: tuple[float, ...] = (0.0, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3)
    replicates: int = Field(3, ge=1, le=1000)
    blank_replicates: int | None = Field(None, ge=1, le=10_000)
    molecules_per_locus: int | None = Field(None, ge=10, le=1_000_000)
    n_variants: int | None = Field(None, ge=1, le=10_000)

    @field_validator("tumor_fractions")
    @classmethod
    def _check_fractions(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(not 0.0 <= fraction < 1.0 for fraction in value):
            raise ValueError(f"tumor_fractions must be in [0, 1); got {list(value)}")
        return value


class PipelineParams(_Section):
    """The whole configuration of a run. Build with :meth:`from_mapping` or :meth:`from_yaml`."""

    seed: int = Field(42, ge=0, le=2**32 - 1)
    threads: int = Field(1, ge=1, le=256)
    umi: UmiSection = UmiSection()
    consensus: ConsensusSection = ConsensusSection()
    evidence: EvidenceSection = EvidenceSection()
    calling: CallingSection = CallingSection()
    ml: MlSection = MlSection()
    validation: ValidationSection = ValidationSection()

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> PipelineParams:
        """Validate a plain mapping; errors become :class:`ConfigError` with the dotted key."""
        try:
            return cls.model_validate(dict(mapping))
        except ValidationError as error:
            first = error.errors()[0]
            path = ".".join(str(part) for part in first["loc"]) or "<root>"
            message = first["msg"]
            if "input" in first and first["type"] != "extra_forbidden":
                message = f"{message} (got {first['input']!r})"
            if first["type"] == "extra_forbidden":
                message = "unknown key"
            raise ConfigError(path, message, CONFIG_FIX) from None

    @classmethod
    def from_yaml(cls, path: Path) -> PipelineParams:
        """Read and validate a YAML config file."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InputFileError(str(path), "config file not found", "check the path") from None
        except OSError as error:
            raise InputFileError(
                str(path), f"cannot read ({error.strerror})", "check permissions"
            ) from None
        return cls.from_yaml_text(text, source=str(path))

    @classmethod
    def from_yaml_text(cls, text: str, *, source: str = "config") -> PipelineParams:
        """Validate YAML text (as uploaded to the service)."""
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise InputFileError(
                source, f"is not valid YAML ({error})", "fix the YAML syntax"
            ) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise InputFileError(
                source, "top level must be a mapping of sections", "see docs/configuration.md"
            )
        return cls.from_mapping(loaded)

    def with_overrides(self, **overrides: Any) -> PipelineParams:
        """Return a copy with top-level keys replaced, validated again."""
        merged = self.model_dump()
        merged.update(overrides)
        return PipelineParams.from_mapping(merged)

    def canonical_json(self) -> str:
        """The config as sorted, compact JSON: the input of :attr:`config_hash`."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    @property
    def config_hash(self) -> str:
        """SHA-256 of the canonical JSON: equal configs have equal hashes."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def to_yaml(self) -> str:
        """The resolved config as YAML, with its hash as a comment on the first line."""
        body = yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)
        return f"# config_hash: {self.config_hash}\n{body}"
