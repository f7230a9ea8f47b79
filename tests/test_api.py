"""The API tier (the guide's ``pytest tests/test_api.py -v``): every endpoint's success and error
paths on the in-memory job service, in seconds. The same API as a real server process is tested in
tests/integration/test_api_server.py and, through the deployment guide's own examples, in
tests/integration/test_guide.py; /docs and /redoc in a browser without network in
tests/e2e/test_docs_offline.py.

The app runs in-process (Starlette's TestClient) over :class:`InMemoryJobService` and a real
:class:`LocalArtifactStore` in a temporary directory; no executor runs, so each test moves jobs
along itself with ``InMemoryJobService.update``. Uploads are real files built by the simulator.
"""

from __future__ import annotations

import gc
import gzip
import io
import json
import re
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

with warnings.catch_warnings():
    # NB: Starlette 1.x asks for the httpx2 package at import; httpx works the same here.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

from precise_mrd.pipeline.artifacts import ARTIFACTS, MEDIA_TYPES
from precise_mrd.service.app import create_app
from precise_mrd.service.jobs.memory import InMemoryJobService
from precise_mrd.service.jobs.model import JobState
from precise_mrd.service.settings import Settings
from precise_mrd.service.storage import LocalArtifactStore


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A tiny simulated sample (2 variants) with FASTQ, for real uploads."""
    from precise_mrd.core.simulate import SimulationParams
    from precise_mrd.pipeline.simulation import simulate_sample

    params = SimulationParams.preset("smoke", seed=3, n_variants=2, molecules_per_locus=20)
    return simulate_sample(tmp_path_factory.mktemp("api_sample"), params, write_fastq=True)


class Harness:
    def __init__(self, tmp_path: Path, **settings: Any) -> None:
        self.settings = Settings(data_dir=tmp_path, **settings)
        self.store = LocalArtifactStore(tmp_path / "artifacts")
        self.jobs = InMemoryJobService(artifact_root=self.store.root)
        self.app = create_app(
            self.settings, job_service=self.jobs, store=self.store, start_executor=False
        )

    def complete(self, job_id: str, decision: str = "negative") -> None:
        """Finish a job as a worker would: artifacts in the store, result, COMPLETE."""
        artifacts = {}
        for kind, name in ARTIFACTS.items():
            key = f"jobs/{job_id}/{name}"
            body = b"<html>report</html>" if kind == "report" else b"data"
            if kind == "metrics":
                body = json.dumps({"summary": {"molecules": 1999, "duplex_rate": 0.78}}).encode()
            self.store.put_stream(key, io.BytesIO(body))
            artifacts[kind] = key
        self.jobs.update(job_id, state=JobState.RUNNING, progress=0.5, stage="consensus")
        self.jobs.update(
            job_id,
            state=JobState.COMPLETE,
            progress=1.0,
            stage="done",
            result={"decision": decision, "tumor_fraction": 1e-3, "p_value": 0.01, "extra": 1},
            artifacts=artifacts,
        )


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    return Harness(tmp_path, max_upload_bytes=200_000)


@pytest.fixture
def client(harness: Harness) -> Iterator[TestClient]:
    with TestClient(harness.app) as test_client:
        yield test_client


def submit(client: TestClient, **fields: Any) -> Any:
    data = {"run_id": "test_job", "seed": "42", **fields}
    return client.post("/submit", data=data)


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert {"code", "message", "field", "fix", "request_id"} <= set(body["error"])
    return dict(body["error"])


# ---------------------------------------------------------------------------- submit


def test_ml_request_on_a_server_with_ml_off_is_422_naming_the_variable(tmp_path: Path) -> None:
    client = TestClient(Harness(tmp_path, enable_ml_calling=False).app)
    response = client.post(
        "/submit",
        files={
            "run_id": (None, "test_job"),
            "seed": (None, "42"),
            "use_ml_calling": (None, "true"),
            "ml_model_type": (None, "ensemble"),
        },
    )
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "feature_disabled"
    assert "ENABLE_ML_CALLING" in error["fix"] and error["field"] == "use_ml_calling"
    assert error["request_id"] == response.headers["x-request-id"]


def test_guide_example_on_a_default_server_is_accepted(tmp_path: Path) -> None:
    harness = Harness(tmp_path)  # ENABLE_ML_CALLING is on by default, as the guide sets it
    with TestClient(harness.app) as client:
        response = client.post(
            "/submit",
            files={
                "run_id": (None, "test_job"),
                "seed": (None, "42"),
                "use_ml_calling": (None, "true"),
                "ml_model_type": (None, "ensemble"),
            },
        )
    assert response.status_code == 202, response.text
    job = harness.jobs.get(response.json()["job_id"], tenant_id="default")
    assert job.spec.use_ml_calling and job.spec.ml_model_type == "ensemble"


@pytest.mark.parametrize(
    ("flag", "variable"),
    [("use_deep_learning", "ENABLE_DEEP_LEARNING"), ("use_parallel", "ENABLE_PARALLEL_PROCESSING")],
)
def test_other_disabled_features(tmp_path: Path, flag: str, variable: str) -> None:
    harness = Harness(tmp_path, enable_parallel_processing=False, enable_deep_learning=False)
    with TestClient(harness.app) as client:
        error = error_of(submit(client, **{flag: "true"}))
    assert error["code"] == "feature_disabled" and variable in error["message"]


def test_deep_learning_submission(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    harness = Harness(tmp_path)  # both filters are on by default
    with TestClient(harness.app) as client:
        accepted = submit(client, use_deep_learning="true", dl_model_type="cnn_lstm")
        assert accepted.status_code == 202, accepted.text
        job = harness.jobs.get(accepted.json()["job_id"], tenant_id="default")
        assert job.spec.use_deep_learning and job.spec.dl_model_type == "cnn_lstm"
        unknown = error_of(submit(client, use_deep_learning="true", dl_model_type="transformer"))
        assert unknown["field"] == "dl_model_type"
        both = error_of(submit(client, use_deep_learning="true", use_ml_calling="true"))
        assert both["field"] == "use_deep_learning" and "choose one" in both["fix"]
        monkeypatch.setitem(sys.modules, "torch", None)  # a server without the [dl] extra
        response = submit(client, use_deep_learning="true")
    assert response.status_code == 422
    error = error_of(response)
    assert error["field"] == "use_deep_learning"
    assert "pip install 'precise-mrd[dl]'" in error["fix"]
    jobs, _ = harness.jobs.list_jobs(tenant_id="default")
    assert len(jobs) == 1  # nothing is stored for a refused submission


def test_a_config_cannot_turn_on_a_switched_off_filter(tmp_path: Path) -> None:
    harness = Harness(tmp_path, enable_ml_calling=False, enable_deep_learning=False)
    with TestClient(harness.app) as client:
        ml = error_of(submit(client, config_yaml="ml:\n  use_ml_calling: true\n"))
        dl = error_of(submit(client, config_yaml="ml:\n  use_deep_learning: true\n"))
    assert ml["code"] == "feature_disabled" and ml["field"] == "ml.use_ml_calling"
    assert "ENABLE_ML_CALLING" in ml["fix"]
    assert dl["code"] == "feature_disabled" and "ENABLE_DEEP_LEARNING" in dl["fix"]
    jobs, _ = harness.jobs.list_jobs(tenant_id="default")
    assert jobs == []
    enabled = Harness(tmp_path / "on")
    with TestClient(enabled.app) as client:
        accepted = submit(client, config_yaml="ml:\n  use_ml_calling: true\n")
    assert accepted.status_code == 202, accepted.text


def test_submit_simulated_job(client: TestClient, harness: Harness) -> None:
    response = submit(client)
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "QUEUED" and body["run_id"] == "test_job"
    assert body["links"] == {
        "status": f"/status/{body['job_id']}",
        "results": f"/results/{body['job_id']}",
        "cancel": f"/jobs/{body['job_id']}/cancel",
    }
    assert response.headers["location"] == f"/status/{body['job_id']}"
    job = harness.jobs.get(body["job_id"], tenant_id="default")
    assert job.spec.seed == 42 and job.spec.inputs == {}
    assert job.spec.tenant_id == "default" and job.spec.owner_id == "anonymous"
    assert job.spec.request_id == response.headers["x-request-id"]
    assert len(body["config_hash"]) == 64


def test_form_seed_wins_and_hash_matches_the_config(client: TestClient) -> None:
    from precise_mrd.pipeline.params import PipelineParams

    first = submit(client, seed="7", config_yaml="seed: 3\ncalling:\n  alpha: 0.01\n").json()
    expected = PipelineParams.from_mapping({"seed": 7, "calling": {"alpha": 0.01}}).config_hash
    assert first["config_hash"] == expected


def test_submit_with_template_and_bad_config(client: TestClient) -> None:
    assert submit(client, config_template="smoke").status_code == 202
    error = error_of(submit(client, config_template="nope"))
    assert error["field"] == "config_template" and "smoke" in error["fix"]
    error = error_of(submit(client, config_yaml="calling:\n  alpha: 3\n"))
    assert error["code"] == "invalid_config" and error["field"] == "calling.alpha"
    error = error_of(submit(client, config_yaml="x", config_template="smoke"))
    assert "not both" in error["message"]


def test_submit_validates_form_fields(client: TestClient) -> None:
    assert error_of(client.post("/submit", data={"seed": "1"}))["code"] == "validation_error"
    error = error_of(submit(client, ml_model_type="svm"))
    assert error["field"] == "ml_model_type"
    assert submit(client, run_id="../etc").status_code == 422
    assert submit(client, seed="-1").status_code == 422


def test_submit_bam_upload(client: TestClient, harness: Harness, sample: Any) -> None:
    with (
        open(sample.bam_path, "rb") as reads,
        open(sample.reference_path, "rb") as reference,
        open(sample.vcf_path, "rb") as variants,
    ):
        response = client.post(
            "/submit",
            data={"run_id": "uploaded", "seed": "1"},
            files={
                "reads": ("/home/me/../me/x/sample.bam".replace("../me/", ""), reads),
                "reference": ("C:\\data\\ref.fa", reference),
                "variants": ("v.vcf", variants),
            },
        )
    assert response.status_code == 202, response.text
    job = harness.jobs.get(response.json()["job_id"], tenant_id="default")
    prefix = f"tenants/default/jobs/{job.job_id}/inputs/"
    assert job.spec.inputs == {
        "reads": prefix + "reads.bam",
        "reference": prefix + "reference.fa",
        "variants": prefix + "variants.vcf",
    }
    assert harness.store.path_for(prefix + "reads.bam").read_bytes() == sample.bam_path.read_bytes()


def test_submit_fastq_pair(client: TestClient, harness: Harness, sample: Any) -> None:
    files = {
        "reads": ("r1.fastq.gz", sample.fastq_r1_path.read_bytes()),
        "reads_r2": ("r2.fastq.gz", sample.fastq_r2_path.read_bytes()),
        "reference": ("ref.fa", sample.reference_path.read_bytes()),
        "variants": ("v.vcf", sample.vcf_path.read_bytes()),
    }
    data = {"run_id": "fq", "read_structures": "8M+T 8M+T"}
    response = client.post("/submit", data=data, files=files)
    assert response.status_code == 202, response.text
    spec = harness.jobs.get(response.json()["job_id"], tenant_id="default").spec
    assert spec.inputs["reads"].endswith("reads_R1.fastq.gz")
    assert spec.read_structures == "8M+T 8M+T"
    bad = {"run_id": "fq", "read_structures": "8M142T"}
    error = error_of(client.post("/submit", data=bad, files=files))
    assert error["field"] == "read_structures" and "two" in error["fix"]
    del files["reads_r2"]
    error = error_of(client.post("/submit", data={"run_id": "fq"}, files=files))
    assert error["field"] == "reads_r2"


def test_read_structures_only_with_fastq(client: TestClient, sample: Any) -> None:
    data = {"run_id": "b", "read_structures": "8M+T 8M+T"}
    error = error_of(client.post("/submit", data=data, files=_files(sample)))
    assert error["field"] == "read_structures" and "FASTQ reads only" in error["message"]


def _files(sample: Any, **replace: tuple[str, bytes]) -> dict[str, tuple[str, bytes]]:
    files = {
        "reads": ("reads.bam", sample.bam_path.read_bytes()),
        "reference": ("ref.fa", sample.reference_path.read_bytes()),
        "variants": ("v.vcf", sample.vcf_path.read_bytes()),
    }
    files.update(replace)
    return files


def test_not_a_bam_is_422_naming_the_file(
    client: TestClient, harness: Harness, sample: Any
) -> None:
    files = _files(sample, reads=("tumour.bam", b"this is not a bam file\n" * 10))
    response = client.post("/submit", data={"run_id": "bad"}, files=files)
    error = error_of(response)
    assert response.status_code == 422
    assert error["code"] == "invalid_upload" and error["field"] == "reads"
    assert "neither a BAM nor a FASTQ" in error["message"]
    assert not list(harness.store.root.rglob("inputs/*"))  # nothing left behind
    assert harness.jobs.counts_by_state()[JobState.QUEUED] == 0


def test_plain_gzip_is_not_a_bam(client: TestClient, sample: Any) -> None:
    fake = gzip.compress(b"BAM\x01" + b"\x00" * 100)
    error = error_of(
        client.post("/submit", data={"run_id": "b"}, files=_files(sample, reads=("x.bam", fake)))
    )
    assert "not BGZF" in error["message"]


def test_truncated_bam_fails_deep_validation(client: TestClient, sample: Any) -> None:
    data = sample.bam_path.read_bytes()[:-28]  # no BGZF EOF block
    error = error_of(
        client.post("/submit", data={"run_id": "b"}, files=_files(sample, reads=("x.bam", data)))
    )
    assert (
        error["field"] == "reads"
        and "truncated" in error["message"]
        and "x.bam" in error["message"]
    )


def test_variants_that_disagree_with_the_reference(client: TestClient, sample: Any) -> None:
    table = b"CHROM\tPOS\tREF\tALT\nnot_a_contig\t10\tA\tC\n"
    response = client.post(
        "/submit", data={"run_id": "v"}, files=_files(sample, variants=("v.tsv", table))
    )
    error = error_of(response)
    assert error["field"] == "variants" and "v.tsv" in error["message"]


@pytest.mark.parametrize(
    ("field", "content", "expected"),
    [
        ("reference", b"ACGT\n", "not a FASTA"),
        ("variants", b"hello\tworld\n", "neither a VCF"),
        ("targets", b"chr1 1 2\n", "not a BED"),
    ],
)
def test_sniffing_each_kind(
    client: TestClient, sample: Any, field: str, content: bytes, expected: str
) -> None:
    response = client.post(
        "/submit", data={"run_id": "s"}, files=_files(sample, **{field: ("f", content)})
    )
    error = error_of(response)
    assert error["field"] == field and expected in error["message"]


def test_files_without_reads_and_reads_without_reference(client: TestClient, sample: Any) -> None:
    error = error_of(
        client.post("/submit", data={"run_id": "x"}, files={"reference": ("r.fa", b">c\nACGT\n")})
    )
    assert error["field"] == "reference" and "without reads" in error["message"]
    files = _files(sample)
    del files["reference"]
    assert (
        error_of(client.post("/submit", data={"run_id": "x"}, files=files))["field"] == "reference"
    )


@pytest.mark.parametrize(
    "name", ["../../etc/passwd", "..\\..\\boot.ini", "a/../../b.bam", "..", "dir/"]
)
def test_path_traversal_in_file_names(client: TestClient, sample: Any, name: str) -> None:
    files = _files(sample, reads=(name, sample.bam_path.read_bytes()))
    response = client.post("/submit", data={"run_id": "t"}, files=files)
    assert response.status_code == 422
    assert error_of(response)["field"] == "reads"


def test_upload_over_the_limit_is_413(client: TestClient, harness: Harness, sample: Any) -> None:
    big = b"@r\n" + b"A" * 300_000 + b"\n+\n" + b"I" * 300_000 + b"\n"
    files = _files(sample, reads=("big.fastq", big), reads_r2=("r2.fastq", big))
    response = client.post("/submit", data={"run_id": "big"}, files=files)
    assert response.status_code == 413
    error = error_of(response)
    assert error["field"] == "reads" and "PRECISE_MRD_MAX_UPLOAD_BYTES" in error["fix"]
    assert not list(harness.store.root.rglob("reads_R1*"))


def test_whole_request_over_the_limit_is_413_before_parsing(harness: Harness) -> None:
    with TestClient(harness.app) as client:
        response = client.post(
            "/submit",
            content=b"x" * 100,
            headers={
                "content-type": "multipart/form-data; boundary=b",
                "content-length": str(10**12),
            },
        )
    assert response.status_code == 413
    assert error_of(response)["code"] == "payload_too_large"


def test_chunked_request_over_the_limit_is_413(harness: Harness) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="run_id"\r\n\r\nx\r\n'
        for _ in range(40):
            yield b"x" * 65536  # 2.6 MB in all, over 5 x 200 kB + 1 MiB

    with TestClient(harness.app) as client:
        response = client.post(
            "/submit",
            content=chunks(),
            headers={"content-type": "multipart/form-data; boundary=b"},
        )
    assert response.status_code == 413
    assert error_of(response)["code"] == "payload_too_large"


# ---------------------------------------------------------------------------- status, results


def test_status_progress_and_reason(client: TestClient, harness: Harness) -> None:
    job_id = submit(client).json()["job_id"]
    body = client.get(f"/status/{job_id}").json()
    assert body["state"] == body["status"] == "QUEUED" and body["progress"] == 0
    harness.jobs.update(job_id, state=JobState.RUNNING, progress=0.4, stage="consensus")
    body = client.get(f"/status/{job_id}").json()
    assert (body["state"], body["progress"], body["stage"]) == ("RUNNING", 0.4, "consensus")
    assert body["started_at"] is not None and not body["is_finished"]
    harness.jobs.update(job_id, state=JobState.SYSTEM_ERROR, reason="timeout")
    body = client.get(f"/status/{job_id}").json()
    assert body["reason"] == "timeout" and body["is_finished"]


def test_status_body_is_the_listings_job_read(client: TestClient, harness: Harness) -> None:
    """/status renders its JobRead itself (StatusBodies); FastAPI renders /jobs' items. Same."""
    job_id = submit(client).json()["job_id"]
    for finish in (None, lambda: harness.complete(job_id, decision="positive")):
        if finish is not None:
            finish()
        status = client.get(f"/status/{job_id}")
        assert status.headers["content-type"] == "application/json"
        listed = client.get("/jobs").json()["jobs"]
        assert [status.json()] == listed
        assert status.content == client.get(f"/status/{job_id}").content
    assert status.json()["state"] == "COMPLETE"


