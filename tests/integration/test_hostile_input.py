"""Hostile config YAML at the API: every class gets a 4xx naming the field and the problem,
quickly, with little memory, and an error body that never echoes more than a short excerpt."""

from __future__ import annotations

import time
import tracemalloc
import warnings
from pathlib import Path

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
