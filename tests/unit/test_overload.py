"""The overload guards in-process: busy 503, stalled bodies, the drain, the queue bound.

The same guards against a real server, past capacity and with slow clients, are in
``tests/test_stress.py``; the drain in a rolling restart behind NGINX in
``tests/integration/test_nginx.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import warnings
from pathlib import Path
from typing import Any

import pytest

with warnings.catch_warnings():
    # NB: Starlette 1.x asks for the httpx2 package at import; httpx works the same here.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

from precise_mrd.service.app import create_app
from precise_mrd.service.jobs.memory import InMemoryJobService
from precise_mrd.service.overload import Drain, OverloadMiddleware, drain_on_sigterm
from precise_mrd.service.settings import Settings
from precise_mrd.service.storage import LocalArtifactStore


class Recorder:
    """An ASGI ``send`` that keeps what it is sent."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])

    @property
    def headers(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.messages[0]["headers"]}

    @property
    def body(self) -> dict[str, Any]:
        return dict(json.loads(b"".join(m.get("body", b"") for m in self.messages[1:])))


def _scope(path: str = "/jobs", method: str = "GET") -> dict[str, Any]:
    return {"type": "http", "path": path, "method": method, "headers": [], "state": {}}


async def _ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def test_past_the_inflight_limit_the_answer_is_an_immediate_503_with_retry_after() -> None:
    release = asyncio.Event()
    entered = 0

    async def held(scope: Any, receive: Any, send: Any) -> None:
        nonlocal entered
        entered += 1
        await release.wait()
        await _ok(scope, receive, send)

    guard = OverloadMiddleware(held, max_inflight=2, body_timeout_seconds=5, drain=Drain())

    async def run() -> tuple[list[Recorder], Recorder, Recorder]:
        first = [Recorder(), Recorder()]
        tasks = [asyncio.create_task(guard(_scope(), None, r)) for r in first]  # type: ignore[arg-type]
        await asyncio.sleep(0.01)
        refused, probe = Recorder(), Recorder()
        await guard(_scope(), None, refused)  # type: ignore[arg-type]
        probe_task = asyncio.create_task(guard(_scope("/health/live"), None, probe))  # type: ignore[arg-type]
        await asyncio.sleep(0.01)
        release.set()
        await asyncio.gather(*tasks, probe_task)
        return first, refused, probe

    first, refused, probe = asyncio.run(run())
    assert [r.status for r in first] == [200, 200]
    assert refused.status == 503 and refused.headers["retry-after"] == "1"
    assert refused.body["error"]["code"] == "busy"
    assert probe.status == 200  # the probe is never shed
    assert entered == 3 and guard.inflight == 0