def test_status_bodies_kept_for_the_same_finished_view_only() -> None:
    from dataclasses import replace
    from datetime import UTC, datetime

    from precise_mrd.service.api.jobs import StatusBodies
    from precise_mrd.service.jobs.model import JobSpec, JobView

    now = datetime.now(UTC)
    running = JobView("j1", JobSpec("r", 1, ""), JobState.RUNNING, 0.5, "consensus", None,
                      now, now, None, 1, None, {})  # fmt: skip
    bodies = StatusBodies(max_entries=2)
    assert json.loads(bodies.body(running))["state"] == "RUNNING" and len(bodies) == 0
    done = replace(running, state=JobState.COMPLETE, progress=1.0, finished_at=now)
    first = bodies.body(done)
    assert bodies.body(done) is first and len(bodies) == 1
    # a view read again (another object) is rendered again, and replaces the kept one
    again = replace(done, stage="report")
    assert json.loads(bodies.body(again))["stage"] == "report" and len(bodies) == 1
    # a body goes with its view: the bodies keep no view alive
    del again
    gc.collect()
    assert len(bodies) == 0
    views = [replace(done, job_id=f"k{n}") for n in range(3)]
    for view in views:
        bodies.body(view)
    assert len(bodies) == 2


def test_unknown_job_is_404_everywhere(client: TestClient) -> None:
    for method, path in [
        ("GET", "/status/nope"),
        ("GET", "/results/nope"),
        ("GET", "/download/nope/report"),
        ("POST", "/jobs/nope/cancel"),
    ]:
        response = client.request(method, path)
        assert response.status_code == 404, path
        assert error_of(response)["code"] == "job_not_found"


