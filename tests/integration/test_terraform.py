"""The Terraform under cloud/, validated offline: ``terraform fmt``; ``terraform validate`` and
``terraform test`` (mocked provider) of the AWS stack with the provider from the machine's
mirror (TF_PLUGIN_DIR, default /opt/tf-plugins; the google and azurerm providers have no mirror
here, so those modules get the checks below only); every file parsed by python-hcl2, every
reference of each module resolved against its declarations, no secret value that would land in
the state, checkov with no failed check (inline skips only, each with its reason), and the
AWS module's promises to the application (its health checks, commands, secrets, storage).

Every directory under cloud/ holding *.tf files is a module and is checked the same way: the
root (AWS), cloud/aws, and cloud/gcp and cloud/azure."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest
from pydantic import AliasChoices

from precise_mrd.service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CLOUD = ROOT / "cloud"
#: checkov lives in its own environment (its pins conflict with the project's); CHECKOV overrides
CHECKOV = Path(os.environ.get("CHECKOV", ROOT / ".venv" / "iac" / "bin" / "checkov"))
MODULES = sorted({path.parent for path in CLOUD.rglob("*.tf") if ".terraform" not in path.parts})
MODULE_IDS = [module.relative_to(ROOT).as_posix() for module in MODULES]
#: a filesystem mirror of the providers (``terraform init -plugin-dir``), when there is one
PLUGIN_DIR = Path(os.environ.get("TF_PLUGIN_DIR", "/opt/tf-plugins"))
#: the providers whose resources a reference TYPE.NAME may name
PROVIDER_PREFIXES = ("aws", "google", "azurerm", "azuread", "random", "archive", "time", "null")
#: attributes whose value Terraform would keep in its state (``*_wo`` write-only ones are fine)
SECRET_ATTRIBUTES = {
    "password",
    "master_password",
    "admin_password",
    "administrator_login_password",
    "auth_token",
    "secret_string",
    "secret_binary",
    "secret_data",
}
#: resources that generate or store a secret value in the state
SECRET_RESOURCES = {"random_password", "tls_private_key"}
#: per resource type, the attribute that would put a secret value in the state
SECRET_RESOURCE_ATTRIBUTES = {"azurerm_key_vault_secret": "value"}

pytestmark = pytest.mark.xdist_group(name="terraform")


# --- reading the files -------------------------------------------------------------------


_HEREDOC = re.compile(r"<<-?([A-Za-z_][A-Za-z0-9_]*)\n")


def _code_only(text: str) -> str:
    """``text`` without comments and without the literal text of strings and heredocs (blanked,
    so offsets and lines stay), the expressions of their ``${...}``/``%{...}`` kept.

    >>> _code_only('a = "x ${var.y} z" # var.c')
    'a = "  ${var.y}  "        '
    """
    out = list(text)
    stack: list[list[Any]] = [["code", 0]]  # ["code", brace depth] / ["str"] / ["heredoc", tag]
    i, n = 0, len(text)

    def blank(start: int, end: int) -> None:
        for k in range(start, min(end, n)):
            if out[k] != "\n":
                out[k] = " "

    while i < n:
        state = stack[-1]
        ch = text[i]
        if state[0] == "code":
            if ch == "#" or text.startswith("//", i):
                end = text.find("\n", i)
                end = n if end < 0 else end
                blank(i, end)
                i = end
            elif text.startswith("/*", i):
                end = text.find("*/", i + 2)
                end = n if end < 0 else end + 2
                blank(i, end)
                i = end
            elif ch == '"':
                stack.append(["str"])
                i += 1
            elif ch == "<" and (heredoc := _HEREDOC.match(text, i)):
                stack.append(["heredoc", heredoc.group(1)])
                i = heredoc.end()
            elif ch == "{":
                state[1] += 1
                i += 1
            elif ch == "}":
                if state[1] == 0 and len(stack) > 1:  # the end of an interpolation
                    stack.pop()
                else:
                    state[1] -= 1
                i += 1
            else:
                i += 1
        else:  # a string or a heredoc: literal text, except the interpolations
            if state[0] == "heredoc" and (i == 0 or text[i - 1] == "\n"):
                end = text.find("\n", i)
                end = n if end < 0 else end
                if text[i:end].strip() == state[1]:
                    stack.pop()
                    i = end
                    continue
            if state[0] == "str" and ch == "\\":
                blank(i, i + 2)
                i += 2
            elif state[0] == "str" and ch == '"':
                stack.pop()
                i += 1
            elif text.startswith(("$${", "%%{"), i):
                blank(i, i + 3)
                i += 3
            elif text.startswith(("${", "%{"), i):
                stack.append(["code", 0])
                i += 2
            else:
                blank(i, i + 1)
                i += 1
    return "".join(out)


@functools.cache
def _parsed(path: Path) -> dict[str, Any]:
    with path.open() as handle:
        return dict(hcl2.load(handle))


def _files(module: Path) -> list[Path]:
    return sorted(module.glob("*.tf"))


def _label(key: str) -> str:
    return key.strip('"')


def _blocks(module: Path, kind: str) -> list[tuple[Path, str, Any]]:
    """The ``kind`` blocks of a module (variable, output, module, locals ...) as
    (file, first label, body); for resource and data, the label is TYPE.NAME."""
    found: list[tuple[Path, str, Any]] = []
    for path in _files(module):
        for block in _parsed(path).get(kind, []):
            if kind == "locals":
                found += [(path, name, value) for name, value in block.items() if "__" not in name]
                continue
            for first, body in block.items():
                if kind in ("resource", "data"):
                    found += [(path, f"{_label(first)}.{_label(n)}", b) for n, b in body.items()]
                else:
                    found.append((path, _label(first), body))
    return found


def _names(module: Path, kind: str) -> set[str]:
    return {name for _, name, _ in _blocks(module, kind)}


_BLOCK_START = re.compile(r'^variable\s+"[^"]+"\s*\{', re.MULTILINE)


def _without_variable_blocks(text: str, code: str) -> str:
    """``code`` (of ``text``) with its variable blocks blanked: their own validations do not
    make a variable used."""
    spans = []
    for match in _BLOCK_START.finditer(text):
        depth, k = 0, match.end() - 1
        while k < len(code):
            depth += {"{": 1, "}": -1}.get(code[k], 0)
            if depth == 0:
                break
            k += 1
        spans.append((match.start(), k + 1))
    chars = list(code)
    for start, end in spans:
        chars[start:end] = [" "] * (end - start)
    return "".join(chars)


def _references(code: str) -> dict[str, set[str]]:
    """What the expressions in ``code`` refer to, by kind."""
    word = r"[A-Za-z_][A-Za-z0-9_-]*"
    lead = r"(?<![\w.\-])"
    resource_type = rf"(?:{'|'.join(PROVIDER_PREFIXES)})_[a-z0-9_]+"
    return {
        "variable": set(re.findall(rf"{lead}var\.({word})", code)),
        "locals": set(re.findall(rf"{lead}local\.({word})", code)),
        "module": set(re.findall(rf"{lead}module\.({word})", code)),
        "module_output": {
            f"{m}.{o}" for m, o in re.findall(rf"{lead}module\.({word})\.({word})", code)
        },
        "data": {f"{t}.{n}" for t, n in re.findall(rf"{lead}data\.([a-z0-9_]+)\.({word})", code)},
        "resource": {
            f"{t}.{n}" for t, n in re.findall(rf"{lead}({resource_type})\.({word})", code)
        },
    }


def _module_references(module: Path, *, skip_variable_blocks: bool = False) -> dict[str, set[str]]:
    total: dict[str, set[str]] = {}
    for path in _files(module):
        text = path.read_text()
        code = _code_only(text)
        if skip_variable_blocks:
            code = _without_variable_blocks(text, code)
        for kind, names in _references(code).items():
            total.setdefault(kind, set()).update(names)
    return total


# --- 1. terraform fmt (and, for AWS, validate and the module's mocked-provider tests) ----


def _terraform(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    terraform = shutil.which("terraform")
    assert terraform, (
        "terraform is not on PATH: install Terraform >= 1.5 (`make test-tools`, or the binary "
        "from https://developer.hashicorp.com/terraform/install); fmt runs offline"
    )
    env = {**os.environ, "CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1"}
    return subprocess.run(
        [terraform, *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=240,
        cwd=cwd,
        env=env,
    )


def test_the_modules_are_found() -> None:
    assert CLOUD in MODULES and CLOUD / "aws" in MODULES, MODULE_IDS


def test_terraform_fmt_is_clean() -> None:
    done = _terraform("fmt", "-check", "-recursive", "-diff", "-no-color", str(CLOUD), cwd=ROOT)
    assert done.returncode == 0, f"terraform fmt -recursive cloud/ would change:\n{done.stdout}"


def test_aws_stack_validates_and_passes_its_module_tests(tmp_path: Path) -> None:
    """``terraform validate`` of the root (AWS) against the provider's schema, and
    ``terraform test`` of cloud/aws (cloud/aws/tests: a mocked provider, nothing created).
    The provider comes from PLUGIN_DIR when it exists (offline), else from the registry."""
    stack = tmp_path / "cloud"
    shutil.copytree(CLOUD, stack, ignore=shutil.ignore_patterns(".terraform*", "gcp", "azure"))
    init = ["init", "-backend=false", "-input=false", "-no-color"]
    if PLUGIN_DIR.is_dir():
        init.append(f"-plugin-dir={PLUGIN_DIR}")
    for directory in (stack, stack / "aws"):
        done = _terraform(*init, cwd=directory)
        assert done.returncode == 0, done.stdout + done.stderr
    done = _terraform("validate", "-json", "-no-color", cwd=stack)
    result = json.loads(done.stdout)
    assert result["valid"], json.dumps(result["diagnostics"], indent=1)
    done = _terraform("test", "-no-color", cwd=stack / "aws")
    assert done.returncode == 0, done.stdout + done.stderr


# --- 2. parsing, references --------------------------------------------------------------


@pytest.mark.parametrize("module", MODULES, ids=MODULE_IDS)
def test_every_reference_resolves(module: Path) -> None:
    for path in _files(module):
        _parsed(path)  # NB: raises on a syntax error
    declared = {
        "variable": _names(module, "variable"),
        "locals": _names(module, "locals"),
        "module": _names(module, "module"),
        "data": _names(module, "data"),
        "resource": _names(module, "resource"),
    }
    referenced = _module_references(module)
    for kind, names in declared.items():
        undeclared = referenced[kind] - names
        assert not undeclared, f"{module.name}: {kind} referenced, never declared: {undeclared}"

    # a local child module: its outputs referenced, its variables passed, its required ones set
    for _, name, body in _blocks(module, "module"):
        source = _label(body["source"])
        if not source.startswith("./"):
            continue
        child = (module / source).resolve()
        assert child.is_dir(), f"module {name}: no directory {source}"
        outputs = {f"{name}.{output}" for output in _names(child, "output")}
        used = {ref for ref in referenced["module_output"] if ref.startswith(f"{name}.")}
        assert not used - outputs, f"module {name}: outputs it does not have: {used - outputs}"
        arguments = {key for key in body if key not in ("source", "version", "providers")}
        arguments -= {key for key in body if key.startswith("__")}
        child_variables = {n: b for _, n, b in _blocks(child, "variable")}
        assert not arguments - set(child_variables), (
            f"module {name}: arguments it does not declare: {arguments - set(child_variables)}"
        )
        required = {n for n, b in child_variables.items() if "default" not in b}
        assert not required - arguments, f"module {name}: not given {required - arguments}"


@pytest.mark.parametrize("module", MODULES, ids=MODULE_IDS)
def test_variables_are_described_typed_and_used(module: Path) -> None:
    variables = _blocks(module, "variable")
    used = _module_references(module, skip_variable_blocks=True)["variable"]
    for path, name, body in variables:
        where = f"{path.relative_to(ROOT)}: variable {name}"
        assert _label(str(body.get("description", ""))).strip(), f"{where} has no description"
        assert "type" in body, f"{where} has no type"
        assert name in used, f"{where} is declared and never used"
    for path, name, body in _blocks(module, "output"):
        assert _label(str(body.get("description", ""))).strip(), (
            f"{path.relative_to(ROOT)}: output {name} has no description"
        )


# --- 3. no secret value in the state -----------------------------------------------------


def _attribute_keys(body: Any) -> set[str]:
    if isinstance(body, list):
        return set().union(*(_attribute_keys(item) for item in body)) if body else set()
    if isinstance(body, dict):
        return set(body) | set().union(*(_attribute_keys(v) for v in body.values()))
    return set()


@pytest.mark.parametrize("module", MODULES, ids=MODULE_IDS)
def test_no_secret_value_in_the_state(module: Path) -> None:
    for path, name, body in _blocks(module, "resource"):
        where = f"{path.relative_to(ROOT)}: {name}"
        resource_type = name.split(".")[0]
        assert resource_type not in SECRET_RESOURCES, f"{where} puts a secret in the state"
        keys = _attribute_keys(body)
        assert not keys & SECRET_ATTRIBUTES, (
            f"{where} sets {keys & SECRET_ATTRIBUTES}: that value would be in the state; let "
            "the service manage it (e.g. RDS manage_master_user_password) or set it out of band"
        )
        attribute = SECRET_RESOURCE_ATTRIBUTES.get(resource_type)
        assert attribute not in keys, f"{where} sets {attribute}, which would be in the state"
    for path, name, body in _blocks(module, "module"):
        keys = set(body)
        assert not keys & SECRET_ATTRIBUTES, f"{path.relative_to(ROOT)}: module {name} {keys}"


# --- 4. checkov --------------------------------------------------------------------------


@functools.cache
def _checkov() -> dict[str, Any]:
    """One checkov run over cloud/: its terraform report. NB: without --quiet, which would
    leave the skipped checks (and their reasons) out of the JSON."""
    assert CHECKOV.exists(), (
        f"checkov is not at {CHECKOV}: `make venv` installs it into .venv/iac (its own "
        "environment); or set CHECKOV to a checkov binary"
    )
    done = subprocess.run(
        [
            str(CHECKOV),
            *("-d", str(CLOUD), "--framework", "terraform"),
            *("--compact", "-o", "json", "--skip-download"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode in (0, 1), done.stderr[-3000:]
    report = json.loads(done.stdout)
    reports = report if isinstance(report, list) else [report]
    terraform = [r for r in reports if r.get("check_type") == "terraform"]
    assert terraform, f"checkov scanned no Terraform: {done.stdout[:2000]}"
    return dict(terraform[0])


def _module_of(file_path: str) -> Path:
    return (CLOUD / file_path.lstrip("/")).parent


@pytest.mark.parametrize("module", MODULES, ids=MODULE_IDS)
def test_checkov_finds_nothing(module: Path) -> None:
    report = _checkov()
    assert report["summary"]["parsing_errors"] == 0, report["results"].get("parsing_errors")
    assert any(_module_of(c["file_path"]) == module for c in report["results"]["passed_checks"])
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']}:{c['file_line_range'][0]}): "
        f"{c['check_name']}"
        for c in report["results"]["failed_checks"]
        if _module_of(c["file_path"]) == module
    ]
    assert not failed, "checkov failed checks (fix them, or skip inline with a reason):\n" + (
        "\n".join(failed)
    )


_SKIP = re.compile(r"#\s*checkov:skip=([A-Z0-9_]+)(?::(.*))?")


@pytest.mark.parametrize("module", MODULES, ids=MODULE_IDS)
def test_every_checkov_skip_has_a_reason(module: Path) -> None:
    """Each ``#checkov:skip=CHECK:reason`` has a reason, and is one checkov honoured (a skip
    outside its resource's block, or of a check that does not apply, is dead)."""
    comments = set()
    for path in _files(module):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for check, reason in _SKIP.findall(line):
                where = f"{path.relative_to(ROOT)}:{number}"
                assert reason.strip(), f"{where}: {check} skipped without a reason"
                comments.add((path.name, check))
    skipped = {
        (Path(c["file_path"]).name, c["check_id"])
        for c in _checkov()["results"]["skipped_checks"]
        if _module_of(c["file_path"]) == module
    }
    for check in _checkov()["results"]["skipped_checks"]:
        if _module_of(check["file_path"]) == module:
            assert (check["check_result"].get("suppress_comment") or "").strip(), check
    assert comments <= skipped, f"skip comments checkov did not apply: {comments - skipped}"


