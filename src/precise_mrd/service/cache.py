"""The API's cache and shared counters: in-process by default, Redis with ``PRECISE_MRD_REDIS_URL``.

What is cached, and why it is never stale:

* ``/jobs`` pages, keyed by the tenant's *generation*: a counter the job database raises in the
  same transaction as every change to the tenant's jobs (submit, state, progress, delete), read by
  primary key. A page cached before a change is simply never asked for again.
* ``/results`` of finished jobs, keyed by the job id and its ``finished_at`` (a finished job does
  not change; a deleted one is not found before the cache is asked).
* ``/config-templates``, keyed by the package version.

Counters (:meth:`Cache.incr`, a fixed window per key) are what several API processes must agree
on, e.g. rate limits; with Redis they are shared, in-process they are per process.

Redis going away never fails a request: reads miss, writes are skipped, counters fall back to
this process's own, one warning is logged per outage, and ``/health`` reports ``cache``
``degraded`` (HTTP 200: the service still serves everything) until Redis answers again.

>>> cache = LocalCache()
>>> cache.set_json("k", {"a": 1}, ttl_seconds=60); cache.get_json("k")
{'a': 1}
>>> cache.incr("hits", window_seconds=60), cache.incr("hits", window_seconds=60)
(1, 2)
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from typing import Any, Protocol

from precise_mrd.service.urls import display_broker

logger = logging.getLogger("precise_mrd.service.cache")


class Cache(Protocol):
    name: str

    def get_json(self, key: str) -> Any | None: ...

    def set_json(self, key: str, value: Any, *, ttl_seconds: float) -> None: ...

    def incr(self, key: str, *, window_seconds: float) -> int: ...

    def check(self) -> None: ...


#: what the in-process cache may hold, in bytes of JSON text (each API process has its own)
LOCAL_CACHE_MAX_BYTES = 32 * 1024**2


class LocalCache:
    """A bounded in-process cache with expiry (the embedded default).

    Bounded in entries and in bytes (least recently used out first), and an expired entry
    leaves once it reaches the front: a ``/jobs`` page of an older generation, never asked for
    again, must not stay until 10,000 newer ones push it out (at ~30 KB a page, 300 MB).

    >>> small = LocalCache(max_bytes=100)
    >>> for n in range(5):
    ...     small.set_json(f"page{n}", "x" * 30, ttl_seconds=60)
    >>> small.get_json("page0") is None, small.get_json("page4") is not None, small.n_bytes <= 100
    (True, True, True)
    """

    name = "local"

    def __init__(self, max_entries: int = 10_000, max_bytes: int = LOCAL_CACHE_MAX_BYTES) -> None:
        self._entries: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._counters: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()
        self._max = max_entries
        self._max_bytes = max_bytes
        self.n_bytes = 0

    def get_json(self, key: str) -> Any | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            expires, text = entry
            if expires < time.monotonic():
                del self._entries[key]
                self.n_bytes -= len(text)
                return None
            self._entries.move_to_end(key)
        return json.loads(text)

    def set_json(self, key: str, value: Any, *, ttl_seconds: float) -> None:
        text = json.dumps(value, default=str)
        now = time.monotonic()
        with self._lock:
            previous = self._entries.pop(key, None)
            if previous is not None:
                self.n_bytes -= len(previous[1])
            self._entries[key] = (now + ttl_seconds, text)
            self.n_bytes += len(text)
            while self._entries:
                expires, oldest = next(iter(self._entries.values()))
                over = len(self._entries) > self._max or self.n_bytes > self._max_bytes
                if not over and expires >= now:
                    break
                self._entries.popitem(last=False)
                self.n_bytes -= len(oldest)

    def incr(self, key: str, *, window_seconds: float) -> int:
        now = time.monotonic()
        with self._lock:
            start, count = self._counters.get(key, (now, 0))
            if now - start >= window_seconds:
                start, count = now, 0
            self._counters[key] = (start, count + 1)
            if len(self._counters) > self._max:
                for stale in [k for k, (s, _) in self._counters.items() if now - s > 3600]:
                    del self._counters[stale]
            return count + 1

    def check(self) -> None:
        return None


class RedisCache:
    """Redis behind the same methods; every Redis error degrades to a miss, never a failure."""

    name = "redis"

    def __init__(self, url: str, *, prefix: str = "precise-mrd:", timeout: float = 0.5) -> None:
        import redis

        self._client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=30
        )
        self._prefix = prefix
        self._url = url
        self._fallback = LocalCache()
        self._down_since: float | None = None
        self._lock = threading.Lock()

    def _failed(self, error: Exception) -> None:
        with self._lock:
            if self._down_since is None:
                self._down_since = time.monotonic()
                logger.warning(
                    "Redis %s unavailable (%s); serving uncached", display_broker(self._url), error
                )

    def _ok(self) -> None:
        if self._down_since is not None:
            with self._lock:
                if self._down_since is not None:
                    logger.warning("Redis %s is back; caching again", display_broker(self._url))
                    self._down_since = None

    def get_json(self, key: str) -> Any | None:
        try:
            raw = self._client.get(self._prefix + key)
        except Exception as error:  # NB: redis-py raises several families; each is "no cache"
            self._failed(error)
            return None
        self._ok()
        return None if raw is None else json.loads(raw)

    def set_json(self, key: str, value: Any, *, ttl_seconds: float) -> None:
        try:
            self._client.set(
                self._prefix + key, json.dumps(value, default=str), px=int(ttl_seconds * 1000)
            )
        except Exception as error:
            self._failed(error)
            return
        self._ok()

    def incr(self, key: str, *, window_seconds: float) -> int:
        name = self._prefix + "count:" + key
        try:
            with self._client.pipeline() as pipe:
                pipe.incr(name)
                pipe.pexpire(name, int(window_seconds * 1000), nx=True)
                count, _ = pipe.execute()
        except Exception as error:
            self._failed(error)
            return self._fallback.incr(key, window_seconds=window_seconds)
        self._ok()
        return int(count)

    def check(self) -> None:
        try:
            self._client.ping()
        except Exception as error:
            self._failed(error)
            shown = display_broker(self._url)
            raise RuntimeError(f"Redis {shown} unreachable: {error}") from None
        self._ok()


def cache_from_settings(redis_url: str, prefix: str) -> Cache:
    """Redis when ``PRECISE_MRD_REDIS_URL`` is set, else in-process."""
    if redis_url:
        return RedisCache(redis_url, prefix=prefix)
    return LocalCache()