def test_other_tenants_job_is_404(client: TestClient, harness: Harness) -> None:
    from precise_mrd.service.security.principal import Principal

    job_id = submit(client).json()["job_id"]
    mallory = Principal("other", "mallory", "viewer")

    async def as_mallory(scope: Any, receive: Any, send: Any) -> None:
        # NB: where the authentication middleware leaves the caller it verified
        scope.setdefault("state", {})["principal"] = mallory
        await harness.app(scope, receive, send)

    other = TestClient(as_mallory)
    assert other.get(f"/status/{job_id}").status_code == 404
    assert other.get("/jobs").json()["jobs"] == []
    assert client.get(f"/status/{job_id}").status_code == 200


def test_results_409_until_finished_then_call_and_downloads(
    client: TestClient, harness: Harness
) -> None:
    job_id = submit(client).json()["job_id"]
    response = client.get(f"/results/{job_id}")
    assert response.status_code == 409
    assert error_of(response)["state"] == "QUEUED"
    harness.complete(job_id, decision="positive")
    body = client.get(f"/results/{job_id}").json()
    assert body["state"] == "COMPLETE"
    assert body["sample_call"]["decision"] == "positive"
    assert "extra" not in body["sample_call"]
    assert body["metrics"] == {"molecules": 1999, "duplex_rate": 0.78}
    assert set(body["downloads"]) == set(ARTIFACTS)
    assert body["downloads"]["report"].endswith(f"/download/{job_id}/report")


