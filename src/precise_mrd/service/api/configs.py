"""Config endpoints: validate a config, list templates, build a config from a template.

``POST /validate-config`` takes YAML as the raw body (``application/yaml``, ``text/yaml``,
``text/plain``), as a form field ``config_yaml``, or as JSON ``{"config_yaml": "..."}``. It always
answers 200 with a report: every error with its dotted path (not only the first), warnings about
settings that are legal but probably not meant, suggestions, the config hash and a rough runtime.

A config is at most :data:`~precise_mrd.pipeline.params.MAX_CONFIG_BYTES` wherever it comes in
(this body, ``/submit``'s ``config_yaml`` as text or as a file, the JSON body of
``/config-from-template``, the CLI's ``--config``): a larger one is a 422 with the same words,
given before anything parses it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import yaml
from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from precise_mrd import __version__
from precise_mrd.core.errors import ConfigError
from precise_mrd.io.config_yaml import ConfigYamlError, load_config_yaml
from precise_mrd.pipeline.params import (
    CONFIG_FIX,
    MAX_CONFIG_BYTES,
    PipelineParams,
    ValidationSection,
    check_config_size,
)
from precise_mrd.service.api.deps import CacheDep, MetricsDep, SettingsDep
from precise_mrd.service.api.schemas import (
    ConfigFromTemplate,
    ConfigFromTemplateRead,
    ConfigProblem,
    ConfigValidation,
    RuntimeEstimate,
    TemplateList,
    TemplateRead,
)
from precise_mrd.service.errors import UnprocessableError, responses
from precise_mrd.service.settings import Settings
from precise_mrd.service.templates import TEMPLATES, get_template, params_from_template

router = APIRouter(tags=["configs"])

#: config sections the service itself reads (not PipelineParams); allowed only when enabled
DEBUG_SECTION = "service_debug"
#: measured: smoke-preset simulation + pipeline in ~4 s on one core (``precise-mrd demo``)
SIMULATED_SAMPLE_SECONDS = 4.0
#: the pipeline's target on 2M read pairs is ~10x ``samtools view -c`` (~15 s per 1M pairs)
SECONDS_PER_MILLION_PAIRS = 15.0
#: PipelineParams' own default seed (used when neither the form nor the config sets one)
DEFAULT_SEED = int(PipelineParams.model_fields["seed"].default)


def split_service_sections(
    mapping: dict[str, Any], settings: Settings
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pipeline part, service part) of a config; the service part only with debug jobs on."""
    pipeline = dict(mapping)
    service: dict[str, Any] = {}
    if DEBUG_SECTION in pipeline and settings.enable_debug_jobs:
        service[DEBUG_SECTION] = pipeline.pop(DEBUG_SECTION)
    return pipeline, service


def read_config_text(value: str | bytes | UploadFile, *, source: str = "config_yaml") -> str:
    """Config text from a form field, a body or an uploaded file; refused past
    :data:`MAX_CONFIG_BYTES` before it is decoded or parsed (a file is read no further)."""
    if isinstance(value, str):
        if len(value) > MAX_CONFIG_BYTES // 4:  # NB: 4 UTF-8 bytes per character at most
            check_config_size(len(value.encode("utf-8")), source=source)
        return value
    if isinstance(value, bytes):
        data = value
    else:
        data = value.file.read(MAX_CONFIG_BYTES + 1)
        check_config_size(max(len(data), value.size or 0), source=source)
    check_config_size(len(data), source=source)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UnprocessableError(
            f"{source} is not UTF-8 text", field=source, fix="send the YAML as UTF-8"
        ) from None


def load_yaml_mapping(text: str, *, source: str = "config_yaml") -> dict[str, Any]:
    """YAML text -> mapping; ConfigError with the source when too large (before parsing), on
    syntax errors or a non-mapping."""
    check_config_size(len(text.encode("utf-8")), source=source)
    try:
        loaded = load_config_yaml(text)
    except ConfigYamlError as error:
        raise ConfigError(
            source, f"is not valid YAML for a config ({error})", "fix the YAML"
        ) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(source, "top level must be a mapping of sections", CONFIG_FIX)
    return loaded


@dataclass(frozen=True)
class StoredConfig:
    """What a submission stores: the config YAML and the job's seed."""

    yaml: str
    seed: int  # the form's, else the config's, else PipelineParams' default


