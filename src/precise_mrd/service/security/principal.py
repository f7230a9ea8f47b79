"""The caller of a request: tenant, owner and role.

Roles nest: ``viewer`` reads its tenant's jobs; ``submitter`` also submits and cancels;
``admin`` also manages keys and the audit trail.

>>> Principal("lab-a", "alice", "submitter").allows("viewer")
True
>>> Principal("lab-a", "alice", "viewer").allows("submitter")
False
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ROLES = ("viewer", "submitter", "admin")
#: a tenant name: it is a label in logs and, later, a path component, so nothing else
TENANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_RANK = {role: rank for rank, role in enumerate(ROLES)}


@dataclass(frozen=True)
class Principal:
    """Who is asking: which tenant's jobs they see, who owns what they submit, their role."""

    tenant_id: str
    owner_id: str
    role: str = "admin"
    #: how they proved it: ``none`` (auth off), ``api_key`` or ``jwt``; the key id or subject
    method: str = "none"

    def __post_init__(self) -> None:
        if not self.tenant_id or not self.owner_id:
            raise ValueError("tenant_id and owner_id must be non-empty")
        if not TENANT_NAME.match(self.tenant_id):
            raise ValueError(f"tenant {self.tenant_id[:40]!r} is not letters, digits, . _ -")
        if self.role not in _RANK:
            raise ValueError(f"unknown role {self.role!r}; use {', '.join(ROLES)}")

    def allows(self, role: str) -> bool:
        """Whether this caller's role includes ``role``."""
        return _RANK[self.role] >= _RANK[role]


def highest_role(values: object) -> str | None:
    """The highest known role among a claim's values (a string or a list), else None.

    >>> highest_role(["viewer", "submitter", "other"]), highest_role("nobody")
    ('submitter', None)
    """
    items = [values] if isinstance(values, str) else values if isinstance(values, list) else []
    known = [item for item in items if isinstance(item, str) and item in _RANK]
    return max(known, key=_RANK.__getitem__) if known else None


ANONYMOUS = Principal(tenant_id="default", owner_id="anonymous")