def test_results_of_a_failed_job_give_the_reason(client: TestClient, harness: Harness) -> None:
    job_id = submit(client).json()["job_id"]
    harness.jobs.update(job_id, state=JobState.EXECUTOR_ERROR, reason="reads.bam: is truncated")
    body = client.get(f"/results/{job_id}").json()
    assert body["state"] == "EXECUTOR_ERROR" and body["reason"] == "reads.bam: is truncated"
    assert body["sample_call"] is None and body["downloads"] == {}


# ---------------------------------------------------------------------------- downloads


def test_download_every_type(client: TestClient, harness: Harness) -> None:
    job_id = submit(client, run_id="my.run").json()["job_id"]
    harness.complete(job_id)
    for kind, name in ARTIFACTS.items():
        response = client.get(f"/download/{job_id}/{kind}")
        assert response.status_code == 200, kind
        assert response.headers["content-type"].split(";")[0] == MEDIA_TYPES[kind]
        assert f'filename="my.run.{name}"' in response.headers["content-disposition"]
    report = client.get(f"/download/{job_id}/report")
    assert report.content == b"<html>report</html>"
    # a report is patient data and runs no script: a strict policy, never cached
    policy = report.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src" not in policy
    assert report.headers["Cache-Control"] == "no-store"


def test_download_before_completion_and_unknown_type(client: TestClient, harness: Harness) -> None:
    job_id = submit(client).json()["job_id"]
    response = client.get(f"/download/{job_id}/report")
    assert response.status_code == 409 and error_of(response)["state"] == "QUEUED"
    harness.complete(job_id)
    response = client.get(f"/download/{job_id}/bogus")
    assert response.status_code == 404
    assert error_of(response)["code"] == "unknown_artifact_type"


