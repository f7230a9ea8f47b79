"""Artifact stores on real servers the tests start: S3 (SeaweedFS), Cloud Storage
(gcp-storage-emulator) and Azure Blob (Azurite), each through ``PRECISE_MRD_STORAGE_URL`` and the
cloud's own credential variables, as a deployment configures them.

The store contract (streamed writes and reads, an upload past its limit leaving nothing, prefixes
that keep tenants apart, wrong credentials as one clear error), then the whole service on each:
a job whose worker reads its inputs from and writes its outputs to the store, and downloads
answered with a presigned redirect (or streamed, where the emulator cannot sign).
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from objectstores import KINDS, ObjectServer, start
from precise_mrd.service.storage import ArtifactNotFoundError, ArtifactTooLargeError
from precise_mrd.service.storage.factory import StorageUrlError, open_store
from precise_mrd.service.storage.objects import ObjectStoreError
from servers import TERMINAL, Server

pytestmark = pytest.mark.s3


@pytest.fixture(scope="module", params=KINDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ObjectServer]:
    started = start(request.param, tmp_path_factory.mktemp(f"store-{request.param}"))
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def environment(server: ObjectServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The server's variables in this process (as a deployment sets them), a prefix per test."""
    variables = server.env(f"t-{os.urandom(4).hex()}")
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return variables


def _store(environment: dict[str, str], url: str | None = None) -> object:
    return open_store(url or environment["PRECISE_MRD_STORAGE_URL"], default_root=Path("/nowhere"))


def test_stream_write_read_and_delete(environment: dict[str, str], tmp_path: Path) -> None:
    store = _store(environment)
    payload = os.urandom(9 * 1024 * 1024 + 17)  # NB: a multipart upload (8 MiB parts)
    assert store.put_stream("jobs/a/in.bin", io.BytesIO(payload)) == len(payload)  # type: ignore[attr-defined]
    assert store.exists("jobs/a/in.bin") and store.size("jobs/a/in.bin") == len(payload)  # type: ignore[attr-defined]
    with store.open("jobs/a/in.bin") as stream:  # type: ignore[attr-defined]
        assert hashlib.sha256(stream.read()).digest() == hashlib.sha256(payload).digest()
    local = tmp_path / "copy.bin"
    source = tmp_path / "source.bin"
    source.write_bytes(payload[:1000])
    assert store.put_file("jobs/a/small.bin", source) == 1000  # type: ignore[attr-defined]
    assert store.get_file("jobs/a/in.bin", local) == len(payload)  # type: ignore[attr-defined]
    assert local.read_bytes() == payload
    assert store.local_path("jobs/a/in.bin") is None  # type: ignore[attr-defined]
    assert store.delete("jobs/a/small.bin") and not store.delete("jobs/a/small.bin")  # type: ignore[attr-defined]
    assert store.delete_prefix("jobs/a/") == 1  # type: ignore[attr-defined]
    assert not store.exists("jobs/a/in.bin")  # type: ignore[attr-defined]
    with pytest.raises(ArtifactNotFoundError):
        store.open("jobs/a/in.bin")  # type: ignore[attr-defined]


def test_an_upload_past_its_limit_leaves_nothing(environment: dict[str, str]) -> None:
    store = _store(environment)
    with pytest.raises(ArtifactTooLargeError):
        store.put_stream("jobs/b/big.bin", io.BytesIO(b"x" * 10_000_000), max_bytes=9_000_000)  # type: ignore[attr-defined]
    assert not store.exists("jobs/b/big.bin")  # type: ignore[attr-defined]


def test_prefixes_keep_tenants_apart(environment: dict[str, str]) -> None:
    base = environment["PRECISE_MRD_STORAGE_URL"]
    first, second = _store(environment, base + "/tenant-a"), _store(environment, base + "/tenant-b")
    first.put_stream("jobs/j/report.html", io.BytesIO(b"a's report"))  # type: ignore[attr-defined]
    assert not second.exists("jobs/j/report.html")  # type: ignore[attr-defined]
    assert second.delete_prefix("jobs/") == 0  # type: ignore[attr-defined]
    assert first.exists("jobs/j/report.html")  # type: ignore[attr-defined]


def test_presigned_downloads_where_the_store_can_sign(environment: dict[str, str]) -> None:
    store = _store(environment)
    store.put_stream("jobs/c/report.html", io.BytesIO(b"<html>signed</html>"))  # type: ignore[attr-defined]
    url = store.presigned_url("jobs/c/report.html", expires_seconds=60)  # type: ignore[attr-defined]
    if environment["PRECISE_MRD_STORAGE_URL"].startswith("gs://"):
        assert url is None  # NB: the emulator has no signing key; the API streams instead
        return
    assert url is not None and "127.0.0.1" in url
    response = requests.get(url, timeout=10)
    assert response.status_code == 200 and response.content == b"<html>signed</html>"


