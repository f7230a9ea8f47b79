"""From a request's headers to a :class:`Principal`, as ``PRECISE_MRD_AUTH_MODE`` says.

* ``none``: every caller is the anonymous admin of tenant ``default`` (loopback only: see
  :func:`check_bind_address`);
* ``api_key``: ``X-API-Key: pmrd_...`` or ``Authorization: Bearer pmrd_...``;
* ``jwt``: ``Authorization: Bearer <JWT>`` (:mod:`.tokens`);
* ``both``: either; a bearer value that reads as an API key is checked as one.

A request without credentials, or whose credentials do not verify, is a 401 with a
``WWW-Authenticate`` header; the message says what was wrong, never the value sent.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from precise_mrd.service.errors import UnauthenticatedError
from precise_mrd.service.security.keys import PREFIX, KeyStore
from precise_mrd.service.security.principal import ANONYMOUS, Principal, highest_role
from precise_mrd.service.security.tokens import TokenError, TokenVerifier

AUTH_MODES = ("none", "api_key", "jwt", "both")
_FIX = "send X-API-Key: <key> or Authorization: Bearer <key or token>"


def _challenge(error: str | None = None) -> dict[str, str]:
    value = 'Bearer realm="precise-mrd"'
    if error:
        value += f', error="{error}"'
    return {"WWW-Authenticate": value}


class Authenticator:
    """Resolves callers; ``keys`` and ``tokens`` are given for the modes that use them."""

    def __init__(
        self, mode: str, *, keys: KeyStore | None = None, tokens: TokenVerifier | None = None
    ) -> None:
        if mode not in AUTH_MODES:
            raise ValueError(f"PRECISE_MRD_AUTH_MODE must be one of {', '.join(AUTH_MODES)}")
        if mode in ("api_key", "both") and keys is None:
            raise ValueError(f"auth mode {mode!r} needs the key store")
        if mode in ("jwt", "both") and tokens is None:
            raise ValueError(f"auth mode {mode!r} needs a token verifier")
        self.mode = mode
        self._keys = keys
        self._tokens = tokens

    @classmethod
    def from_settings(cls, settings: Any, sessions: Any) -> Authenticator:
        mode = settings.auth_mode
        keys = KeyStore(sessions) if mode in ("api_key", "both") and sessions else None
        tokens = None
        if mode in ("jwt", "both"):
            tokens = TokenVerifier(
                secret=settings.jwt_secret,
                jwks=settings.jwt_jwks,
                issuer=settings.jwt_issuer,
                audience=settings.jwt_audience,
                tenant_claim=settings.jwt_tenant_claim,
                role_claim=settings.jwt_role_claim,
                leeway_seconds=settings.jwt_leeway_seconds,
            )
        return cls(mode, keys=keys, tokens=tokens)

    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        if self.mode == "none":
            return ANONYMOUS
        api_key = headers.get("x-api-key")
        scheme, _, bearer = (headers.get("authorization") or "").partition(" ")
        bearer = bearer.strip() if scheme.lower() == "bearer" else ""
        uses_keys = self.mode in ("api_key", "both")
        if api_key is not None and uses_keys:
            return self._by_key(api_key.strip())
        if bearer and uses_keys and (self.mode == "api_key" or bearer.startswith(PREFIX)):
            return self._by_key(bearer)
        if bearer and self.mode in ("jwt", "both"):
            return self._by_token(bearer)
        raise UnauthenticatedError(
            "credentials are required", code="unauthenticated", fix=_FIX, headers=_challenge()
        )

    def _by_key(self, key: str) -> Principal:
        assert self._keys is not None
        info = self._keys.verify(key)
        if info is None:
            raise UnauthenticatedError(
                "the API key is unknown, revoked or expired",
                fix="ask an admin for a key (precise-mrd admin create-key)",
                headers=_challenge("invalid_token"),
            )
        return Principal(info.tenant, f"key:{info.key_id}", info.role, method="api_key")

    def _by_token(self, token: str) -> Principal:
        assert self._tokens is not None
        try:
            claims = self._tokens.verify(token)
        except TokenError as exc:
            raise UnauthenticatedError(
                f"the bearer token does not verify: {str(exc)[:200]}",
                fix="send a current token signed by the configured issuer",
                headers=_challenge("invalid_token"),
            ) from None
        role = highest_role(claims.role_claim)
        if role is None:
            raise UnauthenticatedError(
                "the bearer token carries no known role (viewer, submitter or admin)",
                fix="issue the token with the role in the claim PRECISE_MRD_JWT_ROLE_CLAIM names",
                headers=_challenge("invalid_token"),
            )
        return Principal(claims.tenant, f"jwt:{claims.subject}", role, method="jwt")


def is_loopback(host: str) -> bool:
    """Whether a bind address only accepts local connections.

    >>> [is_loopback(host) for host in ("127.0.0.1", "::1", "localhost", "0.0.0.0")]
    [True, True, True, False]
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind_address(host: str, mode: str, allow_unauthenticated: bool) -> None:
    """Refuse to serve without auth on an address other hosts can reach."""
    if mode == "none" and not is_loopback(host) and not allow_unauthenticated:
        raise ValueError(
            f"refusing to serve on {host} without authentication: anyone who can reach it could "
            "read every result. Set PRECISE_MRD_AUTH_MODE (api_key, jwt or both), bind to "
            "127.0.0.1, or, on purpose (e.g. behind an authenticating proxy), set "
            "PRECISE_MRD_ALLOW_UNAUTHENTICATED=true"
        )
