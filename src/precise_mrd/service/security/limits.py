"""Rate limits per caller and per tenant, fixed windows on the shared counters of the cache.

``PRECISE_MRD_RATE_LIMIT`` (default ``300/minute``) is each caller's budget: an API key, a JWT
subject, or, with auth off, a client address. ``PRECISE_MRD_TENANT_RATE_LIMIT`` (default
``1200/minute``) is what all callers of one tenant share. ``PRECISE_MRD_RATE_LIMIT_ROUTES``
overrides the caller's budget per route, e.g. ``POST /submit=30/minute, GET /download=120/minute``
(the first matching prefix wins). ``0`` or ``off`` switches a limit off.

Windows are aligned to the wall clock, so every API process counts the same window; with
``PRECISE_MRD_REDIS_URL`` the counters are Redis's and the limits hold across processes
(otherwise per process). An answer over a limit is a 429 with ``Retry-After``; every limited
response carries ``RateLimit-Limit``, ``RateLimit-Remaining`` and ``RateLimit-Reset`` (seconds)
for the caller's budget.

>>> parse_rate("120/minute"), parse_rate("5/second"), parse_rate("off")
(Rate(count=120, seconds=60.0), Rate(count=5, seconds=1.0), None)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

_UNITS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}


@dataclass(frozen=True)
class Rate:
    count: int
    seconds: float


def parse_rate(text: str) -> Rate | None:
    """``N/unit`` (second, minute, hour, day; plural allowed); None for ``0``/``off``/empty."""
    value = text.strip().lower()
    if value in ("", "0", "off", "none"):
        return None
    count, sep, unit = value.partition("/")
    unit = unit.strip().removesuffix("s")
    if not sep or unit not in _UNITS or not count.strip().isdigit() or int(count) < 1:
        raise ValueError(f"rate {text!r} is not N/second, N/minute, N/hour or N/day (or off)")
    return Rate(int(count), _UNITS[unit])


def parse_routes(text: str) -> list[tuple[str | None, str, Rate | None]]:
    """``[METHOD ]/prefix=rate`` entries, comma-separated.

    >>> parse_routes("POST /submit=30/minute, /download=off")
    [('POST', '/submit', Rate(count=30, seconds=60.0)), (None, '/download', None)]
    """
    routes: list[tuple[str | None, str, Rate | None]] = []
    for entry in filter(None, (part.strip() for part in text.split(","))):
        target, sep, rate = entry.partition("=")
        method, _, path = target.strip().rpartition(" ")
        if not sep or not path.startswith("/"):
            raise ValueError(f"route limit {entry!r} is not '[METHOD ]/path=N/unit'")
        routes.append((method.strip().upper() or None, path, parse_rate(rate)))
    return routes


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    headers: dict[str, str]


class RateLimiter:
    def __init__(
        self,
        cache: Any,
        *,
        caller: Rate | None,
        tenant: Rate | None,
        routes: list[tuple[str | None, str, Rate | None]] | None = None,
    ) -> None:
        self._cache = cache
        self._caller = caller
        self._tenant = tenant
        self._routes = routes or []

    @classmethod
    def from_settings(cls, settings: Any, cache: Any) -> RateLimiter:
        return cls(
            cache,
            caller=parse_rate(settings.rate_limit),
            tenant=parse_rate(settings.tenant_rate_limit),
            routes=parse_routes(settings.rate_limit_routes),
        )

    @property
    def is_active(self) -> bool:
        """False when every limit is off: nothing to count."""
        return (
            self._caller is not None
            or self._tenant is not None
            or any(rate is not None for _, _, rate in self._routes)
        )

    @property
    def is_local(self) -> bool:
        """True when the counters live in this process (a check is microseconds, no I/O)."""
        return getattr(self._cache, "name", "") == "local"

    def _route(self, method: str, path: str) -> tuple[str, Rate | None]:
        for route_method, prefix, rate in self._routes:
            if (route_method is None or route_method == method) and path.startswith(prefix):
                return f"{route_method or '*'} {prefix}", rate
        return "*", self._caller

    def _count(self, key: str, rate: Rate, now: float) -> tuple[int, float]:
        window = int(now // rate.seconds)
        used = self._cache.incr(f"rate:{key}:{window}", window_seconds=rate.seconds)
        return int(used), (window + 1) * rate.seconds - now

    def check(self, caller: str, tenant: str | None, method: str, path: str) -> Verdict:
        """Count this request against the caller's (route's) budget and the tenant's."""
        now = time.time()
        headers: dict[str, str] = {}
        allowed = True
        route, rate = self._route(method, path)
        if rate is not None:
            used, reset = self._count(f"caller:{route}:{caller}", rate, now)
            headers["RateLimit-Limit"] = str(rate.count)
            headers["RateLimit-Remaining"] = str(max(rate.count - used, 0))
            headers["RateLimit-Reset"] = str(math.ceil(reset))
            if used > rate.count:
                allowed = False
                headers["Retry-After"] = str(math.ceil(reset))
        if tenant is not None and self._tenant is not None and allowed:
            used, reset = self._count(f"tenant:{tenant}", self._tenant, now)
            if used > self._tenant.count:
                allowed = False
                headers["Retry-After"] = str(math.ceil(reset))
        return Verdict(allowed, headers)
