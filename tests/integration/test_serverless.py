"""Every serverless handler, called as its platform calls it, on the servers the tests start.

* AWS: ``api_handler`` with API Gateway HTTP API (payload 2.0) events, ``storage_event_handler``
  with S3 ``ObjectCreated:Put`` notifications against SeaweedFS, ``maintenance_handler`` with an
  EventBridge scheduled event; the broker is the machine's Redis.
* GCP: ``serverless/gcp/main.py`` served by the Functions Framework's own app (what Cloud Run
  runs): an HTTP request, and a ``google.cloud.storage.object.v1.finalized`` CloudEvent in binary
  mode, against gcp-storage-emulator.
* Azure: ``serverless/azure/function_app.py``'s functions, taken from its ``FunctionApp`` as the
  host does: an ``HttpRequest``, and an Event Grid ``Microsoft.Storage.BlobCreated`` event,
  against Azurite.

A sample lands as ``incoming/<tenant>/<sample>/`` + ``manifest.json``; the event runs it to
COMPLETE in the function (local executor); a second delivery of the same event runs nothing.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote_plus

import pytest
import redis

from objectstores import BUCKET, ObjectServer, start
from precise_mrd.service.jobs.model import JobState
from precise_mrd.service.serverless import runtime as serverless_runtime
from precise_mrd.service.storage.factory import open_store
from servers import ROOT

pytestmark = [pytest.mark.s3, pytest.mark.redis]

REDIS_URL = "redis://127.0.0.1:6379/0"


def _load(path: Path, name: str) -> ModuleType:
    """Import a function app's entry file as its platform does (by path, as a top module)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObjectServer]:
    server = start("s3", tmp_path_factory.mktemp("serverless-s3"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObjectServer]:
    server = start("gcs", tmp_path_factory.mktemp("serverless-gcs"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def azure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObjectServer]:
    server = start("azure", tmp_path_factory.mktemp("serverless-azure"))
    yield server
    server.stop()


@pytest.fixture
def queue() -> Iterator[str]:
    """A Celery queue of the test's own on the machine's Redis (deleted afterwards)."""
    name = f"serverless-{uuid.uuid4().hex[:8]}"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    client.delete(name)
    client.close()


def _configure(
    monkeypatch: pytest.MonkeyPatch, server: ObjectServer, tmp_path: Path, **variables: str
) -> dict[str, str]:
    """A function's environment: the store, a SQLite job database, a data dir in /tmp."""
    environment = {
        **server.env(f"artifacts-{uuid.uuid4().hex[:6]}"),
        "PRECISE_MRD_DATA_DIR": str(tmp_path / "data"),
        "PRECISE_MRD_WARM_KERNELS_ON_START": "false",
        **variables,
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    serverless_runtime.reset_runtime()
    return environment


@pytest.fixture(autouse=True)
def _fresh_runtime() -> Iterator[None]:
    """Each test is a cold start; afterwards its adapters' loops and engines are closed."""
    from precise_mrd.service.serverless import aws, gcp
    from precise_mrd.service.serverless import azure as azure_handlers

    serverless_runtime.reset_runtime()
    yield
    for module in (aws, gcp, azure_handlers):
        module.reset()


def _land_sample(bucket_url: str, tenant: str, sample: str, smoke_sample: Any) -> str:
    """Write a sample's files, then its manifest, as a lab's upload script would."""
    landing = open_store(bucket_url, default_root=Path("/nowhere"))
    folder = f"incoming/{tenant}/{sample}/"
    landing.put_file(folder + "reads.bam", smoke_sample.bam_path)
    landing.put_file(folder + "reference.fa", smoke_sample.reference_path)
    landing.put_file(folder + "tumour.vcf", smoke_sample.vcf_path)
    manifest = {
        "run_id": f"{sample}-draw1",
        "seed": 3,
        "files": {"reads": "reads.bam", "reference": "reference.fa", "variants": "tumour.vcf"},
    }
    manifest_path = Path(str(smoke_sample.bam_path) + f".{sample}.manifest.json")
    manifest_path.write_text(json.dumps(manifest))
    landing.put_file(folder + "manifest.json", manifest_path)
    return folder + "manifest.json"


def _job_state(job_id: str) -> tuple[JobState, dict[str, str]]:
    service = serverless_runtime.current_runtime().service
    job = service.get(job_id, tenant_id=None)
    return job.state, dict(job.artifacts)


# ---------------------------------------------------------------------------------------- AWS


def _http_api_event(
    method: str, path: str, *, body: bytes = b"", headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """An API Gateway HTTP API (payload format 2.0) event, as the gateway sends it."""
    binary = bool(body) and not body.isascii()
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {
            "host": "a1b2c3.execute-api.eu-west-1.amazonaws.com",
            "user-agent": "curl/8.5.0",
            "x-forwarded-for": "127.0.0.1",
            "x-forwarded-port": "443",
            "x-forwarded-proto": "https",
            **(headers or {}),
        },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "a1b2c3",
            "domainName": "a1b2c3.execute-api.eu-west-1.amazonaws.com",
            "domainPrefix": "a1b2c3",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "curl/8.5.0",
            },
            "requestId": "JKJaXmPLvHcESHA=",
            "routeKey": "$default",
            "stage": "$default",
            "time": "05/Dec/2026:06:40:00 +0000",
            "timeEpoch": 1796366400000,
        },
        "body": base64.b64encode(body).decode() if binary else body.decode(),
        "isBase64Encoded": binary,
    }


def _s3_put_event(bucket: str, key: str, *, sequencer: str) -> dict[str, Any]:
    """An S3 ``ObjectCreated:Put`` notification (keys arrive URL-encoded)."""
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "eu-west-1",
                "eventTime": "2026-12-05T06:40:00.000Z",
                "eventName": "ObjectCreated:Put",
                "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"},
                "requestParameters": {"sourceIPAddress": "127.0.0.1"},
                "responseElements": {"x-amz-request-id": "C3D13FE58DE4C810"},
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "ManifestLanded",
                    "bucket": {
                        "name": bucket,
                        "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                        "arn": f"arn:aws:s3:::{bucket}",
                    },
                    "object": {
                        "key": quote_plus(key, safe="/"),
                        "size": 1024,
                        "eTag": "d41d8cd98f00b204e9800998ecf8427e",
                        "sequencer": sequencer,
                    },
                },
            }
        ]
    }


