"""The workers' compiled-kernel cache, seen from the API process.

A worker that finds numba's cache cold compiles every kernel it calls (~40 s of one core) before
its job moves on. The install (``deploy.sh``) warms the cache once; when the API starts and the
cache is still cold (a new data directory, an upgraded package, a cache deleted by hand), it says
so in its log and fills the cache in a background process, so that only the jobs that start in
the meantime pay for compiling. See :mod:`precise_mrd.pipeline.warmup`.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from precise_mrd.pipeline.warmup import finish_warmup, is_cache_warm, start_warmup


class KernelCacheWarmer:
    """Checks the cache at start-up and, when cold, warms it in a background process."""

    def __init__(self, cache_dir: Path, log: Any) -> None:
        self.cache_dir = cache_dir
        self.log = log
        self._process: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if is_cache_warm(self.cache_dir):
            self.log.info("compiled-kernel cache is warm", cache_dir=str(self.cache_dir))
            return
        self.log.warning(
            "compiled-kernel cache is cold: compiling numba kernels in the background "
            "(~40 s of one core, once per install; jobs that start meanwhile compile their own)",
            cache_dir=str(self.cache_dir),
        )
        try:
            self._process = start_warmup(self.cache_dir)
        except OSError as error:
            self.log.error("kernel warm-up could not start", error=str(error))
            return
        self._thread = threading.Thread(target=self._wait, name="kernel-warmup", daemon=True)
        self._thread.start()

    def _wait(self) -> None:
        assert self._process is not None
        started = time.monotonic()
        try:
            finish_warmup(self._process)
        except RuntimeError as error:
            self.log.error("kernel warm-up failed; jobs compile their own", error=str(error))
            return
        self.log.info(
            "compiled-kernel cache warmed",
            cache_dir=str(self.cache_dir),
            seconds=round(time.monotonic() - started, 1),
        )

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        """Kill a warm-up still running (the next start begins it again)."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
        if self._thread is not None:
            self._thread.join(10)