def test_a_body_that_stops_arriving_gets_408_and_the_handler_sees_a_disconnect() -> None:
    seen: list[str] = []

    async def reader(scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        seen.append(message["type"])
        message = await receive()
        seen.append(message["type"])
        await send({"type": "http.response.start", "status": 400, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    chunks = [{"type": "http.request", "body": b"x" * 10, "more_body": True}]

    async def receive() -> dict[str, Any]:
        if chunks:
            return chunks.pop()
        await asyncio.sleep(60)  # NB: a stalled client
        raise AssertionError("unreachable")

    guard = OverloadMiddleware(reader, max_inflight=8, body_timeout_seconds=0.2, drain=Drain())
    recorder = Recorder()
    asyncio.run(guard(_scope("/submit", "POST"), receive, recorder))  # type: ignore[arg-type]
    assert seen == ["http.request", "http.disconnect"]
    assert recorder.status == 408 and recorder.headers["connection"] == "close"
    assert recorder.body["error"]["code"] == "request_timeout"
    assert "PRECISE_MRD_CLIENT_BODY_TIMEOUT_SECONDS" in recorder.body["error"]["fix"]


def test_while_draining_every_response_closes_its_connection() -> None:
    drain = Drain()
    guard = OverloadMiddleware(_ok, max_inflight=8, body_timeout_seconds=5, drain=drain)
    before, after = Recorder(), Recorder()
    asyncio.run(guard(_scope(), None, before))  # type: ignore[arg-type]
    drain.begin()
    asyncio.run(guard(_scope(), None, after))  # type: ignore[arg-type]
    assert "connection" not in before.headers
    assert after.status == 200 and after.headers["connection"] == "close"


def test_the_first_sigterm_drains_then_hands_on_and_a_second_hands_on_at_once() -> None:
    handed_on: list[float] = []
    drain = Drain()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        previous = signal.signal(signal.SIGTERM, lambda *_: handed_on.append(loop.time()))
        try:
            restore = drain_on_sigterm(0.3, drain=drain)
            sent = loop.time()
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.sleep(0.05)
            assert drain.is_draining and handed_on == []
            await asyncio.sleep(0.5)
            assert len(handed_on) == 1 and handed_on[0] - sent >= 0.3
            os.kill(os.getpid(), signal.SIGTERM)  # NB: already draining: at once
            await asyncio.sleep(0.05)
            assert len(handed_on) == 2
            restore()
        finally:
            signal.signal(signal.SIGTERM, previous)

    asyncio.run(run())
    assert drain_on_sigterm(0, drain=Drain())() is None  # NB: off: nothing installed


def test_readiness_says_draining_with_503(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from precise_mrd.service.api import health

    drain = Drain()
    monkeypatch.setattr(health, "DRAIN", drain)
    app = create_app(
        Settings(data_dir=tmp_path), job_service=InMemoryJobService(),
        store=LocalArtifactStore(tmp_path / "a"), start_executor=False,
    )  # fmt: skip
    with TestClient(app) as client:
        assert client.get("/health/ready").status_code == 200
        drain.begin()
        ready = client.get("/health/ready")
        assert ready.status_code == 503 and ready.json()["status"] == "draining"
        assert client.get("/health/live").status_code == 200


def test_a_submission_past_the_queue_bound_is_503_queue_full(tmp_path: Path) -> None:
    app = create_app(
        Settings(data_dir=tmp_path, max_queued_jobs=2), job_service=InMemoryJobService(),
        store=LocalArtifactStore(tmp_path / "a"), start_executor=False,
    )  # fmt: skip
    with TestClient(app) as client:
        codes = [client.post("/submit", data={"run_id": f"r{i}"}).status_code for i in range(3)]
        refused = client.post("/submit", data={"run_id": "r9"})
    assert codes == [202, 202, 503]
    assert refused.headers["Retry-After"] == "60"
    error = refused.json()["error"]
    assert error["code"] == "queue_full" and "PRECISE_MRD_MAX_QUEUED_JOBS" in error["fix"]


class _StaleCounts(InMemoryJobService):
    """A job service whose counts, read before the uploads are stored, say there is room: as when
    concurrent submissions fill the queue between the early check and the insert."""

    def queued_jobs(self) -> int:
        return 0


def test_a_queue_filled_during_the_upload_is_503_and_the_upload_is_removed(
    tmp_path: Path, smoke_sample: Any
) -> None:
    service = _StaleCounts()
    store = LocalArtifactStore(tmp_path / "a")
    app = create_app(
        Settings(data_dir=tmp_path, max_queued_jobs=1), job_service=service, store=store,
        start_executor=False,
    )  # fmt: skip
    with TestClient(app) as client:
        answers = []
        for run_id in ("r1", "r2"):
            with (
                open(smoke_sample.bam_path, "rb") as reads,
                open(smoke_sample.reference_path, "rb") as reference,
                open(smoke_sample.vcf_path, "rb") as variants,
            ):
                files = {
                    "reads": ("sample.bam", reads),
                    "reference": ("ref.fa", reference),
                    "variants": ("v.vcf", variants),
                }
                answers.append(client.post("/submit", data={"run_id": run_id}, files=files))
    first, refused = answers
    assert first.status_code == 202, first.text
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "queue_full"
    assert refused.headers["Retry-After"] == "60"
    assert len(service.list_jobs(tenant_id="default")[0]) == 1
    kept = store.list_keys("tenants/default/jobs/")
    assert kept and all(
        key.startswith(f"tenants/default/jobs/{first.json()['job_id']}/") for key in kept
    )
