"""Episodes, their attempts, and corrections.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "episodes",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("thread_id", sa.String(64), nullable=False, index=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("messages", sa.JSON, nullable=False),
        sa.Column("checks", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("answer", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("first_passed", sa.Boolean),
        sa.Column("final_passed", sa.Boolean),
        sa.Column("judge_only", sa.Boolean, nullable=False),
        sa.Column("right_to_wrong", sa.Boolean),
        sa.Column("n_attempts", sa.Integer, nullable=False),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("latency_s", sa.Float),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("adapter", sa.String(200)),
        sa.Column("suite", sa.String(200), index=True),
        sa.Column("split", sa.String(50)),
        sa.Column("item_id", sa.String(200)),
    )
    op.create_table(
        "attempts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "episode_id",
            sa.String(32),
            sa.ForeignKey("episodes.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("index", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("answer", sa.Text, nullable=False),
        sa.Column("verdicts", sa.JSON, nullable=False),
        sa.Column("passed", sa.Boolean, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("gold_passed", sa.Boolean),
        sa.Column("diagnosis", sa.JSON),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("latency_s", sa.Float, nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.UniqueConstraint("episode_id", "index"),
    )
    op.create_table(
        "corrections",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "episode_id",
            sa.String(32),
            sa.ForeignKey("episodes.id", ondelete="SET NULL"),
            index=True,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("prompt_hash", sa.String(64), nullable=False, index=True),
        sa.Column("messages", sa.JSON, nullable=False),
        sa.Column("rejected", sa.Text),
        sa.Column("chosen", sa.Text),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("verified", sa.Boolean, nullable=False),
    )