@pytest.mark.parametrize(
    "artifact_type", ["..%2F..%2Fjobs.db", "%2E%2E", "..", "report%00", "report.html"]
)
def test_path_traversal_in_download_types(
    client: TestClient, harness: Harness, artifact_type: str
) -> None:
    job_id = submit(client).json()["job_id"]
    harness.complete(job_id)
    response = client.get(f"/download/{job_id}/{artifact_type}")
    assert response.status_code == 404
    assert b"report" not in response.content or b"unknown" in response.content


# ---------------------------------------------------------------------------- cancel, list


def test_cancel(client: TestClient, harness: Harness) -> None:
    queued = submit(client).json()["job_id"]
    response = client.post(f"/jobs/{queued}/cancel")
    assert response.status_code == 202 and response.json()["state"] == "CANCELED"
    running = submit(client).json()["job_id"]
    harness.jobs.update(running, state=JobState.RUNNING)
    assert client.post(f"/jobs/{running}/cancel").json()["state"] == "CANCELING"
    response = client.post(f"/jobs/{queued}/cancel")
    assert response.status_code == 409 and error_of(response)["state"] == "CANCELED"


def test_list_newest_first_with_cursor_and_filters(client: TestClient, harness: Harness) -> None:
    ids = [submit(client, run_id=f"run{i % 2}").json()["job_id"] for i in range(7)]
    harness.jobs.update(ids[0], state=JobState.RUNNING)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/jobs", params=params).json()
        seen += [job["job_id"] for job in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    run1 = client.get("/jobs", params={"run_id": "run1"}).json()["jobs"]
    assert [job["job_id"] for job in run1] == [ids[5], ids[3], ids[1]]
    running = client.get("/jobs", params={"state": "RUNNING"}).json()["jobs"]
    assert [job["job_id"] for job in running] == [ids[0]]
    assert client.get("/jobs", params={"state": "NOPE"}).status_code == 422
    assert error_of(client.get("/jobs", params={"cursor": "!!"}))["field"] == "cursor"


def test_page_size_is_capped(tmp_path: Path) -> None:
    harness = Harness(tmp_path, max_page_size=2)
    with TestClient(harness.app) as client:
        for _ in range(3):
            submit(client)
        page = client.get("/jobs", params={"limit": 1000}).json()
    assert page["limit"] == 2 and len(page["jobs"]) == 2 and page["next_cursor"]


# ---------------------------------------------------------------------------- configs


def test_validate_config_all_errors_with_paths(client: TestClient) -> None:
    text = "calling:\n  alpha: 2\n  n_bootstrap: 5\numi:\n  strategy: magic\nbogus: 1\n"
    body = client.post(
        "/validate-config", content=text, headers={"content-type": "application/yaml"}
    ).json()
    assert body["valid"] is False
    assert {error["path"] for error in body["errors"]} == {
        "calling.alpha",
        "calling.n_bootstrap",
        "umi.strategy",
        "bogus",
    }


def test_validate_config_valid_with_warnings_and_estimate(client: TestClient) -> None:
    from precise_mrd.pipeline.params import PipelineParams

    text = "umi:\n  strategy: adjacency\ncalling:\n  n_bootstrap: 200\n"
    for kwargs in (
        {"content": text, "headers": {"content-type": "text/plain"}},
        {"data": {"config_yaml": text}},
        {"json": {"config_yaml": text}},
    ):
        body = client.post("/validate-config", **kwargs).json()
        assert body["valid"] is True, body
        assert body["config_hash"] == PipelineParams.from_yaml_text(text).config_hash
        assert any("umi.strategy" in warning for warning in body["warnings"])
        assert any("n_bootstrap" in warning for warning in body["warnings"])
        assert body["estimated_runtime"]["simulated_sample_seconds"] > 0
        assert body["resolved_yaml"].startswith("# config_hash:")


def test_validate_config_bad_yaml_and_missing_field(client: TestClient) -> None:
    body = client.post(
        "/validate-config", content="a: [1", headers={"content-type": "application/yaml"}
    ).json()
    assert body["valid"] is False and "YAML" in body["errors"][0]["message"]
    assert error_of(client.post("/validate-config", data={"x": "1"}))["field"] == "config_yaml"


def test_templates_and_config_from_template(client: TestClient) -> None:
    templates = client.get("/config-templates").json()["templates"]
    names = {template["name"] for template in templates}
    assert {"smoke", "standard-panel", "duplex-high-depth", "validation-dilution"} <= names
    assert all(template["description"] for template in templates)
    response = client.post(
        "/config-from-template",
        json={"template": "duplex-high-depth", "overrides": {"calling.alpha": 0.02, "seed": 9}},
    )
    body = response.json()
    assert "alpha: 0.02" in body["config_yaml"] and "seed: 9" in body["config_yaml"]
    assert "min_reads:\n  - 3" in body["config_yaml"]
    error = error_of(
        client.post(
            "/config-from-template", json={"template": "smoke", "overrides": {"calling.alpha": 5}}
        )
    )
    assert error["field"] == "calling.alpha"
    assert client.post("/config-from-template", json={"template": "nope"}).status_code == 422


# ---------------------------------------------------------------------------- health, metrics, docs


def test_health(client: TestClient) -> None:
    body = client.get("/health").json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "artifact_store", "executor", "cache"}
    assert all(check["duration_ms"] >= 0 for check in body["checks"].values())
    assert client.get("/health/live").json() == {"status": "alive"}
    assert client.get("/health/ready").status_code == 200


