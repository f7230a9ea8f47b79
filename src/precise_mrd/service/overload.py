"""Past capacity and on the way out: shed load with an answer, never with a timeout.

Three guards in one pure ASGI middleware, :class:`OverloadMiddleware`, outermost but for the
request context (so a refusal still carries its ``X-Request-ID`` and is counted):

* **in-flight limit**: past ``PRECISE_MRD_MAX_INFLIGHT_REQUESTS`` requests being served by this
  process, a request is answered at once with 503 and ``Retry-After: 1`` instead of waiting in a
  queue until the client times out. The probes and ``/metrics`` are never refused: an overloaded
  process is alive, and the autoscaler must see why.
* **stalled bodies**: a request body whose next piece does not arrive within
  ``PRECISE_MRD_CLIENT_BODY_TIMEOUT_SECONDS`` is answered with 408 and the connection is closed;
  the handler sees a disconnect, so a half-received upload is discarded as on any disconnect.
  (Stalled *headers* are cut by the server: :mod:`precise_mrd.service.serving`.)
* **draining**: once :data:`DRAIN` has begun (SIGTERM with ``PRECISE_MRD_SHUTDOWN_DRAIN_SECONDS``),
  ``/health/ready`` answers 503 so the load balancer takes the process out, and every response
  says ``Connection: close``, so no client or proxy keeps a connection that is about to go.
  Requests are still served in full until the server stops listening.

The submission queue's own bound (``PRECISE_MRD_MAX_QUEUED_JOBS``: 503) and the tenant's
(``PRECISE_MRD_TENANT_MAX_ACTIVE_JOBS``: 429) are checked by ``POST /submit`` itself.

>>> drain = Drain()
>>> drain.is_draining
False
>>> drain.begin(); drain.is_draining
True
"""

from __future__ import annotations

import asyncio
import contextvars
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from precise_mrd.service.errors import RequestTimeoutError, UnavailableError, send_error

#: paths answered even past the in-flight limit (probes, the autoscaler's metrics)
NEVER_SHED = frozenset({"/health/live", "/health/ready", "/health", "/metrics"})
#: what a 503 for a busy process asks the client to wait
BUSY_RETRY_AFTER_SECONDS = 1
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class Drain:
    """Whether this process is on its way out (process-wide, as the signal that starts it is)."""

    def __init__(self) -> None:
        self.started_at: float | None = None

    def begin(self) -> None:
        if self.started_at is None:
            self.started_at = time.monotonic()

    @property
    def is_draining(self) -> bool:
        return self.started_at is not None


#: the process's drain, begun by the SIGTERM handler :func:`drain_on_sigterm` installs
DRAIN = Drain()


def drain_on_sigterm(
    seconds: float, *, drain: Drain = DRAIN, on_begin: Callable[[], None] | None = None
) -> Callable[[], None]:
    """Put a drain in front of the server's SIGTERM handler: the first SIGTERM begins the drain
    and hands the signal on ``seconds`` later; a second one hands it on at once. Call from the
    server's event loop, after the server installed its handlers (the app's lifespan start-up).
    Returns the function that puts the server's handler back. Does nothing (and returns a no-op)
    for ``seconds == 0`` or off the main thread, where no signal handler can be set."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    server_handler: Any = signal.getsignal(signal.SIGTERM)
    if not callable(server_handler):
        return lambda: None

    def hand_on(number: int, frame: FrameType | None) -> None:
        server_handler(number, frame)

    def on_sigterm(number: int, frame: FrameType | None) -> None:
        if drain.is_draining:
            hand_on(number, frame)
            return
        drain.begin()
        # NB: from a signal handler only the loop's thread-safe entry is safe (no logging here)
        if on_begin is not None:  # NB: in a fresh context, not the interrupted request's
            loop.call_soon_threadsafe(on_begin, context=contextvars.Context())
        loop.call_soon_threadsafe(loop.call_later, seconds, hand_on, number, None)

    signal.signal(signal.SIGTERM, on_sigterm)

    def restore() -> None:
        signal.signal(signal.SIGTERM, server_handler)

    return restore


class OverloadMiddleware:
    """503 past the in-flight limit, 408 for stalled bodies, ``Connection: close`` while
    draining (see the module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_inflight: int,
        body_timeout_seconds: float,
        drain: Drain = DRAIN,
    ) -> None:
        self.app = app
        self.max_inflight = max_inflight
        self.body_timeout_seconds = body_timeout_seconds
        self.drain = drain
        self.inflight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = scope.get("state", {}).get("request_id")
        if self.inflight >= self.max_inflight and scope.get("path") not in NEVER_SHED:
            error = UnavailableError(
                f"this API process is serving {self.inflight} requests, its limit",
                code="busy",
                fix=f"retry after {BUSY_RETRY_AFTER_SECONDS} s",
                headers={"Retry-After": str(BUSY_RETRY_AFTER_SECONDS)},
            )
            await self._send_error(error, request_id, send)
            return
        self.inflight += 1
        try:
            if scope.get("method") in _BODY_METHODS:
                await self._with_body_timeout(scope, receive, send, request_id)
            else:
                await self.app(scope, receive, self._closing_when_draining(send))
        finally:
            self.inflight -= 1

    def _closing_when_draining(self, send: Send) -> Send:
        if not self.drain.is_draining:
            return send

        async def closing_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"connection"]
                message["headers"] = [*headers, (b"connection", b"close")]
            await send(message)

        return closing_send

    async def _with_body_timeout(
        self, scope: Scope, receive: Receive, send: Send, request_id: str | None
    ) -> None:
        stalled = False
        started = False
        downstream = self._closing_when_draining(send)

        async def timed_receive() -> Message:
            nonlocal stalled
            if stalled:
                return {"type": "http.disconnect"}
            try:
                return await asyncio.wait_for(receive(), self.body_timeout_seconds)
            except TimeoutError:
                stalled = True
                return {"type": "http.disconnect"}

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if stalled:
                if not started:
                    started = True
                    await self._send_error(self._stalled_error(), request_id, send)
                return
            started = started or message["type"] == "http.response.start"
            await downstream(message)

        try:
            await self.app(scope, timed_receive, guarded_send)
        except Exception:
            if not stalled:
                raise
        if stalled and not started:  # NB: the handler gave up without answering
            await self._send_error(self._stalled_error(), request_id, send)

    def _stalled_error(self) -> RequestTimeoutError:
        return RequestTimeoutError(
            f"no part of the request body arrived for {self.body_timeout_seconds:g} s",
            fix="send the body without pauses (or ask the operator to raise "
            "PRECISE_MRD_CLIENT_BODY_TIMEOUT_SECONDS)",
        )

    @staticmethod
    async def _send_error(
        error: UnavailableError | RequestTimeoutError, request_id: str | None, send: Send
    ) -> None:
        close = isinstance(error, RequestTimeoutError)
        await send_error(error, send, request_id=request_id, close=close)
