"""Which process runs each episode, so one it left `running` when it was killed can be
found and marked interrupted.

Revision ID: 0006
Revises: 0005

`owner` is `host:pid:start` (the process's start time tells a reused pid apart). Rows from
before this migration have none and are left as they are.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    with op.batch_alter_table("episodes") as t:
        t.add_column(sa.Column("owner", sa.String(300)))


def downgrade() -> None:
    with op.batch_alter_table("episodes") as t:
        t.drop_column("owner")
