"""Request and response models of the API: field allow-lists, documented in OpenAPI.

Names follow one pattern: ``JobCreate`` (what a submission asks for, after form parsing),
``JobRead`` (a job's status), ``JobResult`` (what a finished job produced), ``JobList`` (a page of
jobs). A response model lists exactly the fields a client may see; nothing from the database leaks
by accident.

>>> JobRead.model_fields["progress"].description
'Fraction of the run done, 0..1'
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from precise_mrd.service.jobs.model import JobState

MlModelType = Literal["ensemble", "random_forest", "xgboost", "lightgbm"]
DlModelType = Literal["cnn", "cnn_lstm"]


class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JobLinks(_Response):
    """Where to go next for this job (paths relative to the API root)."""

    status: str = Field(description="GET: state and progress")
    results: str = Field(description="GET: sample call and download links once COMPLETE")
    cancel: str = Field(description="POST: ask the job to stop")


class JobCreate(BaseModel):
    """A submission, after the multipart form has been parsed and checked."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._\-]+$")
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    use_ml_calling: bool = False
    ml_model_type: MlModelType = "ensemble"
    use_deep_learning: bool = False
    dl_model_type: DlModelType = "cnn"
    use_parallel: bool = False
    config_yaml: str | None = None
    config_template: str | None = None
    read_structures: str | None = Field(None, max_length=200)


class JobAccepted(_Response):
    """The answer to ``POST /submit`` (HTTP 202)."""

    job_id: str
    run_id: str
    status: JobState = Field(description="The job's state; QUEUED on submission")
    config_hash: str = Field(description="SHA-256 of the resolved config")
    created_at: datetime
    links: JobLinks


class JobRead(_Response):
    """A job's state, progress and timestamps (``GET /status/{job_id}``)."""

    job_id: str
    run_id: str
    state: JobState = Field(description="GA4GH WES state name")
    status: JobState = Field(description="Same as state (kept for the deployment guide's clients)")
    progress: float = Field(ge=0, le=1, description="Fraction of the run done, 0..1")
    stage: str | None = Field(None, description="The pipeline stage running now (or last run)")
    reason: str | None = Field(None, description="Why the job failed or was canceled")
    is_finished: bool = Field(description="True once the state will never change again")
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = Field(description="How many times an executor started the job")
    tenant_id: str
    owner_id: str
    seed: int
    config_template: str | None = None
    use_ml_calling: bool
    use_deep_learning: bool
    use_parallel: bool
    inputs: list[str] = Field(description="Input kinds uploaded (empty: simulated from seed)")
    links: JobLinks


class JobList(_Response):
    """A page of jobs, newest first."""

    jobs: list[JobRead]
    next_cursor: str | None = Field(
        None, description="Pass as ?cursor= for the next page; null on the last page"
    )
    limit: int = Field(description="The page size used (requests above the cap are capped)")


class SampleCallSummary(_Response):
    """The headline of ``sample_call.json``."""

    decision: str = Field(description="positive, negative or undetermined")
    tumor_fraction: float | None = None
    tumor_fraction_ci: list[float] | None = None
    p_value: float | None = None
    informative_molecules: int | None = None
    n_variants: int | None = None
    n_variants_with_alt: int | None = None
    personal_lod: float | None = None
    config_hash: str | None = None


class JobResult(_Response):
    """What a finished job produced (``GET /results/{job_id}``)."""

    job_id: str
    run_id: str
    state: JobState
    status: JobState
    reason: str | None = None
    sample_call: SampleCallSummary | None = Field(
        None, description="Present when a sample job is COMPLETE"
    )
    validation: dict[str, Any] | None = Field(
        None,
        description="Present when a validation-dilution job is COMPLETE: LoB, LoD95 with CI, "
        "specificity, AUC, linearity (the headline of validation.json)",
    )
    metrics: dict[str, Any] = Field(
        default_factory=dict, description="Key QC figures (reads, molecules, duplex rate...)"
    )
    downloads: dict[str, str] = Field(
        default_factory=dict, description="Download type -> URL of GET /download/{job_id}/{type}"
    )
    finished_at: datetime | None = None


class CheckRead(_Response):
    """One backend's health check."""

    ok: bool
    duration_ms: float
    detail: str | None = None


class HealthRead(_Response):
    """``GET /health``: every backend checked, with timings."""

    status: Literal["ok", "degraded", "draining"]
    version: str
    checks: dict[str, CheckRead]


class LiveRead(_Response):
    status: Literal["alive"]


class ConfigProblem(_Response):
    """An error in a config, with the dotted path of the key."""

    path: str
    message: str
    fix: str | None = None


class RuntimeEstimate(_Response):
    """A rough wall-time estimate (one core; measured on the simulated samples)."""

    simulated_sample_seconds: float = Field(description="For a job simulated from a seed")
    seconds_per_million_read_pairs: float = Field(description="For uploaded reads, per 1M pairs")


class ConfigValidation(_Response):
    """``POST /validate-config``."""

    valid: bool
    errors: list[ConfigProblem]
    warnings: list[str]
    suggestions: list[str]
    config_hash: str | None = None
    resolved_yaml: str | None = Field(None, description="The full config with every default")
    estimated_runtime: RuntimeEstimate | None = None


class TemplateRead(_Response):
    """A named starting config."""

    name: str
    description: str
    is_runnable: bool
    note: str | None = None
    config_yaml: str
    config_hash: str


class TemplateList(_Response):
    templates: list[TemplateRead]


class ConfigFromTemplate(BaseModel):
    """``POST /config-from-template`` body."""

    model_config = ConfigDict(extra="forbid")

    template: str = Field(examples=["standard-panel"])
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description='Nested or dotted keys, e.g. {"calling.alpha": 0.01}',
        examples=[{"calling.alpha": 0.01, "seed": 7}],
    )


class ConfigFromTemplateRead(_Response):
    template: str
    config_yaml: str
    config_hash: str
