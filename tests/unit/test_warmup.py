"""The compiled-kernel cache: where it lives, when it counts as warm, who is told about it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from precise_mrd.pipeline import warmup
from precise_mrd.service.jobs.process import worker_environment
from precise_mrd.service.kernels import KernelCacheWarmer
from precise_mrd.service.settings import Settings


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in package: one module with a numba kernel, one without."""
    root = tmp_path / "pkg"
    root.mkdir()
    (root / "kernels.py").write_text(
        "import numba\n\n@numba.njit(cache=True)\ndef f(x): return x\n"
    )
    (root / "plain.py").write_text("def g(): return 1\n")
    monkeypatch.setattr(warmup, "PACKAGE_ROOT", root)
    return root


def _stamp(cache_dir: Path) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    stamp = {"fingerprint": warmup.kernel_fingerprint(), "seconds": 1.0}
    warmup.stamp_path(cache_dir).write_text(json.dumps(stamp))


def test_cold_until_a_warm_up_stamps_it(package: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert not warmup.is_cache_warm(cache)  # nothing there
    cache.mkdir()
    warmup.stamp_path(cache).write_text("not json")
    assert not warmup.is_cache_warm(cache)
    _stamp(cache)
    assert warmup.is_cache_warm(cache)


def test_a_changed_kernel_module_makes_the_cache_cold(package: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _stamp(cache)
    (package / "plain.py").write_text("def g(): return 2  # no kernel here\n")
    assert warmup.is_cache_warm(cache), "a module without kernels does not need a warm-up"
    (package / "kernels.py").write_text(
        "import numba\n\n@numba.njit(cache=True)\ndef f(x): return 2\n"
    )
    assert not warmup.is_cache_warm(cache)


def test_a_new_numba_makes_the_cache_cold(
    package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numba

    cache = tmp_path / "cache"
    _stamp(cache)
    monkeypatch.setattr(numba, "__version__", "0.0.1")
    assert not warmup.is_cache_warm(cache)


def test_warm_kernel_cache_does_nothing_on_a_warm_cache(package: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _stamp(cache)
    result = warmup.warm_kernel_cache(cache, python_executable="/nonexistent/python")
    assert (result.compiled, result.seconds) == (False, 0.0)


def test_a_failing_warm_up_says_why(package: Path, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="kernel warm-up failed"):
        warmup.warm_kernel_cache(tmp_path / "cache", python_executable="false")
    assert not warmup.is_cache_warm(tmp_path / "cache")


def test_the_cache_lives_under_the_data_directory_unless_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    assert Settings(data_dir=tmp_path).kernel_cache_dir == tmp_path.absolute() / "numba-cache"
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "shared-cache"))
    assert Settings(data_dir=tmp_path).kernel_cache_dir == tmp_path / "shared-cache"


def test_workers_get_the_cache_directory(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, numba_cache_dir=tmp_path / "kc")
    environment = worker_environment(settings)
    assert environment["NUMBA_CACHE_DIR"] == str(tmp_path / "kc")
    # NB: the database URL (and its password) reaches the worker here, not on its command line
    assert environment["PRECISE_MRD_DATABASE_URL"] == settings.database_url


class _Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda message, **fields: self.lines.append((level, message, fields))


def test_the_server_says_whether_the_cache_is_warm(package: Path, tmp_path: Path) -> None:
    warm, log = tmp_path / "warm", _Log()
    _stamp(warm)
    warmer = KernelCacheWarmer(warm, log)
    warmer.start()
    assert not warmer.is_running and log.lines[0][:2] == ("info", "compiled-kernel cache is warm")
    cold_log = _Log()
    cold = KernelCacheWarmer(tmp_path / "cold", cold_log)
    cold.start()
    try:
        level, message, fields = cold_log.lines[0]
        assert level == "warning" and "cold" in message and fields["cache_dir"].endswith("cold")
    finally:
        cold.stop()
    assert not cold.is_running
