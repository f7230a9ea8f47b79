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


class LocalCache:
    """A bounded in-process cache with expiry (the embedded default)."""

    name = "local"

    def __init__(self, max_entries: int = 10_000) -> None:
        self._entries: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._counters: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()
        self._max = max_entries

    def get_json(self, key: str) -> Any | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            expires, text = entry
            if expires < time.monotonic():
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
        return json.loads(text)

    def set_json(self, key: str, value: Any, *, ttl_seconds: float) -> None:
        text = json.dumps(value, default=str)
        with self._lock:
            self._entries[key] = (time.monotonic() + ttl_seconds, text)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

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