def test_health_degraded_when_a_backend_fails(client: TestClient, harness: Harness) -> None:
    def broken() -> dict[JobState, int]:
        raise RuntimeError("database is locked")

    harness.jobs.counts_by_state = broken  # type: ignore[method-assign]
    response = client.get("/health/ready")
    assert response.status_code == 503
    assert "database is locked" in response.json()["checks"]["database"]["detail"]


def test_metrics(client: TestClient, harness: Harness) -> None:
    job_id = submit(client).json()["job_id"]
    client.get(f"/status/{job_id}")
    client.get("/status/unknown")
    harness.complete(job_id, decision="positive")
    text = client.get("/metrics").text
    assert (
        'precise_mrd_http_requests_total{method="GET",route="/status/{job_id}",status="200"} 1.0'
        in text
    )
    assert (
        'precise_mrd_http_errors_total{method="GET",route="/status/{job_id}",status="404"} 1.0'
        in text
    )
    assert 'precise_mrd_jobs{state="COMPLETE"} 1.0' in text
    assert 'precise_mrd_detection_outcomes_total{decision="positive"} 1.0' in text
    assert "precise_mrd_job_duration_seconds_count" in text
    assert "precise_mrd_http_request_duration_seconds_bucket" in text


def test_metrics_say_where_the_memory_is(client: TestClient) -> None:
    """Python's allocated blocks, and glibc's bytes in use and kept free (this machine is glibc;
    elsewhere the malloc family is absent, never wrong)."""
    import re
    import sys

    def figure(text: str, name: str) -> float:
        found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
        assert found, name
        return float(found.group(1))

    text = client.get("/metrics").text
    blocks = figure(text, "precise_mrd_python_allocated_blocks")
    assert 0.5 < blocks / sys.getallocatedblocks() < 2
    kept = [bytearray(1 << 20) for _ in range(8)]  # NB: 8 MB more in use, then given back
    more = figure(client.get("/metrics").text, 'precise_mrd_malloc_bytes{kind="in_use"}')
    del kept
    after = figure(client.get("/metrics").text, 'precise_mrd_malloc_bytes{kind="in_use"}')
    assert more - after > 7 * 2**20
    assert figure(text, 'precise_mrd_malloc_bytes{kind="free"}') >= 0