def test_aws_api_handler_serves_the_api_and_sends_the_job_to_the_broker(
    s3: ObjectServer, queue: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from precise_mrd.service.serverless import aws

    _configure(
        monkeypatch,
        s3,
        tmp_path,
        PRECISE_MRD_EXECUTOR="celery",
        PRECISE_MRD_BROKER_URL=REDIS_URL,
        PRECISE_MRD_CELERY_QUEUE=queue,
    )
    aws.reset()
    live = aws.api_handler(_http_api_event("GET", "/health/live"), None)
    assert live["statusCode"] == 200, live
    ready = aws.api_handler(_http_api_event("GET", "/health/ready"), None)
    assert ready["statusCode"] == 200, ready["body"]
    submitted = aws.api_handler(
        _http_api_event(
            "POST",
            "/submit",
            body=b"run_id=lambda_job&seed=42",
            headers={"content-type": "application/x-www-form-urlencoded"},
        ),
        None,
    )
    assert submitted["statusCode"] == 202, submitted["body"]
    job_id = json.loads(submitted["body"])["job_id"]
    # NB: sent inside the request: a function is frozen once it has answered
    broker = redis.Redis.from_url(REDIS_URL)
    assert broker.llen(queue) == 1
    status = aws.api_handler(_http_api_event("GET", f"/status/{job_id}"), None)
    assert json.loads(status["body"])["state"] == "QUEUED"
    assert status["headers"]["x-content-type-options"] == "nosniff"
    # a job stored without a message (a broker that was away) is sent by the schedule
    from precise_mrd.service.jobs.model import JobSpec

    runtime = serverless_runtime.current_runtime()
    runtime.service.submit(JobSpec(run_id="missed", seed=1, config_yaml=""))
    done = aws.maintenance_handler(
        {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}, None
    )
    assert done["sent"] == 1 and done["recovered"] == 0
    assert broker.llen(queue) == 2
    broker.close()


def test_aws_api_refuses_the_local_executor_with_the_fix(
    s3: ObjectServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from precise_mrd.core.errors import ConfigError
    from precise_mrd.service.serverless import aws

    _configure(monkeypatch, s3, tmp_path, PRECISE_MRD_EXECUTOR="local")
    aws.reset()
    with pytest.raises(ConfigError, match="PRECISE_MRD_EXECUTOR=celery"):
        aws.api_handler(_http_api_event("GET", "/health/live"), None)


def test_aws_s3_event_runs_the_sample_once(
    s3: ObjectServer, smoke_sample: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from precise_mrd.service.serverless import aws

    _configure(monkeypatch, s3, tmp_path, PRECISE_MRD_EXECUTOR="local")
    aws.reset()
    spaced = _s3_put_event(BUCKET, "incoming/lab-a/patient 7/manifest.json", sequencer="00A1")
    assert aws.s3_arrivals(spaced)[0].key == "incoming/lab-a/patient 7/manifest.json"  # decoded
    # NB: "patient 7" is not a safe folder name: not a manifest of ours
    assert aws.storage_event_handler(spaced, None)["outcomes"][0]["action"] == "ignored"

    manifest_key = _land_sample(f"s3://{BUCKET}", "lab-a", "patient7", smoke_sample)
    event = _s3_put_event(BUCKET, manifest_key, sequencer="0055AED6DCD90281E6")
    (outcome,) = aws.storage_event_handler(event, None)["outcomes"]
    assert outcome["action"] == "ran" and outcome["state"] == "COMPLETE", outcome
    state, artifacts = _job_state(outcome["job_id"])
    assert state == JobState.COMPLETE and "report" in artifacts
    assert artifacts["report"].startswith(f"tenants/lab-a/jobs/{outcome['job_id']}/")
    # the same notification again (S3 delivers at least once): nothing runs
    (again,) = aws.storage_event_handler(event, None)["outcomes"]
    assert again == {"key": manifest_key, "action": "duplicate", "job_id": outcome["job_id"],
                     "state": "COMPLETE"}  # fmt: skip
    jobs, _ = serverless_runtime.current_runtime().service.list_jobs(tenant_id="lab-a")
    assert [job.job_id for job in jobs] == [outcome["job_id"]]
    # a sample file's own notification is not a manifest
    other = _s3_put_event(BUCKET, "incoming/lab-a/patient7/reads.bam", sequencer="0055AED6DCD9")
    assert aws.storage_event_handler(other, None)["outcomes"][0]["action"] == "ignored"


def test_aws_s3_event_rejects_a_manifest_naming_a_missing_file(
    s3: ObjectServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from precise_mrd.service.serverless import aws

    _configure(monkeypatch, s3, tmp_path, PRECISE_MRD_EXECUTOR="local")
    aws.reset()
    landing = open_store(f"s3://{BUCKET}", default_root=Path("/nowhere"))
    bad = tmp_path / "manifest.json"
    bad.write_text(json.dumps({"files": {"reads": "reads.bam", "reference": "ref.fa",
                                         "variants": "v.vcf"}}))  # fmt: skip
    landing.put_file("incoming/lab-b/s9/manifest.json", bad)
    event = _s3_put_event(BUCKET, "incoming/lab-b/s9/manifest.json", sequencer="00AA")
    (outcome,) = aws.storage_event_handler(event, None)["outcomes"]
    assert outcome["action"] == "rejected"
    assert "incoming/lab-b/s9/reads.bam is not there" in outcome["reason"]
    assert "write the sample's files before manifest.json" in outcome["reason"]
    jobs, _ = serverless_runtime.current_runtime().service.list_jobs(tenant_id="lab-b")
    assert jobs == []
    bad.write_text("{not json")
    landing.put_file("incoming/lab-b/s9/manifest.json", bad)
    event = _s3_put_event(BUCKET, "incoming/lab-b/s9/manifest.json", sequencer="00AB")
    (outcome,) = aws.storage_event_handler(event, None)["outcomes"]
    assert outcome["action"] == "rejected" and "not JSON" in outcome["reason"]


# ---------------------------------------------------------------------------------------- GCP


def test_gcp_functions_serve_the_api_and_run_a_finalized_sample(
    gcs: ObjectServer,
    queue: str,
    smoke_sample: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import functions_framework

    from precise_mrd.service.serverless import gcp

    source = str(ROOT / "serverless" / "gcp" / "main.py")
    _configure(
        monkeypatch,
        gcs,
        tmp_path,
        PRECISE_MRD_EXECUTOR="celery",
        PRECISE_MRD_BROKER_URL=REDIS_URL,
        PRECISE_MRD_CELERY_QUEUE=queue,
    )
    gcp.reset()
    http = functions_framework.create_app("api", source, "http").test_client()
    assert http.get("/health/live").status_code == 200
    submitted = http.post("/submit", data={"run_id": "gcf_job", "seed": "7"})
    assert submitted.status_code == 202, submitted.data
    job_id = submitted.get_json()["job_id"]
    assert http.get(f"/status/{job_id}").get_json()["state"] == "QUEUED"

    # the storage function runs samples itself (no workers): the local executor
    monkeypatch.setenv("PRECISE_MRD_EXECUTOR", "local")
    gcp.reset()
    manifest_key = _land_sample(f"gs://{BUCKET}", "lab-g", "s2", smoke_sample)
    data = {
        "kind": "storage#object",
        "id": f"{BUCKET}/{manifest_key}/1733390000123456",
        "name": manifest_key,
        "bucket": BUCKET,
        "generation": "1733390000123456",
        "metageneration": "1",
        "contentType": "application/json",
        "size": "180",
        "timeCreated": "2026-12-05T06:40:00.000Z",
        "updated": "2026-12-05T06:40:00.000Z",
    }
    headers = {
        "ce-id": "8391472049183425",
        "ce-specversion": "1.0",
        "ce-source": f"//storage.googleapis.com/projects/_/buckets/{BUCKET}",
        "ce-type": "google.cloud.storage.object.v1.finalized",
        "ce-subject": f"objects/{manifest_key}",
        "ce-time": "2026-12-05T06:40:00.000Z",
        "Content-Type": "application/json",
    }
    events = functions_framework.create_app("on_object_finalized", source, "cloudevent")
    delivered = events.test_client().post("/", headers=headers, json=data)
    assert delivered.status_code == 200, delivered.data
    runtime = serverless_runtime.current_runtime()
    jobs, _ = runtime.service.list_jobs(tenant_id="lab-g")
    assert len(jobs) == 1 and jobs[0].state == JobState.COMPLETE, jobs
    assert events.test_client().post("/", headers=headers, json=data).status_code == 200
    jobs_after, _ = runtime.service.list_jobs(tenant_id="lab-g")
    assert [job.job_id for job in jobs_after] == [jobs[0].job_id]  # a redelivery runs nothing


# -------------------------------------------------------------------------------------- Azure


def _azure_functions(app: Any) -> dict[str, Any]:
    """The functions the host would index, by name (indexing is done once, as the host does)."""
    return {
        function.get_function_name(): function.get_user_function()
        for function in app.get_functions()
    }


def test_azure_functions_serve_the_api_and_run_a_created_blob(
    azure: ObjectServer,
    queue: str,
    smoke_sample: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import azure.functions as func

    from precise_mrd.service.serverless import azure as azure_handlers

    _configure(
        monkeypatch,
        azure,
        tmp_path,
        PRECISE_MRD_EXECUTOR="celery",
        PRECISE_MRD_BROKER_URL=REDIS_URL,
        PRECISE_MRD_CELERY_QUEUE=queue,
    )
    azure_handlers.reset()
    entry = _load(ROOT / "serverless" / "azure" / "function_app.py", "function_app")
    functions = _azure_functions(entry.app)
    assert sorted(functions) == ["api", "on_blob_created"]
    api = functions["api"]

    def call(method: str, path: str, body: bytes = b"", **headers: str) -> func.HttpResponse:
        request = func.HttpRequest(
            method,
            f"https://mrd-func.azurewebsites.net{path}",
            headers=headers,
            params={},
            route_params={"route": path.lstrip("/")},
            body=body,
        )
        response: func.HttpResponse = asyncio.run(api(request, None))
        return response

    assert call("GET", "/health/live").status_code == 200
    submitted = call(
        "POST",
        "/submit",
        b"run_id=azure_job&seed=9",
        **{"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert submitted.status_code == 202, submitted.get_body()
    job_id = json.loads(submitted.get_body())["job_id"]
    assert json.loads(call("GET", f"/status/{job_id}").get_body())["state"] == "QUEUED"

    monkeypatch.setenv("PRECISE_MRD_EXECUTOR", "local")
    azure_handlers.reset()
    manifest_key = _land_sample(f"az://{BUCKET}", "lab-z", "s3", smoke_sample)
    subject = f"/blobServices/default/containers/{BUCKET}/blobs/{manifest_key}"
    event = func.EventGridEvent(
        id="831e1650-001e-001b-66ab-eeb76e069631",
        data={
            "api": "PutBlob",
            "clientRequestId": "6d79dbfb-0e37-4fc4-981f-442c9ca65760",
            "requestId": "831e1650-001e-001b-66ab-eeb76e000000",
            "eTag": "0x8D4BCC2E4835CD0",
            "contentType": "application/json",
            "contentLength": 180,
            "blobType": "BlockBlob",
            "url": f"https://mrdlabdata.blob.core.windows.net/{BUCKET}/{manifest_key}",
            "sequencer": "00000000000004420000000000028963",
        },
        topic="/subscriptions/0000/resourceGroups/mrd/providers/Microsoft.Storage/"
        "storageAccounts/mrdlabdata",
        subject=subject,
        event_type="Microsoft.Storage.BlobCreated",
        event_time=None,
        data_version="",
    )
    on_blob_created = functions["on_blob_created"]
    on_blob_created(event)
    runtime = serverless_runtime.current_runtime()
    jobs, _ = runtime.service.list_jobs(tenant_id="lab-z")
    assert len(jobs) == 1 and jobs[0].state == JobState.COMPLETE, jobs
    on_blob_created(event)  # Event Grid delivers at least once
    again, _ = runtime.service.list_jobs(tenant_id="lab-z")
    assert [job.job_id for job in again] == [jobs[0].job_id]