def resolve_config(
    settings: Settings,
    *,
    config_yaml: str | None,
    config_template: str | None,
    seed: int | None,
) -> StoredConfig:
    """The config YAML stored with a submission (validated) and the job's seed.

    The stored YAML is the user's config (or the template) with the form's ``seed`` written in
    (the form wins over the config); keys the user left out stay out, so the worker still
    applies its own rules (``use_parallel`` sets ``threads`` and ``processes`` only when the
    config does not set them). The effective config of the job is
    :func:`~precise_mrd.service.jobs.worker.parse_config` of the stored job spec, at submission
    (for the 202's ``config_hash``) as in the worker.
    """
    if config_yaml and config_template:
        raise UnprocessableError(
            "give either config_yaml or config_template, not both",
            field="config_yaml",
            fix="drop one; to adjust a template use POST /config-from-template first",
        )
    if config_template:
        mapping = get_template(config_template).mapping()
    elif config_yaml:
        mapping = load_yaml_mapping(config_yaml)
    else:
        mapping = {}
    pipeline, service = split_service_sections(mapping, settings)
    if seed is not None:
        pipeline["seed"] = seed
    PipelineParams.from_mapping(pipeline)  # NB: the precise error, with its path, comes first
    stored = {**pipeline, **service}
    return StoredConfig(
        yaml=yaml.safe_dump(stored, sort_keys=False) if stored else "",
        seed=seed if seed is not None else int(pipeline.get("seed", DEFAULT_SEED)),
    )


def _all_errors(mapping: dict[str, Any]) -> list[ConfigProblem]:
    try:
        PipelineParams.model_validate(mapping)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            path = ".".join(str(part) for part in item["loc"]) or "<root>"
            message = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
            if item["type"] != "extra_forbidden" and "input" in item:
                message = f"{message} (got {item['input']!r})"
            problems.append(ConfigProblem(path=path, message=message, fix=CONFIG_FIX))
        return problems
    return []


def review(params: PipelineParams) -> tuple[list[str], list[str]]:
    """Warnings (legal but probably unintended) and suggestions for a valid config."""
    warnings: list[str] = []
    suggestions: list[str] = []
    if params.umi.strategy not in ("paired", "auto"):  # NB: auto pairs duplex UMIs
        warnings.append(
            f"umi.strategy is {params.umi.strategy!r}: top and bottom strands are not paired, so "
            "no duplex consensus is made and the error rate is higher"
        )
    if params.consensus.min_reads[0] == 1:
        suggestions.append(
            "consensus.min_reads starts at 1: single-read families carry raw sequencer errors; "
            "with family sizes >= 3, min_reads [2, 1, 1] lowers the background"
        )
    if params.calling.n_bootstrap < 1000:
        warnings.append(
            f"calling.n_bootstrap is {params.calling.n_bootstrap}: p-values below "
            f"~{1 / params.calling.n_bootstrap:.3g} cannot be resolved; use >= 1000 for reporting"
        )
    if params.calling.alpha > 0.1:
        warnings.append(
            f"calling.alpha is {params.calling.alpha}: more than 1 in 10 negatives "
            "would be called positive"
        )
    if params.evidence.min_base_quality < 20:
        warnings.append(
            f"evidence.min_base_quality is {params.evidence.min_base_quality}: consensus bases "
            "below Q20 add errors faster than molecules"
        )
    if params.calling.min_informative_molecules < 500:
        suggestions.append(
            "calling.min_informative_molecules is below 500: a negative call on so few molecules "
            "says little; it is reported as undetermined only below this threshold"
        )
    if params.job_type == "sample" and params.validation != ValidationSection():
        warnings.append(
            "the validation section is set but job_type is 'sample': this config runs one "
            "sample and ignores it; set job_type: validation to run the dilution series"
        )
    cores = os.cpu_count() or 1
    if params.threads > cores:
        warnings.append(f"threads is {params.threads} but this server has {cores} cores")
    return warnings, suggestions


def estimate_runtime(params: PipelineParams) -> RuntimeEstimate:
    """A rough wall time on one core; bootstrap draws add a little, threads help the middle."""
    bootstrap = params.calling.n_bootstrap / 2000 * 0.5
    speedup = min(params.threads, os.cpu_count() or 1) ** 0.6
    return RuntimeEstimate(
        simulated_sample_seconds=round(SIMULATED_SAMPLE_SECONDS + bootstrap, 1),
        seconds_per_million_read_pairs=round(SECONDS_PER_MILLION_PAIRS / speedup + bootstrap, 1),
    )


def validate_config_text(text: str, settings: Settings) -> ConfigValidation:
    """The full report for ``text`` (never raises for a bad config)."""
    try:
        mapping = load_yaml_mapping(text)
    except ConfigError as error:
        return ConfigValidation(
            valid=False,
            errors=[
                ConfigProblem(path="<root>", message=f"{error.path} {error.problem}", fix=error.fix)
            ],
            warnings=[],
            suggestions=[],
        )
    pipeline, service = split_service_sections(mapping, settings)
    errors = _all_errors(pipeline)
    if errors:
        return ConfigValidation(valid=False, errors=errors, warnings=[], suggestions=[])
    params = PipelineParams.from_mapping(pipeline)
    warnings, suggestions = review(params)
    if service:
        warnings.append(f"{DEBUG_SECTION} is a test-only section honoured by this server")
    return ConfigValidation(
        valid=True,
        errors=[],
        warnings=warnings,
        suggestions=suggestions,
        config_hash=params.config_hash,
        resolved_yaml=params.to_yaml(),
        estimated_runtime=estimate_runtime(params),
    )