def test_two_apps_do_not_share_metrics(tmp_path: Path) -> None:
    first, second = Harness(tmp_path / "a"), Harness(tmp_path / "b")
    with TestClient(first.app) as one, TestClient(second.app) as two:
        one.get("/health/live")
        assert 'route="/health/live"' not in two.get("/metrics").text


def test_request_id_is_echoed_or_made(client: TestClient) -> None:
    response = client.get("/health/live", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    response = client.get("/health/live", headers={"X-Request-ID": "bad id with spaces"})
    assert response.headers["x-request-id"] != "bad id with spaces"
    assert len(response.headers["x-request-id"]) == 32


def test_openapi_documents_every_endpoint(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in (
        "/submit",
        "/status/{job_id}",
        "/results/{job_id}",
        "/download/{job_id}/{artifact_type}",
        "/jobs/{job_id}/cancel",
        "/jobs",
        "/health",
        "/health/live",
        "/health/ready",
        "/validate-config",
        "/config-templates",
        "/config-from-template",
        "/metrics",
    ):
        assert path in paths, path
    assert "422" in paths["/submit"]["post"]["responses"]
    assert "413" in paths["/submit"]["post"]["responses"]
    assert "409" in paths["/results/{job_id}"]["get"]["responses"]
    assert client.get("/docs").status_code == 200 and client.get("/redoc").status_code == 200


def test_unknown_route_uses_the_error_body(client: TestClient) -> None:
    response = client.get("/nope")
    assert response.status_code == 404 and error_of(response)["code"] == "not_found"


# ---------------------------------------------------------------------------- docs pages


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_nothing_from_the_internet(client: TestClient, page: str) -> None:
    html = client.get(page)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert "http://" not in html.text and "https://" not in html.text, html.text
    assets = re.findall(r'(?:src|href)="([^"]+)"', html.text)
    assert assets and all(asset.startswith("/static/docs/") for asset in assets), assets
    for asset in assets:
        served = client.get(asset)
        assert served.status_code == 200 and len(served.content) > 1000, asset
    assert "/openapi.json" in html.text


def test_docs_static_files_are_not_a_way_out_of_their_directory(client: TestClient) -> None:
    assert client.get("/static/docs/../../settings.py").status_code == 404
    assert client.get("/static/docs/%2e%2e/__init__.py").status_code == 404


# ---------------------------------------------------------------------------- backends down


def test_a_database_that_does_not_answer_is_a_503_with_retry_after(
    harness: Harness, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fast stand-in for the fault test on a real server: the service's own exception types."""
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    job_id = submit(client).json()["job_id"]
    for error in (OperationalError("SELECT", {}, ConnectionRefusedError()), PoolTimeout("busy")):

        def failing(*_args: Any, error: Exception = error, **_kwargs: Any) -> Any:
            raise error

        monkeypatch.setattr(harness.jobs, "get", failing)
        response = client.get(f"/status/{job_id}")
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == "5"
        problem = error_of(response)
        assert problem["code"] == "database_unavailable" and "GET /health" in problem["fix"]
        assert "Traceback" not in response.text and "SELECT" not in response.text
