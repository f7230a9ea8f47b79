"""Stress: the API pushed past capacity sheds load with an answer, loses nothing, leaves nothing
behind, stays within a memory ceiling and recovers by itself.

One server (one API process, the local executor with one job slot, SQLite) with small limits,
so that this machine can push it past each of them in seconds:

======================================  ==================================  ===================
pressure                                setting                             answer
======================================  ==================================  ===================
submissions at 10x what the slot runs   ``PRECISE_MRD_MAX_QUEUED_JOBS=12``  503 ``queue_full``
64 clients at once                      ``PRECISE_MRD_MAX_INFLIGHT_...=16`` 503 ``busy``
uploads at the size limit, in parallel  ``PRECISE_MRD_MAX_UPLOAD_BYTES``    202 / 413
headers trickled a byte at a time       ``..._CLIENT_HEADER_TIMEOUT...=2``  408, closed
a body that stops arriving              ``..._CLIENT_BODY_TIMEOUT...=2``    408, closed
a client that hangs up mid-upload       (none)                              nothing kept
======================================  ==================================  ===================

Every 503 carries ``Retry-After``; no request times out on the client's side; every accepted
job ends COMPLETE; the server's temporary directory (``TMPDIR``), its staging area and the
store hold nothing of a refused or cut-off upload; file descriptors come back to where they
were; and the server's resident memory, sampled every 50 ms throughout, stays under
:data:`RSS_CEILING_MB` above its idle size while 150 MB of uploads stream through it.

``pytest tests/test_stress.py -v`` runs it (about a minute). Loopback only; every loop is
bounded in count and time.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import requests

from loaddriver import QUEUE_ONLY, drive
from servers import TERMINAL, Server

pytestmark = pytest.mark.xdist_group(name="stress")

MAX_QUEUED_JOBS = 12
MAX_INFLIGHT = 16
TIMEOUT_SECONDS = 2
#: database connections a process keeps (and may open beyond, briefly)
POOL_SIZE = 4
#: descriptors a settled server may hold over its idle count: the pool's and its overflow's
#: SQLite connections (the file and its WAL each), the running job's log and pipes, a few
#: sockets closing; a leak per connection or upload (40 slowloris, 15 uploads) is more
FD_MARGIN = 2 * (POOL_SIZE + POOL_SIZE) + 6
#: how far above its idle size the server's RSS may go, whatever the pressure
RSS_CEILING_MB = 80
#: a job that holds the one slot for a while (the queue fills faster than it drains)
SLOW_JOB = "service_debug:\n  no_pipeline: true\n  sleep_seconds: 0.3\n"


@dataclass
class Stressed:
    """The server under stress, its sample files and the memory sampler's record."""

    server: Server
    tmpdir: Path
    bam: bytes = field(repr=False)
    reference: bytes = field(repr=False)
    variants: bytes = field(repr=False)
    idle_rss_mb: float
    idle_fds: int
    rss_samples: list[float] = field(default_factory=list, repr=False)
    stop_sampling: threading.Event = field(default_factory=threading.Event)

    @property
    def process(self) -> psutil.Process:
        return psutil.Process(self.server.process.pid)

    def rss_mb(self) -> float:
        return float(self.process.memory_info().rss) / 1024**2

    def sample_memory(self) -> None:
        while not self.stop_sampling.wait(0.05):
            with contextlib.suppress(psutil.Error):
                self.rss_samples.append(self.rss_mb())

    def leftovers(self) -> list[Path]:
        """Temporary files, staged uploads and half-written artifacts anywhere in the server's
        directories."""
        data = self.server.data_dir
        staged = data / "work" / "staging"
        found = [path for path in self.tmpdir.rglob("*") if path.is_file()]
        found += [path for path in staged.rglob("*") if path.is_file()] if staged.exists() else []
        found += [path for path in data.rglob("*.partial-*")]
        return found

    def stored_bams(self) -> int:
        return len(list((self.server.data_dir / "artifacts").rglob("reads.bam")))

    def fds_settle(self, timeout: float = 10) -> int:
        """Open descriptors once they stop falling (closed connections take a moment)."""
        deadline = time.monotonic() + timeout
        count = self.process.num_fds()
        while count > self.idle_fds + FD_MARGIN and time.monotonic() < deadline:
            time.sleep(0.2)
            count = self.process.num_fds()
        return count