_YAML_BODY = {
    "requestBody": {
        "required": True,
        "description": "The config as YAML (raw body), as form field config_yaml, or as JSON "
        '{"config_yaml": "..."}',
        "content": {
            "application/yaml": {"schema": {"type": "string"}},
            "text/plain": {"schema": {"type": "string"}},
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "properties": {"config_yaml": {"type": "string"}},
                    "required": ["config_yaml"],
                }
            },
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"config_yaml": {"type": "string"}},
                    "required": ["config_yaml"],
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"config_yaml": {"type": "string"}},
                    "required": ["config_yaml"],
                }
            },
        },
    }
}


async def _config_text(request: Request) -> str:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        async with request.form() as form:
            value = form.get("config_yaml")
            if value is None:
                raise UnprocessableError(
                    "the form has no config_yaml field",
                    field="config_yaml",
                    fix="send the YAML as form field config_yaml, or as the raw body",
                )
            return read_config_text(value)
    _check_declared_length(request)
    decoded = read_config_text(await request.body())
    if content_type == "application/json":
        try:
            payload = json.loads(decoded)
        except json.JSONDecodeError as error:
            raise UnprocessableError(
                f"the JSON body does not parse ({error.msg})",
                field="config_yaml",
                fix='send {"config_yaml": "<yaml text>"}',
            ) from None
        if not isinstance(payload, dict) or not isinstance(payload.get("config_yaml"), str):
            raise UnprocessableError(
                "the JSON body has no string config_yaml",
                field="config_yaml",
                fix='send {"config_yaml": "<yaml text>"}',
            )
        return read_config_text(str(payload["config_yaml"]))
    return decoded


def _check_declared_length(request: Request) -> None:
    """Refuse a body whose ``Content-Length`` is over the limit before reading it."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit():
        check_config_size(int(declared), source="config_yaml")


class ConfigBodyRoute(APIRoute):
    """A route whose JSON body is config (``/config-from-template``'s overrides): refused past
    :data:`MAX_CONFIG_BYTES` before FastAPI reads it as JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def size_checked(request: Request) -> Response:
            declared = request.headers.get("content-length", "")
            if declared.isdigit():
                check_config_size(int(declared), source="overrides")
            check_config_size(len(await request.body()), source="overrides")
            return await handler(request)

        return size_checked


@router.post(
    "/validate-config",
    response_model=ConfigValidation,
    summary="Validate a pipeline config",
    openapi_extra=_YAML_BODY,
    responses=responses(422),
)
async def validate_config(request: Request, settings: SettingsDep) -> ConfigValidation:
    """Every error with its dotted path, warnings, suggestions, the config hash and a runtime
    estimate. Answers 200 for an invalid config (``valid`` is false); 422 only when no config
    could be read from the request at all."""
    return validate_config_text(await _config_text(request), settings)


def _template_read(name: str) -> TemplateRead:
    template = TEMPLATES[name]
    params = PipelineParams.from_yaml_text(template.yaml)
    return TemplateRead(
        name=template.name,
        description=template.description,
        is_runnable=template.is_runnable,
        note=template.note,
        config_yaml=template.yaml,
        config_hash=params.config_hash,
    )


@router.get("/config-templates", response_model=TemplateList, summary="List config templates")
def list_templates(cache: CacheDep, metrics: MetricsDep) -> TemplateList:
    """Named starting configs, each with a description and its YAML."""
    key = f"templates:{__version__}"
    cached = cache.get_json(key)
    metrics.observe_cache(cache.name, "templates", hit=cached is not None)
    if cached is not None:
        return TemplateList.model_validate(cached)
    templates = TemplateList(templates=[_template_read(name) for name in TEMPLATES])
    cache.set_json(key, templates.model_dump(mode="json"), ttl_seconds=3600)
    return templates


def config_from_template(body: ConfigFromTemplate) -> ConfigFromTemplateRead:
    """Merge ``overrides`` (nested or dotted keys) into the template, validate, return the YAML
    with every default written out. An unknown template or a bad override is a 422 naming it, and
    so is a body over the config size limit."""
    get_template(body.template)
    params = params_from_template(body.template, body.overrides)
    return ConfigFromTemplateRead(
        template=body.template, config_yaml=params.to_yaml(), config_hash=params.config_hash
    )


router.add_api_route(
    "/config-from-template",
    config_from_template,
    methods=["POST"],
    response_model=ConfigFromTemplateRead,
    summary="Build a validated config from a template and overrides",
    responses=responses(422),
    route_class_override=ConfigBodyRoute,
)
