"""The HTTP server's own guard against slow clients: a deadline for request headers.

uvicorn closes a keep-alive connection that stays idle, but not one that trickles its request
headers a byte at a time (slowloris): each such connection holds a socket and a parser for as
long as the client likes. :class:`HeaderDeadlineProtocol` (uvicorn's httptools protocol, which
the server runs) gives every request ``PRECISE_MRD_CLIENT_HEADER_TIMEOUT_SECONDS`` from the
connection's start, or from the previous response, to finish its headers; past it the client
gets ``408 Request Timeout`` and the connection is closed. Bodies are the app's to time
(:mod:`precise_mrd.service.overload`); behind NGINX, its ``client_header_timeout`` does the same
first.

Two process-wide choices keep a saturated process's tail near its median (measured in
``docs/performance.md``): the standard library's event loop (``PRECISE_MRD_EVENT_LOOP``; uvloop
leaves a few connections unserved for up to a second under load), and :func:`freeze_startup_heap`,
which moves what start-up built (the imported libraries: ~190,000 objects) out of the garbage
collector's reach, so its full collections stop pausing the loop for ~50 ms every few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import socket
from asyncio import TimerHandle
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from precise_mrd.service.settings import get_settings

_TIMEOUT_BODY = json.dumps(
    {
        "error": {
            "code": "request_timeout",
            "message": "the request headers did not arrive in time",
            "fix": "send the request headers without pauses",
        }
    }
).encode()
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    + f"content-length: {len(_TIMEOUT_BODY)}\r\n\r\n".encode()
    + _TIMEOUT_BODY
)


def _header_timeout_seconds() -> float:
    return float(get_settings().client_header_timeout_seconds)


def _send_without_delay(transport: asyncio.BaseTransport) -> None:
    """TCP_NODELAY on a client's connection. asyncio sets it only on sockets whose protocol
    number says TCP, and the listening socket uvicorn makes for ``--workers N`` says 0: without
    this, each response waits on the client's delayed ACK (~40 ms; measured 2,200 requests/s
    from two processes against 6,500 with it)."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for each request's headers.

    One timer per connection, not one per request: a request only notes when the wait for the
    next headers began (a float), and the timer, when it fires, closes the connection if that
    wait is over the limit, or sets itself again for when it would be. Arming and cancelling a
    timer for each request cost ~8% of a bare app's throughput."""

    header_timeout_seconds: float | None = None  # NB: read once per process, on first use

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if HeaderDeadlineProtocol.header_timeout_seconds is None:
            HeaderDeadlineProtocol.header_timeout_seconds = _header_timeout_seconds()
        self._header_deadline: TimerHandle | None = None
        #: loop time at which the wait for the next request's headers began; None during one
        self._waiting_since: float | None = None

    @property
    def _header_limit(self) -> float:
        return HeaderDeadlineProtocol.header_timeout_seconds or 30.0

    def _check_header_deadline(self) -> None:
        self._header_deadline = None
        if self.transport.is_closing():
            return
        since = self._waiting_since
        now = self.loop.time()
        if since is not None and now - since >= self._header_limit:
            between_requests = self.cycle is None or self.cycle.response_complete
            if between_requests and not self.pipeline:
                self.transport.write(_TIMEOUT_RESPONSE)
                self.transport.close()
                return
        due = (since if since is not None else now) + self._header_limit
        self._header_deadline = self.loop.call_at(
            max(due, now + 0.001), self._check_header_deadline
        )

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        _send_without_delay(transport)
        self._waiting_since = self.loop.time()
        self._header_deadline = self.loop.call_later(
            self._header_limit, self._check_header_deadline
        )

    def on_headers_complete(self) -> None:
        self._waiting_since = None
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.pipeline:  # NB: the next request's headers, keep-alive or not
            self._waiting_since = self.loop.time()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None
        super().connection_lost(exc)


def freeze_startup_heap() -> int:
    """Collect once, then exempt every object alive now from later collections (``gc.freeze``):
    what a server process builds at start-up lives as long as the process. Returns how many
    objects were frozen. For server processes only: a test process that builds many apps would
    keep their cycles for good."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
