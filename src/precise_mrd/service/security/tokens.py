"""JWT bearer tokens: HS256 with a shared secret, RS256/ES256 with public keys from a JWKS.

The algorithm is taken from the token's header and must be one this server has a key for:
``HS256`` only with ``PRECISE_MRD_JWT_SECRET``, ``RS256``/``ES256`` only with a key of that type
(``RSA``/``EC``) from ``PRECISE_MRD_JWT_JWKS``. Everything else is refused before any
signature is checked: ``alg: none``, other algorithms, and the algorithm confusion of an HS256
token "signed" with the RSA public key (the HMAC secret is never a public key). Expiry,
not-before, issuer and audience are checked (``PRECISE_MRD_JWT_ISSUER``,
``PRECISE_MRD_JWT_AUDIENCE``; ``exp`` is required), with ``PRECISE_MRD_JWT_LEEWAY_SECONDS``.

A JWKS is a file or an ``https://`` URL, read when first needed and cached for five minutes; a
token whose ``kid`` is not in the cached set re-reads it (rotated keys are honoured), at most
once every ten seconds.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from precise_mrd.service.security.principal import TENANT_NAME

_KEY_TYPES = {"RS256": "RSA", "ES256": "EC"}
_REFRESH_SECONDS = 10.0
_MAX_AGE_SECONDS = 300.0
_FETCH_TIMEOUT_SECONDS = 5.0
_MAX_JWKS_BYTES = 1 << 20


class TokenError(Exception):
    """A token that does not verify; the message says why (no secret in it)."""


@dataclass(frozen=True)
class TokenClaims:
    subject: str
    tenant: str
    role_claim: object


class TokenVerifier:
    """Verifies bearer tokens against the configured secret and JWKS."""

    def __init__(
        self,
        *,
        secret: str = "",
        jwks: str = "",
        issuer: str = "",
        audience: str = "",
        tenant_claim: str = "tenant",
        role_claim: str = "role",
        leeway_seconds: float = 30.0,
    ) -> None:
        if not secret and not jwks:
            raise ValueError(
                "JWT auth needs PRECISE_MRD_JWT_SECRET (HS256) or PRECISE_MRD_JWT_JWKS "
                "(RS256/ES256)"
            )
        if secret and len(secret) < 32:
            raise ValueError("PRECISE_MRD_JWT_SECRET must be at least 32 characters")
        self._secret = secret
        self._jwks_source = jwks
        self._issuer = issuer
        self._audience = audience
        self._tenant_claim = tenant_claim
        self._role_claim = role_claim
        self._leeway = leeway_seconds
        self._keys: dict[str, jwt.PyJWK] = {}
        self._loaded_at = -1e18
        self._lock = threading.Lock()

    def verify(self, token: str) -> TokenClaims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenError(f"malformed token ({exc})") from None
        alg = header.get("alg")
        key: Any
        if alg == "HS256" and self._secret:
            key = self._secret
        elif alg in _KEY_TYPES and self._jwks_source:
            key = self._public_key(str(header.get("kid") or ""), _KEY_TYPES[alg])
        else:
            raise TokenError(f"algorithm {alg!r} is not accepted by this server")
        options: Any = {"require": ["exp"]}
        if not self._audience:
            options["verify_aud"] = False
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self._audience or None,
                issuer=self._issuer or None,
                leeway=self._leeway,
                options=options,
            )
        except jwt.PyJWTError as exc:
            raise TokenError(str(exc)) from None
        tenant = claims.get(self._tenant_claim)
        if not isinstance(tenant, str) or not TENANT_NAME.match(tenant):
            raise TokenError(
                f"claim {self._tenant_claim!r} (the tenant) is missing or not a tenant name"
            )
        subject = claims.get("sub")
        return TokenClaims(
            subject=subject if isinstance(subject, str) and subject else "jwt",
            tenant=tenant,
            role_claim=claims.get(self._role_claim),
        )

    def _public_key(self, kid: str, key_type: str) -> Any:
        with self._lock:
            age = time.monotonic() - self._loaded_at
            if not self._keys or age > _MAX_AGE_SECONDS:
                self._keys, self._loaded_at = self._load(), time.monotonic()
            found = self._find(kid, key_type)
            if found is None and time.monotonic() - self._loaded_at > _REFRESH_SECONDS:
                self._keys, self._loaded_at = self._load(), time.monotonic()
                found = self._find(kid, key_type)
        if found is None:
            raise TokenError(f"no {key_type} key with kid {kid!r} in the JWKS")
        return found.key

    def _find(self, kid: str, key_type: str) -> jwt.PyJWK | None:
        for key_id, key in self._keys.items():
            if key.key_type == key_type and (not kid or key_id == kid):
                return key
        return None

    def _load(self) -> dict[str, jwt.PyJWK]:
        source = self._jwks_source
        try:
            if source.startswith(("https://", "http://")):
                with urllib.request.urlopen(source, timeout=_FETCH_TIMEOUT_SECONDS) as response:
                    raw = response.read(_MAX_JWKS_BYTES + 1)
            else:
                raw = Path(source).read_bytes()[: _MAX_JWKS_BYTES + 1]
            if len(raw) > _MAX_JWKS_BYTES:
                raise TokenError("the JWKS is larger than 1 MiB")
            keys = jwt.PyJWKSet.from_dict(json.loads(raw)).keys
        except (OSError, ValueError, jwt.PyJWTError) as exc:
            raise TokenError(f"the JWKS could not be read ({type(exc).__name__})") from None
        return {str(k.key_id or index): k for index, k in enumerate(keys)}
