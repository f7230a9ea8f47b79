"""The container image and the Compose stack, validated offline (no Docker engine here):
hadolint on the Dockerfile, the image's promises read from it, and the Compose file checked for
what ``docker compose config`` and a careful reviewer would catch (this Docker client has no
compose plugin)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

from precise_mrd.service.settings import CLOUD_SECRET_VARIABLES, SECRET_VARIABLES, Settings

ROOT = Path(__file__).resolve().parents[2]
HADOLINT = Path(sys.executable).parent / "hadolint"


def _stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuations joined), split by stage."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    stages: list[list[str]] = []
    for line in lines:
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:  # NB: the ARGs before the first FROM are global, no stage's
            stages[-1].append(line)
    return stages


def test_hadolint_finds_nothing() -> None:
    done = subprocess.run(
        [str(HADOLINT), "--failure-threshold", "info", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_image_promises() -> None:
    text = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, flags=re.MULTILINE)
    assert base and re.fullmatch(r"python:3\.11-slim-\w+@sha256:[0-9a-f]{64}", base.group(1))
    stages = _stages()
    assert len(stages) == 2  # build, then runtime
    runtime = " ".join(stages[-1])
    assert "USER 10001:10001" in runtime  # non-root
    for tool in ("gcc", "build-essential", "apt-get install", "pip install"):
        assert tool not in runtime, tool  # nothing compiled or installed in the final stage
    healthcheck = next(line for line in stages[-1] if line.startswith("HEALTHCHECK"))
    assert "curl" not in healthcheck and "wget" not in healthcheck and "/health/live" in healthcheck
    assert stages[-1][-1] == 'CMD ["precise-mrd", "serve"]'
    build = " ".join(stages[0])
    assert "-c requirements.lock" in build  # versions from the lock
    assert "precise-mrd warm-cache --cache-dir /opt/numba-cache" in build
    assert "COPY --from=build /opt/numba-cache /opt/numba-cache" in runtime
    assert "NUMBA_CACHE_DIR=/opt/numba-cache" in runtime


def test_dockerignore_sends_only_the_build_inputs() -> None:
    rules = [
        line
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert rules[0] == "**"
    assert {rule[1:] for rule in rules if rule.startswith("!")} == {
        "requirements.lock",
        "pyproject.toml",
        "README.md",
        "src/",
    }


def _known_variables() -> set[str]:
    names: set[str] = set()
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        for choice in getattr(alias, "choices", []):
            if isinstance(choice, str) and choice.isupper():
                names.add(choice)
    names |= {f"{variable}_FILE" for variable in SECRET_VARIABLES.values()}
    names |= set(CLOUD_SECRET_VARIABLES) | {f"{name}_FILE" for name in CLOUD_SECRET_VARIABLES}
    return names | {"AWS_ENDPOINT_URL", "AWS_REGION"}


def test_compose_stack_is_complete_and_consistent() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert {"api", "worker", "migrate", "postgres", "redis", "s3"} <= set(services)
    for name in ("api", "postgres", "redis", "s3"):
        assert services[name]["healthcheck"]["test"], name
    declared_volumes = set(compose["volumes"])
    declared_secrets = compose["secrets"]
    known = _known_variables()
    env_example = (ROOT / ".env.example").read_text()
    for line in env_example.splitlines():
        if line and not line.startswith("#"):
            assert line.split("=", 1)[0] in known, line
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert source in declared_volumes, (name, volume)  # named volumes only
        for secret in service.get("secrets", []):
            assert secret in declared_secrets, (name, secret)
        for variable, value in (service.get("environment") or {}).items():
            if variable.startswith(("PRECISE_MRD_", "AWS_", "AZURE_")):
                assert variable in known, (name, variable)
            if str(value).startswith("/run/secrets/"):
                assert value.removeprefix("/run/secrets/") in service["secrets"], (name, variable)
            if variable.endswith(("PASSWORD", "_SECRET", "_KEY", "PASSWORD_FILE")):
                assert str(value).startswith("/run/secrets/"), (name, variable)  # files only
    app = services["api"]
    assert app["command"] == ["precise-mrd", "serve"] and app["read_only"] is True
    assert services["worker"]["command"][:2] == ["precise-mrd", "worker"]
    assert services["migrate"]["command"] == ["precise-mrd", "db", "upgrade"]
    assert app["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "PRECISE_MRD_AUTH_MODE=both" in env_example  # the API refuses 0.0.0.0 without auth
    ignored = (ROOT / ".gitignore").read_text()
    assert "deploy/secrets/*" in ignored and ".env" in ignored.split()


def test_image_size_estimate() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "image_size.py")],
        capture_output=True,
        text=True,
        check=True,
    )
    estimate = re.search(r"estimated image: ([\d,]+) MB", done.stdout)
    assert estimate is not None, done.stdout
    assert 300 < int(estimate.group(1).replace(",", "")) < 3000, done.stdout


def test_local_docker_without_an_engine_says_what_it_would_do(tmp_path: Path) -> None:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "DOCKER_HOST": f"unix://{tmp_path}/none.sock"}
    done = subprocess.run(
        [str(ROOT / "deploy.sh"), "--local-docker"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "It would have run: docker compose -f compose.yaml up -d --build --wait" in done.stderr
    assert "Traceback" not in done.stderr