# --- the AWS module's promises to the application ----------------------------------------


def _aws(name: str) -> Any:
    """The body of the resource or data source TYPE.NAME of cloud/aws."""
    bodies = {n: b for _, n, b in _blocks(CLOUD / "aws", "resource")}
    return bodies[name]


def _text(filename: str) -> str:
    return (CLOUD / "aws" / filename).read_text()


def test_aws_module_keeps_the_contract() -> None:
    health = _aws("aws_lb_target_group.api")["health_check"][0]
    assert _label(health["path"]) == "/health/ready"
    db = _aws("aws_db_instance.main")
    assert db["manage_master_user_password"] is True and db["storage_encrypted"] is True
    assert db["publicly_accessible"] is False and _label(db["engine_version"]) == "16"
    redis = _aws("aws_elasticache_replication_group.main")
    assert redis["transit_encryption_enabled"] is True
    assert redis["at_rest_encryption_enabled"] is True
    assert "auth_token" not in redis
    access = _aws("aws_s3_bucket_public_access_block.data")
    assert all(
        access[key] is True for key in access if not key.startswith("__") and key != "bucket"
    )
    notification = _aws("aws_s3_bucket_notification.data")["lambda_function"][0]
    assert _label(notification["filter_suffix"]) == "manifest.json"
    assert _label(notification["filter_prefix"]) == "${local.incoming_prefix}/"
    assert 'incoming_prefix  = "incoming"' in _text("main.tf")

    ecs = _text("ecs.tf")
    for command in (
        '["precise-mrd", "serve"]',
        '["precise-mrd", "worker", "--concurrency", tostring(var.worker_concurrency)]',
        '["precise-mrd", "db", "upgrade"]',
    ):
        assert command in ecs
    assert 'user                   = "10001:10001"' in ecs
    assert "readonlyRootFilesystem = true" in ecs and "stopTimeout = 120" in ecs
    assert 'capacity_provider = "FARGATE_SPOT"' in ecs

    main = _text("main.tf")
    assert ':password::"' in main and "PRECISE_MRD_JWT_SECRET_SECRET_ARN" in main
    assert "PRECISE_MRD_DATABASE_PASSWORD_SECRET_ARN" in main
    lambdas = _text("lambda.tf")
    for handler in ("api_handler", "storage_event_handler", "maintenance_handler"):
        assert f'"precise_mrd.service.serverless.aws.{handler}"' in lambdas
    assert _label(_aws("aws_cloudwatch_event_rule.maintenance")["schedule_expression"]) == (
        "rate(1 minute)"
    )
    assert 'entry_point = ["python", "-m", "awslambdaric"]' in lambdas
    assert 'payload_format_version = "2.0"' in lambdas and 'route_key = "$default"' in lambdas


def test_aws_module_sets_only_settings_the_service_reads() -> None:
    """Every PRECISE_MRD_* variable the module sets is a setting (a typo would be ignored),
    but the <VAR>_SECRET_ARN ones, which the Lambda functions resolve into <VAR>."""
    known = {
        alias.choices[0]
        for field in Settings.model_fields.values()
        if isinstance(alias := field.validation_alias, AliasChoices)
    }
    code = "".join(_code_only(path.read_text()) for path in _files(CLOUD / "aws"))
    names = set(re.findall(r"\b(PRECISE_MRD_[A-Z0-9_]+)\s*=", code))
    names |= set(re.findall(r'name\s*=\s*"(PRECISE_MRD_[A-Z0-9_]+)"', _text("main.tf")))
    assert names, "no PRECISE_MRD_ variable found"
    unknown = {
        name
        for name in names
        if name not in known and not (name.endswith("_SECRET_ARN") and name[:-11] in known)
    }
    assert not unknown, f"not settings of the service: {unknown}"
