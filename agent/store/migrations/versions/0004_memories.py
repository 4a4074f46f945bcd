"""Correction memory: recallable corrections with a full-text index, and what each attempt
recalled.

Revision ID: 0004
Revises: 0003

SQLite indexes prompts with an external-content FTS5 table kept in step by triggers;
PostgreSQL with a generated tsvector column and a GIN index. Verified corrections already
recorded (chat and training split only) are loaded, the best per prompt.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"

SQLITE_FTS = [
    "CREATE VIRTUAL TABLE memories_fts USING fts5("
    "prompt, content='memories', content_rowid='id', tokenize='unicode61')",
    "CREATE TRIGGER memories_ai AFTER INSERT ON memories BEGIN "
    "INSERT INTO memories_fts(rowid, prompt) VALUES (new.id, new.prompt); END",
    "CREATE TRIGGER memories_ad AFTER DELETE ON memories BEGIN "
    "INSERT INTO memories_fts(memories_fts, rowid, prompt) VALUES ('delete', old.id, old.prompt);"
    " END",
    "CREATE TRIGGER memories_au AFTER UPDATE OF prompt ON memories BEGIN "
    "INSERT INTO memories_fts(memories_fts, rowid, prompt) VALUES ('delete', old.id, old.prompt);"
    " INSERT INTO memories_fts(rowid, prompt) VALUES (new.id, new.prompt); END",
]
POSTGRES_FTS = [
    "ALTER TABLE memories ADD COLUMN search tsvector "
    "GENERATED ALWAYS AS (to_tsvector('simple', prompt)) STORED",
    "CREATE INDEX ix_memories_search ON memories USING gin (search)",
]
# Best source first; among equals, the newest. Only chat (no split) and training episodes.
BACKFILL = """
INSERT INTO memories (prompt_hash, prompt, answer, source, correction_id, episode_id, checks,
                      created_at, uses, status)
SELECT c.prompt_hash, c.prompt, c.chosen, c.source, c.id, c.episode_id,
       COALESCE(e.checks, '[]'), c.created_at, 0, 'active'
FROM corrections c LEFT JOIN episodes e ON e.id = c.episode_id
WHERE c.verified AND c.chosen IS NOT NULL AND (e.split IS NULL OR e.split = 'train')
ORDER BY CASE c.source WHEN 'user' THEN 0 WHEN 'repair' THEN 1 WHEN 'gold' THEN 2 ELSE 3 END,
         c.created_at DESC
ON CONFLICT (prompt_hash) DO NOTHING
"""


def upgrade() -> None:
    op.create_table(
        "memories",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("prompt_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("answer", sa.Text, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),  # user | repair | gold | sampled
        sa.Column("correction_id", sa.Integer),
        sa.Column("episode_id", sa.String(32)),
        sa.Column("checks", sa.JSON, nullable=False),  # what verified it; retirement reruns them
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True)),
        sa.Column("uses", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),  # active | retired
        sa.Column("retired_by", sa.String(32)),  # the adapter that passes it unaided
    )
    bind = op.get_bind()
    for statement in SQLITE_FTS if bind.dialect.name == "sqlite" else POSTGRES_FTS:
        op.execute(statement)
    op.execute(BACKFILL)  # (SQLite needs the WHERE before ON CONFLICT: it has one)
    with op.batch_alter_table("attempts") as batch:
        batch.add_column(sa.Column("memory", sa.JSON))
