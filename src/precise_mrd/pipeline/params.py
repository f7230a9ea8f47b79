"""PipelineParams: the one frozen, validated configuration object of a run.

A config is YAML (or a dict) with one section per stage. Every key has a default, so an empty file
is a valid config. Unknown keys are errors (a typo must not be silently ignored). ``job_type``
says what a config runs: one sample (``sample``, the default) or a dilution series
(``validation``, which reads the ``validation`` section); it is never inferred from which sections
are present. A config is at most :data:`MAX_CONFIG_BYTES`; every entry point (the CLI's
``--config``, the service's endpoints) refuses a larger one with :func:`check_config_size` before
anything parses it. Every key is documented in docs/configuration.md, generated from the
``Field`` descriptions below by ``precise-mrd config-docs`` (:mod:`.config_docs`).

>>> params = PipelineParams.from_mapping({"seed": 7, "umi": {"strategy": "paired"}})
>>> params.umi.strategy, params.consensus.min_reads
('paired', (1, 1, 0))
>>> len(params.config_hash), params.job_type
(64, 'sample')
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
from precise_mrd.io.config_yaml import ConfigYamlError, load_config_yaml

UmiStrategy = Literal["auto", "identity", "edit", "adjacency", "directional", "paired"]
JobType = Literal["sample", "validation"]
CONFIG_FIX = "see `precise-mrd run --help` and docs/configuration.md for allowed values"
#: the largest config (YAML text, uploaded file or JSON overrides) any entry point accepts
MAX_CONFIG_BYTES = 256 * 1024
CONFIG_SIZE_FIX = (
    "a config is a few kilobytes of YAML (docs/configuration.md); check that the config, "
    "not a data file, is being sent"
)


def config_size_problem(n_bytes: int) -> str:
    """The words every entry point uses for a config over :data:`MAX_CONFIG_BYTES`.

    >>> config_size_problem(300_000)
    'is 300000 bytes; a config may be at most 262144 bytes (256 KiB)'
    """
    return f"is {n_bytes} bytes; a config may be at most {MAX_CONFIG_BYTES} bytes (256 KiB)"


def check_config_size(n_bytes: int, *, source: str) -> None:
    """Refuse a config of ``n_bytes`` over :data:`MAX_CONFIG_BYTES` (call it before parsing).

    >>> check_config_size(10, source="config_yaml")
    >>> try:
    ...     check_config_size(MAX_CONFIG_BYTES + 1, source="config_yaml")
    ... except ConfigError as error:
    ...     print(error.path, "|", error.problem)
    config_yaml | is 262145 bytes; a config may be at most 262144 bytes (256 KiB)
    """
    if n_bytes > MAX_CONFIG_BYTES:
        raise ConfigError(source, config_size_problem(n_bytes), CONFIG_SIZE_FIX)


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class UmiSection(_Section):
    """How reads are grouped into molecules."""

    strategy: UmiStrategy = Field(
        "auto",
        description="How the UMIs of one template position are clustered into molecules: "
        "`auto` (chosen from the reads: `paired` when every UMI is duplex `A-B`, `directional` "
        "when none is; a BAM mixing both is an error), `identity` (exact match), `edit` (single "
        "linkage within `max_edits` mismatches), `adjacency` and `directional` (UMI-tools' "
        "network rules), `paired` (duplex: `A-B` equals `B-A`, the two strands kept apart as "
        "`/A` and `/B`). The strategy used is in metrics.json (`grouping.strategy`) and the "
        "report.",
    )
    max_edits: int = Field(
        1, ge=0, le=3, description="Mismatches allowed between two UMIs of one molecule."
    )
    umi_tag: str = Field(
        "RX",
        min_length=2,
        max_length=2,
        description="SAM tag that holds the UMI (duplex UMIs as `A-B`).",
    )
    umi_from_read_name: bool = Field(
        False,
        description="Take the UMI from the end of the read name instead of `umi_tag`.",
    )
    umi_separator: str = Field(
        "_",
        min_length=1,
        max_length=1,
        description="The character before the UMI in a read name (with `umi_from_read_name`).",
    )
    min_mapping_quality: int = Field(
        0, ge=0, le=255, description="Reads below this mapping quality are not grouped."
    )


class ConsensusSection(_Section):
    """fgbio-style consensus quality model (Phred-scaled error rates)."""

    error_rate_pre_umi: int = Field(
        45,
        ge=1,
        le=93,
        description="Phred-scaled rate of errors made before the UMIs were attached (copied "
        "into every read of a family); caps the consensus quality near this value.",
    )
    error_rate_post_umi: int = Field(
        40,
        ge=1,
        le=93,
        description="Phred-scaled rate of errors made after the UMIs were attached (PCR, "
        "sequencing), combined with each base's own quality.",
    )
    min_input_base_quality: int = Field(
        10, ge=0, le=93, description="Read bases below this quality are ignored."
    )
    min_reads: tuple[int, int, int] = Field(
        (1, 1, 0),
        description="Minimum reads per molecule as fgbio's duplex `--min-reads`: [total, larger "
        "strand, smaller strand]; one number `n` means [n, n, n], two `[a, b]` mean [a, b, b]. "
        "[2, 1, 1] demands both strands.",
        json_schema_extra={"allowed": "each >= 0, total >= 1, total >= larger >= smaller"},
    )

    overlap: Literal["per_read_pair", "per_consensus"] = Field(
        "per_consensus",
        description="Where the overlapping bases of a read's two mates are reconciled: "
        "`per_read_pair` in each raw read pair before the family consensus (fgbio's "
        "`--consensus-call-overlapping-bases`: agreeing qualities add up, a disagreement keeps "
        "the better base at the difference), or `per_consensus` in the finished R1 and R2 "
        "consensus (one base, or N, at each position of a molecule).",
    )

    @field_validator("min_reads", mode="before")
    @classmethod
    def _expand_min_reads(cls, value: Any) -> Any:
        # NB: fgbio accepts 1, 2 or 3 numbers: "2" means (2, 2, 2), "2 1" means (2, 1, 1).
        if isinstance(value, str):  # NB: "3", "3 1" or "3,1,1" from a form or a CLI
            value = [
                int(part) if part.strip().isdigit() else part
                for part in value.replace(",", " ").split()
            ]
        if isinstance(value, int):
            return (value, value, value)
        if isinstance(value, list | tuple) and len(value) == 1:
            return (value[0], value[0], value[0])
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

    min_base_quality: int = Field(
        30, ge=0, le=93, description="Consensus bases below this quality do not count."
    )
    min_mapping_quality: int = Field(
        20,
        ge=0,
        le=255,
        description="Consensus reads below this mapping quality do not count (and are reported "
        "as lost to mapping quality at a tracked variant).",
    )
    flank: int = Field(
        100,
        ge=5,
        le=100_000,
        description="Without a targets BED, the background is measured within this many bases "
        "either side of each tracked variant.",
    )
    variant_exclusion_window: int = Field(
        5,
        ge=0,
        le=1000,
        description="Positions this close to a tracked variant are left out of the background.",
    )


class CallingSection(_Section):
    """Sample-level decision thresholds."""

    alpha: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="Sample-level type-I error: the call is positive when the calibrated "
        "p-value is <= alpha.",
    )
    min_informative_molecules: int = Field(
        1000,
        ge=0,
        description="Below this many informative molecules over all tracked variants the call "
        "is `undetermined`.",
    )
    n_bootstrap: int = Field(
        2000,
        ge=100,
        le=1_000_000,
        description="Null replicates that calibrate the p-value (its resolution is "
        "1 / (n_bootstrap + 1)).",
    )
    min_strand_bias_p_value: float = Field(
        1e-3,
        ge=0,
        lt=1,
        description="A variant is flagged `strand_bias` (and left out of the call) when its alt "
        "molecules' strands of origin (the `sO` tag) are this unlikely under the locus's own "
        "strand split (binomial test, at least 3 alt molecules); 0 switches the filter off.",
    )


class MlSection(_Section):
    """Optional artefact filter: a tabular ML model or a network (off by default: see the model
    cards for their held-out figures). One of the two at a time; ``threshold`` overrides the one
    in the chosen model's card."""

    use_ml_calling: bool = Field(
        False,
        description="Drop molecules the shipped tabular model scores as likely artefacts before "
        "calling (the service needs ENABLE_ML_CALLING=true).",
    )
    model_type: Literal["ensemble", "random_forest", "xgboost", "lightgbm"] = Field(
        "ensemble", description="The shipped tabular model used when `use_ml_calling` is true."
    )
    use_deep_learning: bool = Field(
        False,
        description="Drop likely artefact molecules with the shipped network instead (needs "
        "PyTorch, the `[dl]` extra; the service needs ENABLE_DEEP_LEARNING=true). Not together "
        "with `use_ml_calling`.",
    )
    dl_model_type: Literal["cnn", "cnn_lstm"] = Field(
        "cnn", description="The shipped network used when `use_deep_learning` is true."
    )
    threshold: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Artefact probability above which a molecule is dropped; null uses the "
        "threshold of the chosen model's card.",
    )

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
    """The dilution series a validation job runs (read only when ``job_type`` is ``validation``)."""

    preset: Literal["smoke", "standard"] = Field(
        "smoke", description="The simulator preset every sample of the series starts from."
    )
    tumor_fractions: tuple[float, ...] = Field(
        (0.0, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3),
        description="The tumour fractions simulated, each in [0, 1); 0 gives the blanks of the "
        "limit of blank.",
        json_schema_extra={"allowed": "at least one; each >= 0 and < 1"},
    )
    replicates: int = Field(3, ge=1, le=1000, description="Samples per non-zero tumour fraction.")
    blank_replicates: int | None = Field(
        None,
        ge=1,
        le=10_000,
        description="Blank samples (tumour fraction 0); null means max(replicates, 10), the "
        "fewest a non-parametric limit of blank needs.",
    )
    molecules_per_locus: int | None = Field(
        None,
        ge=10,
        le=1_000_000,
        description="cfDNA molecules covering each variant; null uses the preset's (1500 for "
        "`smoke` in a validation series).",
    )
    n_variants: int | None = Field(
        None, ge=1, le=10_000, description="Tracked variants per sample; null uses the preset's."
    )

    @field_validator("tumor_fractions")
    @classmethod
    def _check_fractions(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(not 0.0 <= fraction < 1.0 for fraction in value):
            raise ValueError(f"tumor_fractions must be in [0, 1); got {list(value)}")
        return value


class PipelineParams(_Section):
    """The whole configuration of a run. Build with :meth:`from_mapping` or :meth:`from_yaml`."""

    job_type: JobType = Field(
        "sample",
        description="What the config runs: `sample` calls one sample; `validation` runs the "
        "dilution series of the `validation` section (the service's `validation-dilution` "
        "template sets it). Never inferred from the sections present.",
    )
    seed: int = Field(
        42,
        ge=0,
        le=2**32 - 1,
        description="Seeds every random draw of the run (p-value calibration, personal LoD, "
        "the samples of a validation series): same seed and inputs, same results.",
    )
    threads: int = Field(
        1, ge=1, le=256, description="Threads for alignment and the group/consensus stage."
    )
    processes: int = Field(
        1,
        ge=1,
        le=64,
        description="Worker processes that split the sample by genomic region: grouping, "
        "consensus and evidence run per region and are merged (same results as 1, the serial "
        "run). The service's `use_parallel` sets it where the config does not.",
    )
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
        """Read and validate a YAML config file (refused unread past :data:`MAX_CONFIG_BYTES`)."""
        try:
            check_config_size(path.stat().st_size, source=str(path))
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
        check_config_size(len(text.encode("utf-8")), source=source)
        try:
            loaded = load_config_yaml(text)
        except ConfigYamlError as error:
            raise InputFileError(
                source, f"is not valid YAML for a config ({error})", "fix the YAML"
            ) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise InputFileError(source, "top level must be a mapping of sections", CONFIG_FIX)
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