@pytest.fixture(scope="module")
def stressed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stressed]:
    from precise_mrd.core.simulate import SimulationParams
    from precise_mrd.pipeline.simulation import simulate_sample

    root = tmp_path_factory.mktemp("stress")
    sample = simulate_sample(
        root / "sample",
        SimulationParams.preset("smoke", seed=8, n_variants=24, molecules_per_locus=1600),
    )
    bam = sample.bam_path.read_bytes()  # ~16 MB: the upload limit is exactly this
    tmpdir = root / "tmp"
    tmpdir.mkdir()
    server = Server(
        root / "data",
        PRECISE_MRD_ENABLE_DEBUG_JOBS="true",
        PRECISE_MRD_WARM_KERNELS_ON_START="false",
        PRECISE_MRD_LOG_LEVEL="warning",
        MAX_CONCURRENT_JOBS="1",
        PRECISE_MRD_MAX_QUEUED_JOBS=str(MAX_QUEUED_JOBS),
        PRECISE_MRD_DATABASE_POOL_SIZE=str(POOL_SIZE),
        PRECISE_MRD_DATABASE_MAX_OVERFLOW=str(POOL_SIZE),
        PRECISE_MRD_MAX_INFLIGHT_REQUESTS=str(MAX_INFLIGHT),
        PRECISE_MRD_MAX_UPLOAD_BYTES=str(len(bam)),
        PRECISE_MRD_CLIENT_HEADER_TIMEOUT_SECONDS=str(TIMEOUT_SECONDS),
        PRECISE_MRD_CLIENT_BODY_TIMEOUT_SECONDS=str(TIMEOUT_SECONDS),
        TMPDIR=str(tmpdir),
    )
    try:
        # NB: warm the paths the tests take before the idle figures are read
        warm = requests.post(
            f"{server.url}/submit", data={"run_id": "warm", "config_yaml": QUEUE_ONLY}, timeout=30
        )
        assert warm.status_code == 202, warm.text
        server.wait(warm.json()["job_id"], {"COMPLETE"}, timeout=120)
        process = psutil.Process(server.process.pid)
        stressed = Stressed(
            server=server,
            tmpdir=tmpdir,
            bam=bam,
            reference=sample.reference_path.read_bytes(),
            variants=sample.vcf_path.read_bytes(),
            idle_rss_mb=process.memory_info().rss / 1024**2,
            idle_fds=process.num_fds(),
        )
        sampler = threading.Thread(target=stressed.sample_memory, daemon=True)
        sampler.start()
        yield stressed
        stressed.stop_sampling.set()
        sampler.join(timeout=5)
    finally:
        server.stop()


def _assert_recovered(stressed: Stressed) -> None:
    """The pressure is gone: a plain submission is accepted and runs, and nothing is left over."""
    url = stressed.server.url
    response = requests.post(
        f"{url}/submit", data={"run_id": "after", "config_yaml": QUEUE_ONLY}, timeout=30
    )
    assert response.status_code == 202, response.text
    done = stressed.server.wait(response.json()["job_id"], TERMINAL, timeout=120)
    assert done["state"] == "COMPLETE", done
    assert stressed.leftovers() == []
    assert stressed.fds_settle() <= stressed.idle_fds + FD_MARGIN


def _queued(url: str) -> int:
    jobs = requests.get(f"{url}/jobs", params={"state": "QUEUED", "limit": 200}, timeout=30)
    jobs.raise_for_status()
    return len(jobs.json()["jobs"])


