"""The layer rule of DESIGN.md: imports point down (cli > service > pipeline > io > core)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).parents[2] / "src" / "precise_mrd"
FORBIDDEN_IN_CORE = {
    "pysam",
    "mappy",
    "pyarrow",
    "fastapi",
    "sqlalchemy",
    "celery",
    "redis",
    "yaml",
    "os",
}


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_core_imports_no_upper_layer_or_io_library() -> None:
    offenders = []
    for path in sorted((PACKAGE / "core").glob("*.py")):
        for module in _imported_modules(path):
            top = module.split(".")[0]
            upper = module.startswith("precise_mrd.") and not module.startswith("precise_mrd.core")
            if upper or top in FORBIDDEN_IN_CORE:
                offenders.append(f"{path.name}: {module}")
    assert offenders == []


def test_import_linter_contracts_hold() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint_imports), "--no-cache"],
        cwd=PACKAGE.parents[1],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
