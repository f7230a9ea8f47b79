"""jobs.checksums: SHA-256 and size of every artifact a job wrote

Revision ID: 0003_checksums
Revises: 0002_dispatched_at
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_checksums"
down_revision: str | Sequence[str] | None = "0002_dispatched_at"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("checksums", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("checksums")
