"""API keys: made and revoked by an admin (``precise-mrd admin create-key``), stored as hashes.

A key reads ``pmrd_<key id>_<secret>``: the id (12 hex digits) finds the row, the secret (43
URL-safe characters, 256 random bits) is checked against the SHA-256 hash the row keeps, in
constant time. The key itself is shown once, when it is made, and stored nowhere. A slow
password hash is not needed: the secret is random, not chosen by a person. Every request reads
the row, so a revoked or expired key stops working at once, in every API process.

>>> key_id, secret = parse_key("pmrd_0123456789ab_" + "x" * 43)
>>> key_id
'0123456789ab'
>>> parse_key("Bearer abc") is None
True
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from precise_mrd.service.db.models import ApiKeyRecord
from precise_mrd.service.security.principal import ROLES, TENANT_NAME

PREFIX = "pmrd_"
_ID_HEX = 12
_SECRET_CHARS = 43


@dataclass(frozen=True)
class KeyInfo:
    """What an admin sees of a key (never its secret)."""

    key_id: str
    tenant: str
    role: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    label: str | None

    def state(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def as_json(self, now: datetime) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "tenant": self.tenant,
            "role": self.role,
            "state": self.state(now),
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "label": self.label,
        }


def parse_key(text: str) -> tuple[str, str] | None:
    """``(key id, secret)`` of a well-formed key, else None."""
    if not text.startswith(PREFIX):
        return None
    key_id, sep, secret = text[len(PREFIX) :].partition("_")
    if not sep or len(key_id) != _ID_HEX or len(secret) != _SECRET_CHARS:
        return None
    if any(c not in "0123456789abcdef" for c in key_id):
        return None
    return key_id, secret


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii", errors="replace")).hexdigest()


def _info(record: ApiKeyRecord) -> KeyInfo:
    return KeyInfo(
        key_id=record.key_id,
        tenant=record.tenant_id,
        role=record.role,
        created_at=record.created_at,
        expires_at=record.expires_at,
        revoked_at=record.revoked_at,
        label=record.label,
    )


class KeyStore:
    """API keys in the service database (``sessions``: a SQLAlchemy session factory)."""

    def __init__(self, sessions: Any) -> None:
        self._sessions = sessions

    def create(
        self,
        *,
        tenant: str,
        role: str,
        expires_at: datetime | None = None,
        label: str | None = None,
    ) -> tuple[KeyInfo, str]:
        """A new key for ``tenant`` with ``role``: its info and the key (shown once)."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}; got {role!r}")
        if not TENANT_NAME.match(tenant):
            raise ValueError("tenant must be 1-128 letters, digits, '.', '_' or '-'")
        if expires_at is not None and expires_at.tzinfo is None:
            raise ValueError("expires_at must be timezone-aware")
        key_id = secrets.token_hex(_ID_HEX // 2)
        secret = secrets.token_urlsafe(32)
        record = ApiKeyRecord(
            key_id=key_id,
            tenant_id=tenant,
            role=role,
            secret_sha256=_digest(secret),
            created_at=datetime.now(UTC),
            expires_at=expires_at,
            revoked_at=None,
            label=label,
        )
        with self._sessions.begin() as session:
            session.add(record)
            session.flush()
            info = _info(record)
        return info, f"{PREFIX}{key_id}_{secret}"

    def list(self, *, tenant: str | None = None) -> list[KeyInfo]:
        with self._sessions() as session:
            query = select(ApiKeyRecord).order_by(ApiKeyRecord.created_at, ApiKeyRecord.key_id)
            if tenant is not None:
                query = query.where(ApiKeyRecord.tenant_id == tenant)
            return [_info(record) for record in session.scalars(query)]

    def revoke(self, key_id: str) -> KeyInfo | None:
        """Revoke a key (again is a no-op); None when there is no such key."""
        with self._sessions.begin() as session:
            record = session.get(ApiKeyRecord, key_id)
            if record is None:
                return None
            if record.revoked_at is None:
                record.revoked_at = datetime.now(UTC)
            session.flush()
            return _info(record)

    def verify(self, key: str) -> KeyInfo | None:
        """The key's info when the key is valid now (known, secret matches, not revoked or
        expired), else None."""
        parsed = parse_key(key)
        if parsed is None:
            return None
        key_id, secret = parsed
        with self._sessions() as session:
            record = session.get(ApiKeyRecord, key_id)
            # NB: hash and compare even for an unknown id, so timing does not tell ids apart
            expected = record.secret_sha256 if record is not None else "0" * 64
            matches = hmac.compare_digest(_digest(secret), expected)
            if record is None or not matches:
                return None
            info = _info(record)
        if info.state(datetime.now(UTC)) != "active":
            return None
        return info
