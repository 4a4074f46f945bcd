"""Scoring leaves the loop: an episode's scores are the application's, kept on the episode.

Revision ID: 0008
Revises: 0007

`episodes.scores` holds, per attempt, whether scoring found its answer right (None: the item
has no scoring); `attempts.gold_passed`, written by the graph while it ran, is dropped.

What this migration assumes about rows written before it, and says so on stderr when it
converts any:
- An attempt's `gold_passed` becomes its episode's score as it was. Those were computed with
  a scoring check that errored left out (not counted as wrong); they are not recomputed.
- A repair recorded from an item whose gold was allowed was kept only where scoring passed
  it: gold chose it. Such corrections, and the memories made from them, are justified by
  `gold` from now on, so no label-free dataset or recall uses them.
"""

import sys
from collections import defaultdict

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"

CHOSEN_BY_GOLD = (
    "source = 'repair' AND justification = 'checks' AND episode_id IN "
    "(SELECT id FROM episodes WHERE gold_allowed)"
)


def upgrade() -> None:
    with op.batch_alter_table("episodes") as t:
        t.add_column(sa.Column("scores", sa.JSON, nullable=False, server_default="[]"))
    conn = op.get_bind()
    scored: dict[str, list[bool | None]] = defaultdict(list)
    rows = conn.execute(
        sa.text('SELECT episode_id, gold_passed FROM attempts ORDER BY episode_id, "index"')
    )
    for episode_id, gold_passed in rows:
        scored[episode_id].append(None if gold_passed is None else bool(gold_passed))
    episodes = sa.table("episodes", sa.column("id", sa.String), sa.column("scores", sa.JSON))
    moved = {k: v for k, v in scored.items() if any(s is not None for s in v)}
    for episode_id, scores in moved.items():
        conn.execute(episodes.update().where(episodes.c.id == episode_id).values(scores=scores))
    with op.batch_alter_table("attempts") as t:
        t.drop_column("gold_passed")
    memories = conn.execute(
        sa.text(
            "UPDATE memories SET justification = 'gold' WHERE correction_id IN "
            f"(SELECT id FROM corrections WHERE {CHOSEN_BY_GOLD})"
        )
    ).rowcount
    corrections = conn.execute(
        sa.text(f"UPDATE corrections SET justification = 'gold' WHERE {CHOSEN_BY_GOLD}")
    ).rowcount
    if moved or corrections:
        print(
            f"reflexa store migration 0008: the scores of {len(moved)} episode(s) moved out "
            "of their attempts, kept as scored then (an erroring scoring check was left out); "
            f"{corrections} repair(s) of items whose gold was allowed (and {memories} "
            "memories of them) are now justified by gold: gold chose which were recorded",
            file=sys.stderr,
        )


def downgrade() -> None:
    with op.batch_alter_table("attempts") as t:
        t.add_column(sa.Column("gold_passed", sa.Boolean))
    with op.batch_alter_table("episodes") as t:
        t.drop_column("scores")
