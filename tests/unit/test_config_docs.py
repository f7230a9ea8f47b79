"""docs/configuration.md: generated from PipelineParams, up to date, cited by errors that exist."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel
from typer.testing import CliRunner

from precise_mrd.cli import app as cli_app
from precise_mrd.pipeline.config_docs import (
    CONFIG_DOCS_PATH,
    REGENERATE_COMMAND,
    render_config_docs,
)
from precise_mrd.pipeline.params import PipelineParams

ROOT = Path(__file__).resolve().parents[2]


def test_configuration_md_is_up_to_date() -> None:
    path = ROOT / CONFIG_DOCS_PATH
    assert path.is_file(), f"{CONFIG_DOCS_PATH} is missing: run `{REGENERATE_COMMAND}`"
    assert path.read_text(encoding="utf-8") == render_config_docs(), (
        f"{CONFIG_DOCS_PATH} is stale (PipelineParams changed): run `{REGENERATE_COMMAND}` "
        "(or `make docs`) to regenerate it, and commit the result"
    )


def test_every_section_and_key_is_documented_with_a_description() -> None:
    text = render_config_docs()
    for name, field in PipelineParams.model_fields.items():
        section = field.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            assert f"## `{name}`" in text
            keys = [f"{name}.{key}" for key in section.model_fields]
            descriptions = [item.description for item in section.model_fields.values()]
        else:
            keys, descriptions = [name], [field.description]
        for key, description in zip(keys, descriptions, strict=True):
            assert description, f"{key} has no Field description"
            assert f"| `{key}` |" in text, key


def test_every_doc_the_code_cites_exists() -> None:
    cited: dict[str, list[str]] = {}
    for source in (ROOT / "src").rglob("*.py"):
        for match in re.findall(r"docs/[\w./-]+\.md", source.read_text(encoding="utf-8")):
            cited.setdefault(match, []).append(str(source.relative_to(ROOT)))
    assert "docs/configuration.md" in cited
    missing = {doc: files for doc, files in cited.items() if not (ROOT / doc).is_file()}
    assert not missing, f"the code cites documents that do not exist: {missing}"


def test_cli_config_docs_writes_and_prints_the_reference(tmp_path: Path) -> None:
    out = tmp_path / "docs" / "configuration.md"
    result = CliRunner().invoke(cli_app, ["config-docs", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text(encoding="utf-8") == render_config_docs()
    printed = CliRunner().invoke(cli_app, ["config-docs"])
    assert printed.exit_code == 0 and printed.stdout == render_config_docs()
