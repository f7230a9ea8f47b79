"""The deployment artifacts through the field's scanners, offline: checkov over the rendered
Kubernetes overlays, the Dockerfile, the SAM template and the CI/CD workflow; cfn-lint over the
SAM template; actionlint (with ShellCheck) over the workflow. No failed check is left: each skip is
inline, beside what it excuses, with its reason. Then what the SAM template and the workflow
promise, read from them, and ``deploy.sh --kubernetes --render`` pinning an image digest.

checkov, cfn-lint and actionlint live in ``.venv/iac`` (``make test-tools``)."""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
IAC = ROOT / ".venv" / "iac" / "bin"
BIN = Path(sys.executable).parent
WORKFLOW = ROOT / ".github" / "workflows" / "ci-cd.yml"
SAM = ROOT / "serverless" / "template.yaml"
OVERLAYS = ("dev", "staging", "prod")
_SHA_PIN = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+(\.\d+)*$")

pytestmark = pytest.mark.xdist_group(name="deploy-scanners")


def _tool(name: str) -> str:
    path = IAC / name
    assert path.exists(), (
        f"{path} is missing: `make test-tools` installs it (requirements-iac.lock)"
    )
    return str(path)


def _checkov(target: Path, framework: str) -> dict[str, Any]:
    """checkov's JSON report of one file (skips included, so their reasons can be checked)."""
    done = subprocess.run(
        [_tool("checkov"), "-f", str(target), "--framework", framework, "--compact",
         "--skip-download", "-o", "json"],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "LOG_LEVEL": "ERROR"},
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr[-2000:]
    report = json.loads(done.stdout)
    reports = report if isinstance(report, list) else [report]
    assert len(reports) == 1, [r.get("check_type") for r in reports]
    result: dict[str, Any] = reports[0]
    return result


def _assert_clean(report: dict[str, Any]) -> None:
    failed = [
        (check["check_id"], check["resource"], check["check_name"])
        for check in report["results"]["failed_checks"]
    ]
    assert failed == []
    assert report["summary"]["passed"] > 0  # NB: a scan that checked nothing proves nothing
    for skipped in report["results"]["skipped_checks"]:
        reason = (skipped.get("check_result") or {}).get("suppress_comment", "")
        assert len(reason.strip()) > 20, (skipped["check_id"], skipped["resource"], reason)


