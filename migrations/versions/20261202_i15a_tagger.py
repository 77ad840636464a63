"""text.tag results (tag_results), the hub tagger base models (bert-base-cased, dslim/bert-base-NER)

Revision ID: i15a
Revises: i14a
Create Date: 2026-12-02 06:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "i15a"
down_revision: str | None = "i14a"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONB = postgresql.JSONB(astext_type=sa.Text())
HUB_ROWS = [
    # (id, name, kind): an encoder to fine-tune, and a ready tagger for text.tag (loaded online or from the HF cache)
    ("mdl_hub_bert_base_cased", "bert-base-cased", "encoder"),
    ("mdl_hub_bert_base_ner", "dslim/bert-base-NER", "token-classifier"),
]


def upgrade() -> None:
    op.create_table(
        "tag_results",
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("text_index", sa.Integer(), nullable=False),
        sa.Column("text_id", sa.String(length=200), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("entities", JSONB, nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "text_index"),
    )
    models = sa.table(
        "models",
        sa.column("id", sa.String),
        sa.column("name", sa.String),
        sa.column("kind", sa.String),
        sa.column("source", sa.String),
        sa.column("hub_id", sa.String),
        sa.column("config", postgresql.JSONB),
        sa.column("metrics", postgresql.JSONB),
        sa.column("size_bytes", sa.BigInteger),
    )
    op.bulk_insert(
        models,
        [
            {
                "id": mid,
                "name": name,
                "kind": kind,
                "source": "hub",
                "hub_id": name,
                "config": {"context_length": 512},
                "metrics": {},
                "size_bytes": 0,
            }
            for mid, name, kind in HUB_ROWS
        ],
    )


def downgrade() -> None:
    op.execute("DELETE FROM models WHERE id IN ('mdl_hub_bert_base_cased', 'mdl_hub_bert_base_ner')")
    op.drop_table("tag_results")
