"""The heap figures and the malloc arena limit of an API process (this machine's glibc)."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from precise_mrd.service.heap import limit_malloc_arenas

with warnings.catch_warnings():
    # NB: Starlette 1.x asks for the httpx2 package at import; httpx works the same here.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

#: a fresh interpreter: maybe limit the arenas, then 12 threads allocate at once (each would get
#: an arena of its own); prints how many arenas glibc made (malloc_info's <heap> elements)
ARENAS_AFTER_THREADS = """
import ctypes, ctypes.util, sys, tempfile, threading
from precise_mrd.service.heap import limit_malloc_arenas
print(limit_malloc_arenas(int(sys.argv[1])))
barrier = threading.Barrier(12)
def allocate():
    held = [bytes(2000) + bytes([i % 256]) for i in range(2000)]
    barrier.wait(timeout=30)
    del held
threads = [threading.Thread(target=allocate) for _ in range(12)]
for thread in threads: thread.start()
for thread in threads: thread.join()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
with tempfile.NamedTemporaryFile(suffix=".xml") as out:
    stream = libc.fopen(out.name.encode(), b"w")
    libc.malloc_info(0, stream)
    libc.fclose(stream)
    print(open(out.name).read().count("<heap nr="))
"""


def _arenas(limit: int, **env: str) -> tuple[str, int]:
    clean = {key: value for key, value in os.environ.items() if key != "MALLOC_ARENA_MAX"}
    done = subprocess.run(
        [sys.executable, "-c", ARENAS_AFTER_THREADS, str(limit)],
        capture_output=True, text=True, timeout=120, check=False, env={**clean, **env},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    in_force, count = done.stdout.split()
    return in_force, int(count)


def test_the_limit_keeps_threads_to_two_arenas() -> None:
    assert _arenas(2) == ("True", 2)
    in_force, unlimited = _arenas(0)
    assert in_force == "False" and unlimited > 4  # NB: glibc's default: up to 8 per core


def test_malloc_arena_max_in_the_environment_wins() -> None:
    assert _arenas(2, MALLOC_ARENA_MAX="3") == ("True", 3)


def test_an_app_limits_the_arenas_when_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from precise_mrd.service import app as app_module
    from precise_mrd.service.app import create_app
    from precise_mrd.service.jobs.memory import InMemoryJobService
    from precise_mrd.service.settings import Settings
    from precise_mrd.service.storage import LocalArtifactStore

    asked: list[int] = []
    monkeypatch.setattr(app_module, "limit_malloc_arenas", asked.append)
    app = create_app(
        Settings(data_dir=tmp_path, malloc_arena_max=3), job_service=InMemoryJobService(),
        store=LocalArtifactStore(tmp_path / "a"), start_executor=False,
    )  # fmt: skip
    with TestClient(app):
        assert asked == [3]
    assert limit_malloc_arenas(0) is ("MALLOC_ARENA_MAX" in os.environ)