def test_a_queue_ten_times_what_the_workers_finish_is_shed_with_503(stressed: Stressed) -> None:
    url = stressed.server.url
    accepted: list[str] = []
    answers: Counter[Any] = Counter()
    queued_seen: list[int] = []

    def client(index: int) -> None:
        # NB: 10 clients x 1 submission a second for 8 s: ~10 jobs/s at a slot that runs ~1/s
        for second in range(8):
            started = time.monotonic()
            response = requests.post(
                f"{url}/submit",
                data={"run_id": f"flood-{index}-{second}", "config_yaml": SLOW_JOB},
                timeout=30,
            )
            if response.status_code == 202:
                accepted.append(response.json()["job_id"])
                answers[202] += 1
            else:
                error = response.json()["error"]
                answers[
                    (response.status_code, error["code"], response.headers.get("Retry-After"))
                ] += 1
            if index == 0:
                queued_seen.append(_queued(url))
            time.sleep(max(0.0, 1 - (time.monotonic() - started)))

    with ThreadPoolExecutor(10) as pool:
        list(pool.map(client, range(10)))
    print(f"\nsubmissions: {dict(answers)}; queued seen: {queued_seen}")
    assert set(answers) <= {202, (503, "queue_full", "60")}, answers
    assert answers[(503, "queue_full", "60")] > 0, "the queue never filled: no load was shed"
    # NB: the bound is checked in the transaction that stores the job: never passed
    assert max(queued_seen) <= MAX_QUEUED_JOBS
    for job_id in accepted:  # nothing accepted is lost
        assert stressed.server.wait(job_id, TERMINAL, timeout=180)["state"] == "COMPLETE"
    assert _queued(url) == 0
    _assert_recovered(stressed)


def test_past_the_inflight_limit_requests_get_503_not_a_wait(stressed: Stressed) -> None:
    url = stressed.server.url
    live_answers: list[int] = []

    async def step(client: httpx.AsyncClient, rng: Any) -> tuple[str, httpx.Response]:
        if rng.random() < 0.05:
            response = await client.get("/health/live")
            live_answers.append(response.status_code)
            return "live", response
        response = await client.get("/jobs", params={"limit": 200})
        if response.status_code == 503:
            body = response.json()["error"]
            assert body["code"] == "busy" and response.headers["Retry-After"] == "1", body
        return "jobs", response

    tally, _ = asyncio.run(
        drive([url], step, clients=64, seconds=6, max_requests=20_000, timeout=10)
    )
    statuses = tally.status_counts()
    print(f"\n64 clients, in-flight limit {MAX_INFLIGHT}: {dict(statuses)}")
    assert not tally.failures, tally.failures  # NB: no timeouts, no resets
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[503] > 0, "the limit was never reached"
    assert statuses[200] > 0
    assert live_answers and set(live_answers) == {200}  # the probe is never shed
    assert requests.get(f"{url}/jobs", timeout=30).status_code == 200
    _assert_recovered(stressed)


def _upload(url: str, stressed: Stressed, bam: bytes, name: str) -> requests.Response:
    return requests.post(
        f"{url}/submit",
        data={"run_id": name, "config_yaml": QUEUE_ONLY},
        files={
            "reads": ("reads.bam", bam),
            "reference": ("ref.fa", stressed.reference),
            "variants": ("variants.vcf", stressed.variants),
        },
        timeout=120,
    )


def test_uploads_at_the_size_limit_in_parallel_stream_within_the_memory_ceiling(
    stressed: Stressed,
) -> None:
    url = stressed.server.url
    bams_before = stressed.stored_bams()
    start = len(stressed.rss_samples)
    over = stressed.bam + b"\0"  # NB: one byte past the limit, after a valid BAM
    bodies = [stressed.bam] * 6 + [over] * 3
    with ThreadPoolExecutor(len(bodies)) as pool:
        responses = list(
            pool.map(lambda item: _upload(url, stressed, item[1], f"big-{item[0]}"),
                     enumerate(bodies))
        )  # fmt: skip
    codes = [response.status_code for response in responses]
    peak = max(stressed.rss_samples[start:], default=stressed.rss_mb())
    print(
        f"\n9 parallel uploads of {len(stressed.bam) / 1024**2:.1f} MB: {codes}; RSS idle "
        f"{stressed.idle_rss_mb:.0f} MB, peak {peak:.0f} MB"
    )
    assert codes == [202] * 6 + [413] * 3, [r.text[:200] for r in responses]
    assert all(r.json()["error"]["code"] == "payload_too_large" for r in responses[6:])
    # NB: 150 MB went through; buffering even one upload per request would pass the ceiling
    assert peak - stressed.idle_rss_mb < RSS_CEILING_MB
    for response in responses[:6]:
        job_id = response.json()["job_id"]
        assert stressed.server.wait(job_id, TERMINAL, timeout=120)["state"] == "COMPLETE"
    assert stressed.stored_bams() == bams_before + 6  # the refused ones left nothing
    _assert_recovered(stressed)


