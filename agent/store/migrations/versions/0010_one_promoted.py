"""At most one promoted adapter, kept by the database: a partial unique index on the adapters'
status where it is `promoted`. Promotion flips the pointer with a version check
(`set_promoted`); the index is the last word when two processes promote at once.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"

PROMOTED = sa.text("status = 'promoted'")


def upgrade() -> None:
    op.create_index(
        "one_promoted", "adapters", ["status"], unique=True,
        sqlite_where=PROMOTED, postgresql_where=PROMOTED,
    )  # fmt: skip


def downgrade() -> None:
    op.drop_index("one_promoted", "adapters")
