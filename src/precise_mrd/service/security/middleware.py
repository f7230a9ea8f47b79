"""The security middleware: authentication, rate limits and response headers.

**Authentication** happens before the body is read: an unauthenticated upload is refused at its
headers.

Every path but the public ones (liveness, the API documents, and ``/health`` and
``/health/ready`` with ``PRECISE_MRD_PUBLIC_HEALTH``, ``/metrics`` with
``PRECISE_MRD_PUBLIC_METRICS``) needs credentials; the principal is left in
the request state for the routes (:func:`precise_mrd.service.api.deps.get_principal`). CORS
preflights (``OPTIONS``) pass through to the CORS middleware.

**Rate limits** (:mod:`.limits`) count every request but liveness, health and the documents, per
caller and per tenant, after authentication (so an API key's budget is its own).

**Headers** on every response: ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``,
``Referrer-Policy: no-referrer``, ``Cache-Control: no-store`` (results are patient data; the
documents' static files excepted), a strict ``Content-Security-Policy`` on HTML (a report runs no
script; the documents' pages bring their own policy with the hashes of their inline scripts), and
``Strict-Transport-Security`` when the request came over TLS.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from precise_mrd.service.errors import ServiceError, TooManyRequestsError, send_error
from precise_mrd.service.security.auth import Authenticator
from precise_mrd.service.security.limits import RateLimiter

ALWAYS_PUBLIC = ("/health/live", "/openapi.json", "/docs", "/redoc")
_PUBLIC_PREFIXES = ("/docs/", "/redoc/", "/static/docs/")
HTML_POLICY = (
    "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
_HSTS = "max-age=31536000; includeSubDomains"
HEALTH_PATHS = ("/health", "/health/ready")


def is_public(path: str, public_health: bool, public_metrics: bool = False) -> bool:
    """Whether ``path`` is served without credentials.

    >>> is_public("/docs/swagger-ui.css", False), is_public("/health", False)
    (True, False)
    """
    if path in ALWAYS_PUBLIC or path.startswith(_PUBLIC_PREFIXES):
        return True
    if public_metrics and path == "/metrics":
        return True
    return public_health and path in HEALTH_PATHS


class AuthenticationMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        authenticator: Authenticator,
        public_health: bool,
        public_metrics: bool = False,
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.public_health = public_health
        self.public_metrics = public_metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or self.authenticator.mode == "none"
            or scope.get("method") == "OPTIONS"
            or is_public(scope.get("path", ""), self.public_health, self.public_metrics)
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
            await send_error(exc, send, request_id=state.get("request_id"))
            return
        await self.app(scope, receive, send)


class RateLimitMiddleware:
    """429 past the caller's or the tenant's budget (see :mod:`.limits`)."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or not self.limiter.is_active
            or scope.get("method") == "OPTIONS"
            or is_public(path, True)
            or path == "/metrics"
        ):
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        principal = state.get("principal")
        if principal is not None and principal.method != "none":
            caller, tenant = principal.owner_id, principal.tenant_id
        else:
            client = scope.get("client")
            caller, tenant = f"ip:{client[0] if client else 'unknown'}", None
        method = scope.get("method", "GET")
        if self.limiter.is_local:
            verdict = self.limiter.check(caller, tenant, method, path)
        else:  # NB: Redis is a network round trip: off the event loop
            verdict = await run_in_threadpool(self.limiter.check, caller, tenant, method, path)
        if not verdict.allowed:
            error = TooManyRequestsError(
                "too many requests",
                fix=f"retry after {verdict.headers.get('Retry-After', '1')} s",
                headers=verdict.headers,
            )
            await send_error(error, send, request_id=state.get("request_id"))
            return
        extra = [(name.lower().encode(), value.encode()) for name, value in verdict.headers.items()]

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_limits)


#: (name, value) of the headers every response gets, and those a response of a kind gets
_EVERY_RESPONSE = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)
_NO_STORE = (b"cache-control", b"no-store")
_HSTS_HEADER = (b"strict-transport-security", _HSTS.encode())
_HTML_POLICY_HEADER = (b"content-security-policy", HTML_POLICY.encode())


class SecurityHeadersMiddleware:
    """The headers every response carries (see the module); a header the route set itself is
    kept as it is."""

    def __init__(self, app: ASGIApp, tls: bool = False) -> None:
        self.app = app
        self.tls = tls

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        added = list(_EVERY_RESPONSE)
        if not scope.get("path", "").startswith("/static/"):
            added.append(_NO_STORE)
        if self.tls or scope.get("scheme") == "https":
            added.append(_HSTS_HEADER)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower(): value for name, value in headers}
                if present.get(b"content-type", b"").startswith(b"text/html"):
                    added.append(_HTML_POLICY_HEADER)
                headers.extend(header for header in added if header[0] not in present)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
