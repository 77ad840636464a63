"""object storage: trained models' storage keys, jobs' fenced latest-checkpoint pointer

Revision ID: i14a
Revises: 16a1
Create Date: 2026-12-02 06:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "i14a"
down_revision: str | None = "16a1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("models", sa.Column("object_key", sa.String(length=500), nullable=True))
    op.add_column("jobs", sa.Column("checkpoint_key", sa.String(length=500), nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "checkpoint_key")
    op.drop_column("models", "object_key")
