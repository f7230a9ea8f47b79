"""Authentication before the body is read: an unauthenticated upload is refused at its headers.

Every path but the public ones (liveness, the API documents, and ``/health`` and
``/health/ready`` with ``PRECISE_MRD_PUBLIC_HEALTH``) needs credentials; the principal is left in
the request state for the routes (:func:`precise_mrd.service.api.deps.get_principal`). CORS
preflights (``OPTIONS``) pass through to the CORS middleware.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from precise_mrd.service.errors import ServiceError, error_response
from precise_mrd.service.security.auth import Authenticator

ALWAYS_PUBLIC = ("/health/live", "/openapi.json", "/docs", "/redoc")
HEALTH_PATHS = ("/health", "/health/ready")


def is_public(path: str, public_health: bool) -> bool:
    """Whether ``path`` is served without credentials.

    >>> is_public("/docs/swagger-ui.css", False), is_public("/health", False)
    (True, False)
    """
    if path in ALWAYS_PUBLIC or path.startswith(("/docs/", "/redoc/")):
        return True
    return public_health and path in HEALTH_PATHS


class AuthenticationMiddleware:
    def __init__(self, app: ASGIApp, authenticator: Authenticator, public_health: bool) -> None:
        self.app = app
        self.authenticator = authenticator
        self.public_health = public_health

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or self.authenticator.mode == "none"
            or scope.get("method") == "OPTIONS"
            or is_public(scope.get("path", ""), self.public_health)
        ):
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        try:
            # NB: an API key is a database read: off the event loop
            state["principal"] = await run_in_threadpool(
                self.authenticator.authenticate, Headers(scope=scope)
            )
        except ServiceError as exc:
            response = error_response(exc, request_id=state.get("request_id"))
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
