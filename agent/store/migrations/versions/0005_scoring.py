"""Honest signal: what scored an episode apart from what the loop saw, and what justified
each correction and memory.

Revision ID: 0005
Revises: 0004

Episodes get their scoring checks (gold, never shown to the model), whether gold may be
learnt from, and the first and final answers' correctness by scoring (the harm ledger:
right → wrong and wrong → right). Corrections and memories get their justification
(checks | consistency | user | gold) and, where scoring exists, whether scoring found the
chosen answer right (to measure each justification's precision; never used to select).
Rows recorded before this migration are justified by their source: `user` and `gold` as
themselves, the rest by `checks`.

Memories also get their suite and how often recalling them helped or hurt (paired runs with
and without recall, by scoring); `recall_policy` records, per model and suite, whether recall
is on (the gate turns it off where it hurt).
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    with op.batch_alter_table("episodes") as t:
        t.add_column(sa.Column("scoring", sa.JSON, nullable=False, server_default="[]"))
        t.add_column(
            sa.Column("gold_allowed", sa.Boolean, nullable=False, server_default=sa.false())
        )
        t.add_column(sa.Column("first_correct", sa.Boolean))
        t.add_column(sa.Column("final_correct", sa.Boolean))
        t.add_column(sa.Column("wrong_to_right", sa.Boolean))
    for table in ("corrections", "memories"):
        with op.batch_alter_table(table) as t:
            t.add_column(
                sa.Column("justification", sa.String(16), nullable=False, server_default="checks")
            )
            if table == "corrections":
                t.add_column(sa.Column("correct", sa.Boolean))
            else:
                t.add_column(sa.Column("suite", sa.String(200)))
                for column in ("helped", "hurt"):
                    t.add_column(sa.Column(column, sa.Integer, nullable=False, server_default="0"))
        op.execute(f"UPDATE {table} SET justification = source WHERE source IN ('user', 'gold')")

    op.create_table(
        "recall_policy",
        sa.Column("model", sa.String(200), primary_key=True),  # "" is the base model
        sa.Column("suite", sa.String(200), primary_key=True),
        sa.Column("recall", sa.Boolean, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("measured", sa.JSON, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("recall_policy")
    for table in ("memories", "corrections"):
        with op.batch_alter_table(table) as t:
            t.drop_column("justification")
            if table == "corrections":
                t.drop_column("correct")
            else:
                for column in ("hurt", "helped", "suite"):
                    t.drop_column(column)
    with op.batch_alter_table("episodes") as t:
        for column in ("wrong_to_right", "final_correct", "first_correct", "gold_allowed"):
            t.drop_column(column)
        t.drop_column("scoring")
