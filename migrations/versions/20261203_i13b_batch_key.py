"""cross-job batching: jobs' batch key and the index of the queued jobs that may join a running batch

Revision ID: i13b
Revises: i15a
Create Date: 2026-12-03 12:00:00

Jobs queued before this revision have no key and run alone (their params were matched with ``@>`` before, a scan of
every queued job of the kind at each join).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "i13b"
down_revision: str | None = "i15a"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("batch_key", sa.String(length=64), nullable=True))
    op.create_index(
        "ix_jobs_queued_batch",
        "jobs",
        ["batch_key", sa.text("priority DESC"), "created_at", "id"],
        postgresql_where=sa.text("status = 'queued' AND batch_key IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_queued_batch", table_name="jobs")
    op.drop_column("jobs", "batch_key")