def _rendered(overlay: str, tmp_path: Path) -> Path:
    out = tmp_path / f"{overlay}.yaml"
    out.write_text(
        subprocess.run(
            [str(BIN / "kubectl"), "kustomize", str(ROOT / "k8s" / "overlays" / overlay)],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
    )
    return out


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_checkov_passes_every_rendered_overlay(overlay: str, tmp_path: Path) -> None:
    _assert_clean(_checkov(_rendered(overlay, tmp_path), "kubernetes"))


def test_checkov_passes_the_dockerfile() -> None:
    _assert_clean(_checkov(ROOT / "Dockerfile", "dockerfile"))


def test_checkov_and_cfn_lint_pass_the_sam_template() -> None:
    _assert_clean(_checkov(SAM, "cloudformation"))
    done = subprocess.run(
        [_tool("cfn-lint"), "--format", "parseable", str(SAM)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_checkov_and_actionlint_pass_the_workflow() -> None:
    _assert_clean(_checkov(WORKFLOW, "github_actions"))
    done = subprocess.run(
        [_tool("actionlint"), "-format", "{{json .}}", str(WORKFLOW)],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PATH": f"/usr/bin:/bin:{os.environ.get('PATH', '')}"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout or "[]") == []


# --- what the SAM template promises ------------------------------------------------------------


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags (!Ref, !Sub, !GetAtt) read as plain values."""


for _tag in ("!Ref", "!Sub", "!GetAtt", "!If", "!Equals", "!Select", "!Join", "!Not"):
    _CfnLoader.add_multi_constructor(
        _tag, lambda loader, suffix, node: loader.construct_yaml_str(node)
        if isinstance(node, yaml.ScalarNode) else loader.construct_sequence(node)  # type: ignore[arg-type]
    )  # fmt: skip


def _sam() -> dict[str, Any]:
    template: dict[str, Any] = yaml.load(SAM.read_text(), Loader=_CfnLoader)
    return template


def test_sam_functions_run_real_handlers_from_the_project_image() -> None:
    resources = _sam()["Resources"]
    functions = {
        name: spec["Properties"]
        for name, spec in resources.items()
        if spec["Type"] == "AWS::Serverless::Function"
    }
    assert set(functions) == {"ApiFunction", "StorageEventFunction", "MaintenanceFunction"}
    for name, props in functions.items():
        assert props["PackageType"] == "Image", name  # NB: the dependencies exceed the zip limit
        assert props["ImageConfig"]["EntryPoint"] == ["python", "-m", "awslambdaric"]
        (handler,) = props["ImageConfig"]["Command"]
        module_name, attribute = handler.rsplit(".", 1)
        assert callable(getattr(importlib.import_module(module_name), attribute)), handler
        metadata = resources[name]["Metadata"]
        assert metadata["Dockerfile"] == "Dockerfile" and metadata["DockerContext"] == ".."
        assert metadata["DockerBuildArgs"]["EXTRAS"] == "ml,aws"
    storage = functions["StorageEventFunction"]
    assert storage["Timeout"] == 900 and storage["EphemeralStorage"]["Size"] == 10240
    rules = storage["Events"]["ManifestLanded"]["Properties"]["Filter"]["S3Key"]["Rules"]
    assert {rule["Name"]: rule["Value"] for rule in rules} == {
        "prefix": "incoming/",
        "suffix": "manifest.json",
    }
    api = functions["ApiFunction"]
    assert api["Events"]["Http"]["Type"] == "HttpApi"
    assert api["Events"]["Http"]["Properties"]["PayloadFormatVersion"] == "2.0"
    assert functions["MaintenanceFunction"]["Events"]["EveryMinute"]["Type"] == "Schedule"


def test_sam_permissions_are_what_the_handlers_call() -> None:
    template = _sam()
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env["PRECISE_MRD_EXECUTOR"] == "celery"  # NB: the API's jobs go to workers
    assert env["PRECISE_MRD_DATA_DIR"].startswith("/tmp/")  # the only writable place
    assert "PRECISE_MRD_DATABASE_PASSWORD" not in env  # read from Secrets Manager at cold start
    assert env["PRECISE_MRD_DATABASE_PASSWORD_SECRET_ARN"] == "DatabasePasswordSecretRef"
    for name in ("ApiFunction", "StorageEventFunction", "MaintenanceFunction"):
        statements = template["Resources"][name]["Properties"]["Policies"][0]["Statement"]
        actions = {
            action
            for statement in statements
            for action in (
                statement["Action"]
                if isinstance(statement["Action"], list)
                else [statement["Action"]]
            )
        }
        assert not any(action.endswith("*") for action in actions), (name, actions)
        assert "secretsmanager:GetSecretValue" in actions
        s3_actions = {action for action in actions if action.startswith("s3:")}
        reads_incoming = any("incoming/" in str(statement["Resource"]) for statement in statements)
        assert reads_incoming == (name == "StorageEventFunction"), name
        assert s3_actions <= {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"}


# --- what the workflow promises ------------------------------------------------------------------


def test_workflow_pins_actions_grants_least_and_deploys_by_digest() -> None:
    text = WORKFLOW.read_text()
    workflow = yaml.safe_load(text)
    uses = re.findall(r"uses:\s*(.+)$", text, flags=re.MULTILINE)
    assert uses, "no action used?"
    for use in uses:
        assert _SHA_PIN.match(use.strip()), f"not pinned by commit SHA with its release: {use}"
    assert workflow["permissions"] == {}  # nothing by default
    jobs = workflow["jobs"]
    assert set(jobs) == {"test", "image", "deploy"}
    for name, job in jobs.items():
        assert "permissions" in job, name
        assert all(level in ("read", "none") for level in job["permissions"].values()) or (
            name == "image" and job["permissions"] == {"contents": "read", "packages": "write"}
        ), (name, job["permissions"])
    test_steps = [step.get("run", "") for step in jobs["test"]["steps"]]
    assert "make check" in test_steps  # format, lint, types, layers, then make test
    assert set(jobs["test"]["services"]) == {"postgres", "redis", "rabbitmq"}
    image_steps = jobs["image"]["steps"]
    build = next(step for step in image_steps if step.get("id") == "build")
    assert build["with"]["tags"].endswith(":${{ github.sha }}") and build["with"]["push"] is True
    assert any("trivy-action" in step.get("uses", "") for step in image_steps)
    assert jobs["deploy"]["needs"] == "image"
    deploy_run = jobs["deploy"]["steps"][-1]["run"]
    assert "./deploy.sh --kubernetes --overlay" in deploy_run and '--image "$IMAGE"' in deploy_run
    assert jobs["image"]["outputs"]["image"].endswith("@${{ steps.build.outputs.digest }}")


def test_deploy_renders_the_overlay_with_the_pinned_digest() -> None:
    digest = "ghcr.io/acme/precise-mrd-api@sha256:" + "ab" * 32
    done = subprocess.run(
        [str(ROOT / "deploy.sh"), "--kubernetes", "--overlay", "prod", "--image", digest,
         "--render"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        env={"PATH": f"{BIN}:/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    images = set(re.findall(r"image: (\S+)", done.stdout))
    assert images == {digest}  # the API, the worker and the migration Job alike
    refused = subprocess.run(
        [str(ROOT / "deploy.sh"), "--kubernetes", "--image", "not an image", "--render"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": f"{BIN}:/usr/bin:/bin"},
    )  # fmt: skip
    assert refused.returncode == 1 and "REGISTRY/NAME@sha256" in refused.stderr
