"""Job metadata in SQL: engine and sessions, ORM models, and packaged Alembic migrations."""

from precise_mrd.service.db.engine import (
    create_engine_for_url,
    create_engine_from_settings,
    make_session_factory,
)
from precise_mrd.service.db.migrate import current_revision, head_revision, upgrade_database
from precise_mrd.service.db.models import Base, JobEventRecord, JobRecord

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
