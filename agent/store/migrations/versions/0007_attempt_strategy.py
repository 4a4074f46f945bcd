"""Each repair's strategy (constrained | sample | feedback) and what it did.

Revision ID: 0007
Revises: 0006

Attempts from before this migration have none (the first answer never has one; repairs then
were all from feedback).
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    with op.batch_alter_table("attempts") as t:
        t.add_column(sa.Column("strategy", sa.String(16)))
        t.add_column(sa.Column("note", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("attempts") as t:
        t.drop_column("note")
        t.drop_column("strategy")
