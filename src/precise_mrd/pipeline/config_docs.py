"""docs/configuration.md, generated from the pydantic models of :class:`PipelineParams`.

Every section and key of a config is listed with its type, default, allowed values and meaning
(the ``Field`` description), so the reference cannot drift from the code: a unit test compares the
file with :func:`render_config_docs` and names the command that regenerates it
(:data:`REGENERATE_COMMAND`).

>>> text = render_config_docs()
>>> text.startswith("# Configuration reference")
True
>>> row = next(line for line in text.splitlines() if line.startswith("| `calling.alpha`"))
>>> row.split(" | ")[1:4]
['number', '`0.05`', '> 0 and < 1']
>>> describe_type(tuple[int, int, int]), describe_type(int | None)
('list of 3 integers', 'integer or null')
"""

from __future__ import annotations

import inspect
import json
import types
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

from precise_mrd.pipeline.params import MAX_CONFIG_BYTES, PipelineParams

#: where the generated reference lives, relative to the repository root
CONFIG_DOCS_PATH = "docs/configuration.md"
REGENERATE_COMMAND = f".venv/bin/precise-mrd config-docs --out {CONFIG_DOCS_PATH}"

_SCALARS = {bool: "boolean", int: "integer", float: "number", str: "string"}
_PLURALS = {"boolean": "booleans", "integer": "integers", "number": "numbers", "string": "strings"}

_INTRODUCTION = f"""\
# Configuration reference

<!-- Generated from src/precise_mrd/pipeline/params.py by `precise-mrd config-docs`; do not edit
by hand. Regenerate with `{REGENERATE_COMMAND}` (or `make docs`). -->

A config is a YAML mapping with one section per pipeline stage. Every key has a default, so an
empty file is a valid config; an unknown key is an error (a typo is never silently ignored), and
every error names the dotted key (e.g. `calling.alpha`), the problem and the fix. The same config
is read by `precise-mrd run --config`, `precise-mrd validate --config`, and by the job service
(`POST /submit` as `config_yaml`, text or file; `POST /validate-config` reports every error at
once; `GET /config-templates` lists named starting points and `POST /config-from-template` fills
one in with overrides).

```yaml
job_type: sample
seed: 42
umi:
  strategy: paired
consensus:
  min_reads: [2, 1, 1]
calling:
  alpha: 0.01
```

- **What a config runs** is `job_type`, and nothing else: `sample` (the default) calls one
  sample; `validation` runs the dilution series described by the `validation` section. A
  resolved config (the `config` download of a job, `resolved_yaml`, `config-from-template`)
  writes out every section, so the presence of a section never changes what runs.
- **Size**: a config is at most {MAX_CONFIG_BYTES} bytes (256 KiB) at every entry point; a
  larger one is refused before it is parsed.
- **config_hash** is the SHA-256 of the canonical JSON (sorted keys, no spaces) of the resolved
  config: every key with its default, and in the service the request's flags (`seed`,
  `use_parallel`, `use_ml_calling`/`ml_model_type`, `use_deep_learning`/`dl_model_type`)
  applied. It covers the config, not the input files. Equal configs have equal hashes.

Ranges are inclusive unless written with `>` or `<`; `null` is YAML's empty value.
"""


def describe_type(annotation: Any) -> str:
    """A reader's name for a field's type (YAML terms: list, number, null)."""
    origin = get_origin(annotation)
    if origin is Literal:
        return "string"
    if origin in (Union, types.UnionType):
        members = [arg for arg in get_args(annotation) if arg is not type(None)]
        named = " or ".join(describe_type(arg) for arg in members)
        return f"{named} or null" if len(members) < len(get_args(annotation)) else named
    if origin is tuple:
        args = get_args(annotation)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_PLURALS[describe_type(args[0])]}"
        return f"list of {len(args)} {_PLURALS[describe_type(args[0])]}"
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    raise TypeError(f"no description for the type {annotation!r}; extend describe_type")


def _choices(annotation: Any) -> tuple[Any, ...]:
    if get_origin(annotation) is Literal:
        return get_args(annotation)
    for arg in get_args(annotation):
        if get_origin(arg) is Literal:
            return get_args(arg)
    return ()


def describe_allowed(field: FieldInfo) -> str:
    """Choices of a ``Literal``, the bounds of a number or string, or the ``allowed`` text a
    field with its own validator declares in ``json_schema_extra``; ``any`` otherwise."""
    extra = field.json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get("allowed"), str):
        return str(extra["allowed"])
    if field.annotation is bool:
        return "`true` or `false`"
    choices = _choices(field.annotation)
    if choices:
        return "one of " + ", ".join(f"`{choice}`" for choice in choices)
    bounds: list[str] = []
    lengths: dict[str, int] = {}
    for item in field.metadata:
        if isinstance(item, annotated_types.Ge):
            bounds.append(f">= {item.ge}")
        elif isinstance(item, annotated_types.Gt):
            bounds.append(f"> {item.gt}")
        elif isinstance(item, annotated_types.Le):
            bounds.append(f"<= {item.le}")
        elif isinstance(item, annotated_types.Lt):
            bounds.append(f"< {item.lt}")
        elif isinstance(item, annotated_types.MinLen):
            lengths["min"] = item.min_length
        elif isinstance(item, annotated_types.MaxLen):
            lengths["max"] = item.max_length
    if lengths:
        low, high = lengths.get("min"), lengths.get("max")
        if low == high:
            return f"exactly {low} character{'s' if low != 1 else ''}"
        return " and ".join(
            part
            for part in (f"at least {low}" if low else "", f"at most {high}" if high else "")
            if part
        )
    if len(bounds) == 2 and bounds[0].startswith(">=") and bounds[1].startswith("<="):
        return f"{bounds[0][3:]} to {bounds[1][3:]}"
    return " and ".join(bounds) or "any"


def _default(field: FieldInfo) -> str:
    value = to_jsonable_python(field.get_default(call_default_factory=True))
    return f"`{value}`" if isinstance(value, str) else f"`{json.dumps(value)}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _rows(prefix: str, fields: dict[str, FieldInfo]) -> list[str]:
    rows = ["| key | type | default | allowed | meaning |", "| --- | --- | --- | --- | --- |"]
    for name, field in fields.items():
        if not field.description:
            raise ValueError(f"{prefix}{name} has no description; add one to its Field")
        rows.append(
            f"| `{prefix}{name}` | {describe_type(field.annotation)} | {_default(field)} "
            f"| {describe_allowed(field)} | {_cell(field.description)} |"
        )
    return rows


def _is_section(field: FieldInfo) -> bool:
    annotation = field.annotation
    return inspect.isclass(annotation) and issubclass(annotation, BaseModel)


def render_config_docs() -> str:
    """The Markdown of docs/configuration.md: top-level keys, then one table per section."""
    fields = PipelineParams.model_fields
    top = {name: field for name, field in fields.items() if not _is_section(field)}
    parts = [_INTRODUCTION, "## Top-level keys", "", *_rows("", top), ""]
    for name, field in fields.items():
        if not _is_section(field):
            continue
        section = field.annotation
        assert inspect.isclass(section) and issubclass(section, BaseModel)
        doc = " ".join((inspect.getdoc(section) or "").split()).replace("``", "`")
        parts += [f"## `{name}`", "", doc, "", *_rows(f"{name}.", section.model_fields), ""]
    return "\n".join(parts).rstrip("\n") + "\n"