def _raw(port: int) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", port), timeout=10)
    connection.settimeout(10)
    return connection


def _answer(connection: socket.socket) -> bytes:
    """What the server sends before it closes the connection (b'' if it just closes)."""
    chunks = []
    with contextlib.suppress(ConnectionResetError, TimeoutError):
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_slow_clients_are_cut_off_while_others_are_served(stressed: Stressed) -> None:
    server = stressed.server
    slow = [_raw(server.port) for _ in range(40)]
    request = b"GET /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"x" * 200
    served = []
    try:
        # NB: on a kept-alive connection the deadline counts from the previous response
        for connection in slow[:4]:
            connection.sendall(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            first = b""
            while not first.endswith(b'"alive"}'):
                first += connection.recv(65536) or b"<closed>"
                assert len(first) < 4096 and b"<closed>" not in first, first
            assert first.startswith(b"HTTP/1.1 200"), first
        started = time.monotonic()
        for index in range(8):  # NB: a byte every 0.5 s; the deadline is 2 s for all headers
            for connection in slow:
                with contextlib.suppress(OSError):
                    connection.sendall(request[index : index + 1])
            served.append(requests.get(f"{server.url}/jobs", timeout=5).status_code)
            time.sleep(0.5)
        answers = [_answer(connection) for connection in slow]
        elapsed = time.monotonic() - started
    finally:
        for connection in slow:
            connection.close()
    print(f"\n40 slowloris connections: cut off within {elapsed:.1f} s; others served: {served}")
    assert served == [200] * 8
    assert all(answer.startswith(b"HTTP/1.1 408") for answer in answers), set(answers)
    _assert_recovered(stressed)


def _multipart_head(boundary: str) -> bytes:
    return (
        f'--{boundary}\r\nContent-Disposition: form-data; name="run_id"\r\n\r\ncut\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="reads"; '
        f'filename="reads.bam"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()


def _submit_headers(length: int, boundary: str) -> bytes:
    return (
        "POST /submit HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def test_a_stalled_body_gets_408_and_an_abandoned_upload_leaves_nothing(
    stressed: Stressed,
) -> None:
    server = stressed.server
    bams_before = stressed.stored_bams()
    jobs_before = len(requests.get(f"{server.url}/jobs", params={"limit": 200}, timeout=30)
                      .json()["jobs"])  # fmt: skip
    head = _multipart_head("cutcut")
    total = len(head) + len(stressed.bam) + 200
    half = stressed.bam[: len(stressed.bam) // 2]
    # a client that stops sending half-way and waits
    stalled = _raw(server.port)
    stalled.sendall(_submit_headers(total, "cutcut") + head + half)
    started = time.monotonic()
    answer = _answer(stalled)
    waited = time.monotonic() - started
    stalled.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"request_timeout" in answer
    assert TIMEOUT_SECONDS - 0.5 < waited < TIMEOUT_SECONDS + 5
    # clients that hang up half-way, several at once
    cut = []
    for _ in range(5):
        connection = _raw(server.port)
        connection.sendall(_submit_headers(total, "cutcut") + head + half)
        cut.append(connection)
    for connection in cut:
        connection.close()
    time.sleep(1)
    jobs_after = len(requests.get(f"{server.url}/jobs", params={"limit": 200}, timeout=30)
                     .json()["jobs"])  # fmt: skip
    assert jobs_after == jobs_before  # no job from a cut-off submission
    assert stressed.stored_bams() == bams_before
    _assert_recovered(stressed)


def test_memory_stayed_under_the_ceiling_throughout(stressed: Stressed) -> None:
    """The last test of the module: the whole run's peak (other tests ran before it)."""
    time.sleep(1)  # NB: run alone, it still needs samples
    assert len(stressed.rss_samples) > 10, "the sampler did not run"
    peak = max(stressed.rss_samples)
    print(f"\nRSS over the stress run: idle {stressed.idle_rss_mb:.0f} MB, peak {peak:.0f} MB")
    assert peak - stressed.idle_rss_mb < RSS_CEILING_MB
