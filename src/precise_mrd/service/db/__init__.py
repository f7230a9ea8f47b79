"""Job metadata in SQL: engine and sessions, ORM models, and packaged Alembic migrations.

The migration helpers are imported on first use: a job worker never migrates, and Alembic costs
~0.2 s to import.
"""

from typing import Any

from precise_mrd.service.db.engine import (
    create_engine_for_url,
    create_engine_from_settings,
    make_session_factory,
)
from precise_mrd.service.db.models import Base, JobEventRecord, JobRecord

_MIGRATION_HELPERS = ("current_revision", "head_revision", "upgrade_database")

__all__ = [
    "Base",
    "JobEventRecord",
    "JobRecord",
    "create_engine_for_url",
    "create_engine_from_settings",
    "current_revision",
    "head_revision",
    "make_session_factory",
    "upgrade_database",
]


def __getattr__(name: str) -> Any:
    if name in _MIGRATION_HELPERS:
        from precise_mrd.service.db import migrate

        return getattr(migrate, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
