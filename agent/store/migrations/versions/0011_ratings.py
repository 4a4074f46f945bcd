"""Ratings: a person's thumbs up or down on an answer, with who gave it (the feedback people
actually give; KTO learns from exactly that).

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"


def upgrade() -> None:
    op.create_table(
        "ratings",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("episode_id", sa.String(32),
                  sa.ForeignKey("episodes.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rating", sa.String(4), nullable=False),
        sa.Column("by", sa.String(200)),
        sa.Column("comment", sa.Text),
    )  # fmt: skip


def downgrade() -> None:
    op.drop_table("ratings")
