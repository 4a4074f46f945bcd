"""Eval runs, and the episodes that belong to one.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_table(
        "eval_runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("suite", sa.String(200), nullable=False, index=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("config_key", sa.String(64), nullable=False, index=True),
        sa.Column("metrics", sa.JSON),
    )
    with op.batch_alter_table("episodes") as batch:
        batch.add_column(sa.Column("eval_run_id", sa.String(32)))
        batch.create_index("ix_episodes_eval_run_id", ["eval_run_id"])
