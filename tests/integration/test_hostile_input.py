"""Hostile input at the API: config YAML and uploads. Every class gets a 4xx naming the field
and the problem, quickly, with bounded memory, and an error body that never echoes more than a
short excerpt."""

from __future__ import annotations

import struct
import time
import tracemalloc
import warnings
import zlib
from pathlib import Path
from typing import Any

import pytest

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

from precise_mrd.service.app import create_app
from precise_mrd.service.jobs.memory import InMemoryJobService
from precise_mrd.service.settings import Settings
from precise_mrd.service.storage import LocalArtifactStore

_LOL = '["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'
#: the 342-byte document of the issue: nine levels of nine aliases, ~10^9 strings expanded
BOMB = (
    "a: &a "
    + _LOL
    + "\n"
    + "".join(
        f"{chr(98 + k)}: &{chr(98 + k)} [{','.join(['*' + chr(97 + k)] * 9)}]\n" for k in range(8)
    )
)
CASES = {
    "alias bomb": (BOMB, "anchors and aliases"),
    "deep nesting": ("seed: " + "[" * 5000 + "]" * 5000, "nested deeper"),
    "huge scalar": ("seed: " + "9" * 200_000, "characters"),
    "duplicate key": ("seed: 1\nseed: 2\n", "given twice"),
    "object tag": ("seed: !!python/object/apply:os.system ['echo pwned']\n", "constructor"),
    "unknown key": ("seed: 1\nnot_a_section: {x: 1}\n", "unknown key"),
    "not a mapping": ("- 1\n- 2\n", "mapping"),
}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    root = tmp_path_factory.mktemp("hostile")
    settings = Settings(data_dir=root)
    store = LocalArtifactStore(root / "artifacts")
    app = create_app(
        settings,
        job_service=InMemoryJobService(artifact_root=store.root),
        store=store,
        start_executor=False,
    )
    return TestClient(app)


def test_the_bomb_is_small() -> None:
    assert len(BOMB) < 400 and BOMB.count("*") == 72


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("route", ["/validate-config", "/submit"])
def test_hostile_yaml(client: TestClient, tmp_path: Path, name: str, route: str) -> None:
    text, problem = CASES[name]
    tracemalloc.start()
    started = time.perf_counter()
    try:
        if route == "/submit":
            response = client.post(route, data={"run_id": "r1", "config_yaml": text})
        else:
            response = client.post(route, content=text.encode())
        seconds = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seconds < 5, seconds
    assert peak < 64 * 1024 * 1024, peak
    assert len(response.content) < 4096, len(response.content)
    assert text[:2000] not in response.text or len(text) < 100
    if route == "/submit":
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        # NB: a YAML problem names the form field; an unknown key names the key's path
        assert error["field"] in ("config_yaml", "not_a_section"), error
        assert problem in error["message"], error
    else:
        assert response.status_code == 200, response.text  # a validation report, not an error
        body = response.json()
        assert body["valid"] is False
        assert any(
            problem in e["message"] or problem in (e.get("field") or "") for e in body["errors"]
        ), body


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from precise_mrd.core.simulate import SimulationParams
    from precise_mrd.pipeline.simulation import simulate_sample

    params = SimulationParams.preset("smoke", seed=3, n_variants=2, molecules_per_locus=20)
    return simulate_sample(tmp_path_factory.mktemp("hostile_sample"), params)


def _bgzf_block(data: bytes) -> bytes:
    deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
    payload = deflate.compress(data) + deflate.flush()
    head = b"\x1f\x8b\x08\x04\x00\x00\x00\x00\x00\xff\x06\x00BC\x02\x00"
    tail = struct.pack("<II", zlib.crc32(data), len(data))
    return head + struct.pack("<H", len(payload) + 25) + payload + tail


_BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")


def _upload_cases(sample: Any) -> dict[str, tuple[dict[str, tuple[str, bytes]], str, str]]:
    bam = sample.bam_path.read_bytes()
    ref = sample.reference_path.read_bytes()
    vcf = sample.vcf_path.read_bytes()
    contig = ref.split(b"\n", 1)[0][1:].split()[0].decode()
    head = vcf[: vcf.index(b"\n", vcf.index(b"#CHROM")) + 1]
    million = head + b"".join(
        f"{contig}\t{100 + i}\t.\tA\tC\t.\t.\t.\n".encode() for i in range(1_000_000)
    )
    absurd = head + f"{contig}\t99999999999\t.\tA\tC\t.\t.\t.\n".encode()
    # a BAM whose header claims 2 GiB of text, in a valid BGZF block
    huge_header = _bgzf_block(b"BAM\x01" + struct.pack("<i", 2**31 - 1) + b"x" * 100) + _BGZF_EOF
    fastq_r1 = b"@r1\nACGT\n+\nII\n"
    fastq_r2 = b"@r1\nACGT\n+\nIIII\n"
    base = {"reads": ("reads.bam", bam), "reference": ("ref.fa", ref), "variants": ("v.vcf", vcf)}
    return {
        "a million variant records": (
            base | {"variants": ("v.vcf", million)},
            "variants",
            "more than 200,000",
        ),
        "absurd position": (base | {"variants": ("v.vcf", absurd)}, "variants", "past the contig"),
        "BAM header claiming 2 GiB": (
            base | {"reads": ("x.bam", huge_header)},
            "reads",
            "not a readable BAM",
        ),
        "BAM cut mid-block": (
            base | {"reads": ("x.bam", bam[: len(bam) // 2])},
            "reads",
            "truncated",
        ),
        "FASTQ bases and qualities of different lengths": (
            base | {"reads": ("r1.fastq", fastq_r1), "reads_r2": ("r2.fastq", fastq_r2)},
            "reads",
            "4 bases but 2 qualities",
        ),
    }


UPLOAD_CASES = [
    "a million variant records",
    "absurd position",
    "BAM header claiming 2 GiB",
    "BAM cut mid-block",
    "FASTQ bases and qualities of different lengths",
]


@pytest.mark.parametrize("name", UPLOAD_CASES)
def test_hostile_uploads(client: TestClient, sample: Any, name: str) -> None:
    files, field, problem = _upload_cases(sample)[name]
    tracemalloc.start()
    started = time.perf_counter()
    try:
        response = client.post("/submit", data={"run_id": "h"}, files=files)
        seconds = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field and problem in error["message"], error
    # NB: the million-record VCF is a 28 MB body, read to its 200,001st record
    assert seconds < 20, seconds
    assert peak < 160 * 1024 * 1024, peak
    assert len(response.content) < 4096


def test_malformed_multipart_is_a_4xx(client: TestClient) -> None:
    broken = b'--xx\r\nContent-Disposition: form-data; name="run_id"\r\n\r\nabc'  # no end
    response = client.post(
        "/submit", content=broken, headers={"content-type": "multipart/form-data; boundary=xx"}
    )
    assert 400 <= response.status_code < 500
    assert response.json()["error"]["code"]


def test_an_oversize_form_field_is_refused_while_read(client: TestClient) -> None:
    """A text field over the multipart parser's 1 MiB part limit (not a file) is a 4xx."""
    started = time.perf_counter()
    response = client.post("/submit", data={"run_id": "r" * (3 * 1024 * 1024)})
    assert 400 <= response.status_code < 500, response.status_code
    assert time.perf_counter() - started < 5
    assert len(response.content) < 4096
