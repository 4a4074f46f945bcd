"""The extra answers a gate asked of an episode's first prompt (`draws`), each with whether
it passed as the gate counts a pass: by the item's scoring where it has one, else by its
visible checks.

Revision ID: 0009
Revises: 0008

Episodes from before this migration have none: their gate evidence was the first answer alone.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"


def upgrade() -> None:
    with op.batch_alter_table("episodes") as t:
        t.add_column(sa.Column("draws", sa.JSON))


def downgrade() -> None:
    with op.batch_alter_table("episodes") as t:
        t.drop_column("draws")
