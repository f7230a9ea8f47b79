"""tenant_generations: a counter per tenant raised with every change to its jobs

Revision ID: 0004_tenant_generations
Revises: 0003_checksums
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_tenant_generations"
down_revision: str | Sequence[str] | None = "0003_checksums"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tenant_generations",
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id"),
    )


def downgrade() -> None:
    op.drop_table("tenant_generations")
