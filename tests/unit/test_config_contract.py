"""A config means what it says: explicit job type, one size limit, one config hash.

The API runs in-process over :class:`InMemoryJobService`; where a worker would run, the test
calls the worker's own :func:`parse_config` on the stored job spec and stores its resolved YAML
as the job's ``config`` download, exactly as the worker writes it (``params.to_yaml()``). Real
jobs through the local executor: tests/integration/test_config_round_trip.py.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

from typer.testing import CliRunner

from precise_mrd.cli import app as cli_app
from precise_mrd.pipeline.params import (
    CONFIG_SIZE_FIX,
    MAX_CONFIG_BYTES,
    PipelineParams,
    check_config_size,
    config_size_problem,
)
from precise_mrd.service.app import create_app
from precise_mrd.service.jobs.memory import InMemoryJobService
from precise_mrd.service.jobs.model import JobSpec, JobState
from precise_mrd.service.jobs.worker import is_validation_job, parse_config
from precise_mrd.service.settings import Settings
from precise_mrd.service.storage import LocalArtifactStore

OVERSIZE = 257 * 1024


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        self.settings = Settings(
            data_dir=tmp_path,
            enable_ml_calling=True,
            enable_deep_learning=True,
            enable_parallel_processing=True,
        )
        self.store = LocalArtifactStore(tmp_path / "artifacts")
        self.jobs = InMemoryJobService(artifact_root=self.store.root)
        self.app = create_app(
            self.settings, job_service=self.jobs, store=self.store, start_executor=False
        )

    def worker_params(self, job_id: str) -> PipelineParams:
        """The effective config the worker would run the job with."""
        spec = self.jobs.get(job_id, tenant_id="default").spec
        params, _ = parse_config(spec, enable_debug_jobs=self.settings.enable_debug_jobs)
        return params

    def finish_like_the_worker(self, job_id: str) -> PipelineParams:
        """COMPLETE with the ``config`` download the worker writes (sample and validation jobs)."""
        params = self.worker_params(job_id)
        key = f"jobs/{job_id}/config.yaml"
        self.store.put_stream(key, io.BytesIO(params.to_yaml().encode()))
        self.jobs.update(job_id, state=JobState.RUNNING, progress=0.5, stage="consensus")
        self.jobs.update(
            job_id,
            state=JobState.COMPLETE,
            progress=1.0,
            stage="done",
            result={"config_hash": params.config_hash},
            artifacts={"config": key},
        )
        return params


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


@pytest.fixture
def client(harness: Harness) -> Iterator[TestClient]:
    with TestClient(harness.app) as test_client:
        yield test_client


def submit(client: TestClient, **fields: Any) -> Any:
    response = client.post("/submit", data={"run_id": "contract", **fields})
    assert response.status_code == 202, response.text
    return response.json()


# ---------------------------------------------------------------------------- job type


def test_job_type_is_explicit_never_inferred_from_a_section() -> None:
    assert PipelineParams().job_type == "sample"
    resolved = yaml.safe_load(PipelineParams().to_yaml())
    assert "validation" in resolved and resolved["job_type"] == "sample"

    def job_of(text: str) -> bool:
        spec = JobSpec(run_id="r", seed=1, config_yaml=text)
        return is_validation_job(parse_config(spec, enable_debug_jobs=False)[0])

    assert not job_of(PipelineParams().to_yaml())
    assert not job_of("validation:\n  replicates: 2\n")
    assert job_of("job_type: validation\n")
    with pytest.raises(Exception, match="job_type"):
        PipelineParams.from_mapping({"job_type": "series"})


def test_validate_config_warns_about_a_validation_section_on_a_sample_job(
    client: TestClient,
) -> None:
    body = client.post("/validate-config", json={"config_yaml": "validation:\n  replicates: 2\n"})
    warnings_ = body.json()["warnings"]
    assert any("job_type is 'sample'" in warning for warning in warnings_), warnings_
    body = client.post("/validate-config", json={"config_yaml": "job_type: validation\n"})
    assert not any("job_type" in warning for warning in body.json()["warnings"])


def test_every_template_round_trips_to_the_same_job(client: TestClient, harness: Harness) -> None:
    templates = client.get("/config-templates").json()["templates"]
    assert len(templates) >= 4
    for template in templates:
        name = template["name"]
        built = client.post("/config-from-template", json={"template": name}).json()
        assert "validation:" in built["config_yaml"]  # every resolved config has the section
        first = submit(client, config_yaml=built["config_yaml"])
        params = harness.finish_like_the_worker(first["job_id"])
        assert first["config_hash"] == params.config_hash == built["config_hash"], name
        download = client.get(f"/download/{first['job_id']}/config")
        assert download.status_code == 200
        again = submit(client, config_yaml=download.text)
        assert again["config_hash"] == first["config_hash"], name
        rerun = harness.worker_params(again["job_id"])
        assert is_validation_job(rerun) == is_validation_job(params) == (name.startswith("valid"))
        assert rerun.config_hash == params.config_hash
        # the template by name runs the same job as its resolved YAML
        by_name = submit(client, config_template=name, seed=str(params.seed))
        assert by_name["config_hash"] == first["config_hash"], name


# ---------------------------------------------------------------------------- config hash

FLAG_CASES = {
    "plain": {},
    "ml": {"use_ml_calling": "true", "ml_model_type": "xgboost"},
    "dl": {"use_deep_learning": "true", "dl_model_type": "cnn_lstm"},
    "parallel": {"use_parallel": "true"},
    "ml_parallel": {"use_ml_calling": "true", "use_parallel": "true", "seed": "9"},
}


@pytest.mark.parametrize("case", sorted(FLAG_CASES))
def test_submit_hash_is_the_hash_the_worker_runs_with(
    client: TestClient, harness: Harness, case: str
) -> None:
    if case.startswith("dl"):
        pytest.importorskip("torch")
    flags = FLAG_CASES[case]
    for config in ({"config_template": "smoke"}, {"config_yaml": "calling:\n  alpha: 0.01\n"}):
        accepted = submit(client, **config, **flags)
        params = harness.worker_params(accepted["job_id"])
        assert accepted["config_hash"] == params.config_hash, (case, config)
        plain = submit(client, **config, seed=flags.get("seed", "42"))
        if case.startswith(("ml", "dl")):  # the filter is part of what runs, so of the hash
            assert plain["config_hash"] != accepted["config_hash"], (case, config)
        elif case == "plain":
            assert plain["config_hash"] == accepted["config_hash"]
        if "use_parallel" in flags:  # threads and processes, only where the config has none
            cores = max(1, min(4, os.cpu_count() or 1))
            assert params.threads == (1 if "config_template" in config else cores)
            assert params.processes == cores  # NB: no template sets processes
        if case.startswith("ml"):
            assert params.ml.use_ml_calling
        if case == "dl":
            assert params.ml.use_deep_learning and params.ml.dl_model_type == "cnn_lstm"


# ---------------------------------------------------------------------------- size limit


def oversized_yaml(n_bytes: int = OVERSIZE) -> str:
    head = "validation:\n  tumor_fractions: ["
    body = ", ".join(["0.0"] * ((n_bytes - 100) // 5))
    text = f"{head}{body}]\n"
    return text + "#" * (n_bytes - len(text) - 1) + "\n"


@pytest.fixture
def no_yaml_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the YAML parser was called on an oversized config")

    for name in ("safe_load", "load", "compose", "safe_load_all"):
        monkeypatch.setattr(yaml, name, refuse)


def _error(response: Any) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    return dict(response.json()["error"])


def test_the_limit_is_one_constant() -> None:
    from precise_mrd.service.api import configs

    assert MAX_CONFIG_BYTES == 256 * 1024
    assert getattr(configs, "MAX_CONFIG_BYTES", MAX_CONFIG_BYTES) is MAX_CONFIG_BYTES
    check_config_size(MAX_CONFIG_BYTES, source="x")
    with pytest.raises(Exception, match="262145 bytes"):
        check_config_size(MAX_CONFIG_BYTES + 1, source="x")
    assert len(oversized_yaml().encode()) == OVERSIZE


@pytest.mark.usefixtures("no_yaml_parser")
def test_oversized_config_is_refused_unparsed_at_every_api_entry_point(
    client: TestClient, harness: Harness
) -> None:
    text = oversized_yaml()
    raw = text.encode()
    expected = config_size_problem(OVERSIZE)
    as_json = json.dumps({"config_yaml": text})
    overrides = json.dumps(
        {"template": "smoke", "overrides": {"validation.tumor_fractions": [0.0] * 60_000}}
    )
    cases: dict[str, tuple[Any, str, str]] = {
        "validate-config raw body": (
            client.post("/validate-config", content=raw, headers={"content-type": "text/yaml"}),
            expected,
            "config_yaml",
        ),
        "validate-config form field": (
            client.post("/validate-config", data={"config_yaml": text}),
            expected,
            "config_yaml",
        ),
        "validate-config file": (
            client.post("/validate-config", files={"config_yaml": ("c.yaml", raw, "text/yaml")}),
            expected,
            "config_yaml",
        ),
        "validate-config JSON": (
            client.post(
                "/validate-config", content=as_json, headers={"content-type": "application/json"}
            ),
            config_size_problem(len(as_json.encode())),
            "config_yaml",
        ),
        "submit config_yaml": (
            client.post("/submit", data={"run_id": "big", "config_yaml": text}),
            expected,
            "config_yaml",
        ),
        "submit file": (
            client.post(
                "/submit",
                data={"run_id": "big"},
                files={"config_yaml": ("config.yaml", raw, "application/yaml")},
            ),
            expected,
            "config_yaml",
        ),
        "config-from-template": (
            client.post(
                "/config-from-template",
                content=overrides,
                headers={"content-type": "application/json"},
            ),
            config_size_problem(len(overrides.encode())),
            "overrides",
        ),
    }
    for entry, (response, message, field) in cases.items():
        error = _error(response)
        assert error["message"] == message, entry
        assert error["field"] == field and error["fix"] == CONFIG_SIZE_FIX, entry
        assert error["code"] == "invalid_config", entry
    assert harness.jobs.counts_by_state()[JobState.QUEUED] == 0


def test_a_config_uploaded_as_a_file_is_submitted(client: TestClient, harness: Harness) -> None:
    text = "calling:\n  alpha: 0.01\n"
    response = client.post(
        "/submit",
        data={"run_id": "file", "seed": "3"},
        files={"config_yaml": ("config.yaml", text.encode(), "application/yaml")},
    )
    assert response.status_code == 202, response.text
    expected = harness.worker_params(response.json()["job_id"])
    assert expected.calling.alpha == 0.01 and expected.seed == 3
    assert response.json()["config_hash"] == expected.config_hash


@pytest.mark.usefixtures("no_yaml_parser")
@pytest.mark.parametrize("command", ["run", "validate"])
def test_oversized_config_is_refused_unparsed_by_the_cli(tmp_path: Path, command: str) -> None:
    config = tmp_path / "big.yaml"
    config.write_text(oversized_yaml(), encoding="utf-8")
    args = {
        "run": ["run", "--bam", "r.bam", "--reference", "r.fa", "--variants", "v.vcf"],
        "validate": ["validate"],
    }[command]
    result = CliRunner().invoke(
        cli_app, [*args, "--out", str(tmp_path / "out"), "--config", str(config)]
    )
    assert result.exit_code == 2, result.output
    line = f"error: config {config}: {config_size_problem(OVERSIZE)}; fix: {CONFIG_SIZE_FIX}"
    assert result.stderr.strip() == line
    assert "Traceback" not in result.output


def test_cli_run_refuses_a_validation_config(tmp_path: Path) -> None:
    config = tmp_path / "series.yaml"
    config.write_text("job_type: validation\n", encoding="utf-8")
    inputs = ["--bam", "r.bam", "--reference", "r.fa", "--variants", "v.vcf"]
    result = CliRunner().invoke(
        cli_app, ["run", *inputs, "--out", str(tmp_path / "out"), "--config", str(config)]
    )
    assert result.exit_code == 2
    assert "config job_type: is 'validation'" in result.stderr