def test_wrong_credentials_or_a_missing_bucket_are_one_clear_error(
    environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = environment["PRECISE_MRD_STORAGE_URL"]
    if url.startswith("s3://"):
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
        expected = "AWS_ACCESS_KEY_ID"
    elif url.startswith("az://"):
        connection = environment["AZURE_STORAGE_CONNECTION_STRING"]
        wrong = connection.replace("AccountKey=Eby8", "AccountKey=AAAA")
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", wrong)
        expected = "AZURE_STORAGE_CONNECTION_STRING"
    else:
        url = url.replace("pmrd-test", "no-such-bucket")  # NB: the emulator checks no credentials
        expected = "bucket"
    store = _store(environment, url)
    with pytest.raises(ObjectStoreError) as raised:
        store.put_stream("jobs/d/x.txt", io.BytesIO(b"x"))  # type: ignore[attr-defined]
    message = str(raised.value)
    assert expected in message and "Traceback" not in message and len(message) < 1200


def test_credentials_in_the_url_are_refused() -> None:
    with pytest.raises(StorageUrlError, match="AWS_ACCESS_KEY_ID"):
        open_store("s3://key:secret@bucket/prefix", default_root=Path("/nowhere"))
    with pytest.raises(StorageUrlError, match="not supported"):
        open_store("ftp://host/x", default_root=Path("/nowhere"))


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> object:
    """A tiny simulated sample: a BAM, its reference and the tumour variants, to upload."""
    from precise_mrd.core.simulate import SimulationParams
    from precise_mrd.pipeline.simulation import simulate_sample

    params = SimulationParams.preset("smoke", seed=3, n_variants=2, molecules_per_locus=20)
    return simulate_sample(tmp_path_factory.mktemp("store_sample"), params)


def test_a_job_runs_from_and_to_the_store(
    server: ObjectServer, sample: object, tmp_path: Path
) -> None:
    """Uploads go to the store once valid; the worker reads them from there and writes its
    outputs there; the data directory keeps no upload and no artifact."""
    variables = server.env(f"e2e-{os.urandom(4).hex()}")
    api = Server(
        tmp_path / "data",
        **variables,
        PRECISE_MRD_ENABLE_DEBUG_JOBS="true",
        PRECISE_MRD_WARM_KERNELS_ON_START="false",
    )
    try:
        health = requests.get(api.url + "/health", timeout=30).json()
        assert health["checks"]["artifact_store"]["ok"], health
        with (
            open(sample.bam_path, "rb") as reads,  # type: ignore[attr-defined]
            open(sample.reference_path, "rb") as reference,  # type: ignore[attr-defined]
            open(sample.vcf_path, "rb") as variants,  # type: ignore[attr-defined]
        ):
            response = requests.post(
                api.url + "/submit",
                data={"run_id": "store-e2e", "seed": 3},
                files={
                    "reads": ("s.bam", reads),
                    "reference": ("r.fa", reference),
                    "variants": ("v.vcf", variants),
                },
                timeout=60,
            )
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        status = api.wait(job_id, TERMINAL, timeout=180)
        assert status["state"] == "COMPLETE", status
        report = requests.get(
            f"{api.url}/download/{job_id}/report", timeout=30, allow_redirects=False
        )
        if server.kind == "gcs":
            assert report.status_code == 200
            body = report.content
        else:
            assert report.status_code == 307, report.text
            assert report.headers["location"].startswith("http://127.0.0.1:")
            body = requests.get(report.headers["location"], timeout=30).content
        assert b"<html" in body[:2000].lower()
        results = requests.get(f"{api.url}/results/{job_id}", timeout=30).json()
        assert results["metrics"], results  # NB: read back from the store
        work = tmp_path / "data" / "work"  # NB: the running job's scratch space, not kept
        leftovers = [
            path.name
            for path in (tmp_path / "data").rglob("*")
            if path.is_file()
            and not path.is_relative_to(work)
            and path.suffix in {".bam", ".fa", ".vcf", ".html", ".json"}
        ]
        assert leftovers == [], leftovers
    finally:
        api.stop()


def test_the_service_guide_object_storage_example(tmp_path: Path) -> None:
    """docs/service.md's object-storage block as written, on ports of the test's own: SeaweedFS
    starts, the API uses it, and /health finds the store answering."""
    import sys

    from guides import start_block, stop
    from servers import free_port

    s3_port, api_port = str(free_port()), str(free_port())
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PRECISE_MRD_", "AWS_"))
    }
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        PRECISE_MRD_DATA_DIR=str(tmp_path / "data"),
        PRECISE_MRD_WARM_KERNELS_ON_START="false",
    )
    health, shell = start_block(
        "Object storage",
        {
            "8333": s3_port,
            "python -m precise_mrd.api": f"python -m precise_mrd.api --port {api_port}",
            "127.0.0.1:8000": f"127.0.0.1:{api_port}",
        },
        cwd=tmp_path,
        env=env,
    )
    try:
        assert health["checks"]["artifact_store"]["ok"], health
    finally:
        stop(shell)
