"""Correction memory's records: memories, their full-text index, recall policies."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from reflexa.agent.store.records import Records, columns
from reflexa.agent.store.tables import Correction, Memory, RecallPolicy, utcnow
from reflexa.evals.contamination import prompt_hash, words

SQLITE_FTS_TABLE = (  # as migration 0004 creates it (its triggers keep it in step)
    "CREATE VIRTUAL TABLE memories_fts USING fts5("
    "prompt, content='memories', content_rowid='id', tokenize='unicode61')"
)
# Recall prefers, for one prompt: a user's correction, then the model's verified repair, the
# item's gold answer, a verified sample.
MEMORY_SOURCES = ("user", "repair", "gold", "sampled")


def search_terms(text: str, limit: int = 64) -> list[str]:
    """The distinct words of `text`, lower-cased, in order: the full-text query."""
    return list(dict.fromkeys(words(text)))[:limit]


@dataclass(frozen=True)
class Remembered:
    """What a memory is made from: a verified correction, or an item's gold answer."""

    prompt: str
    answer: str
    source: str  # see MEMORY_SOURCES
    justification: str  # see evals.signal.JUSTIFICATIONS: recall may leave out gold
    correction_id: int | None
    episode_id: str | None

    @classmethod
    def of(cls, c: Correction) -> Remembered | None:
        """A correction's memory; None for one that is not to be recalled."""
        if not (c.verified and c.chosen and c.source in MEMORY_SOURCES):
            return None
        return cls(c.prompt, c.chosen, c.source, c.justification, c.id, c.episode_id)


class MemoryRecords(Records):
    def _remember(
        self,
        memories: Sequence[Remembered | None],
        checks: list[Any],
        used: Collection[int] = (),
        suite: str | None = None,
    ) -> None:
        """Make memories recallable, one per prompt (the better source, or the newer of
        equals, wins), and count the memories an episode used. A transaction of its own: a
        broken index (`reflexa memory rebuild`) or a concurrent writer of the same prompt
        costs the memory, never the episode or the correction. An answer justified by checks
        of form alone is not remembered: as an example it teaches values nothing verified
        (json-extract lost 18 points recalling such memories: bench/results/memory-effect-
        2026-12-05.json)."""
        try:
            with self._session.begin() as s:
                for m in memories:
                    if m is not None and m.justification != "form":
                        self._upsert_memory(s, m, checks, suite)
                if used:
                    s.execute(
                        update(Memory)
                        .where(Memory.id.in_(used))
                        .values(uses=Memory.uses + 1, last_used_at=utcnow())
                    )
        except SQLAlchemyError:
            pass

    def _upsert_memory(
        self, s: Session, m: Remembered, checks: list[Any], suite: str | None
    ) -> None:
        key = prompt_hash(m.prompt)
        row = s.scalars(select(Memory).where(Memory.prompt_hash == key)).first()
        if row is None:
            row = Memory(prompt_hash=key, prompt=m.prompt, uses=0)
            s.add(row)
        elif MEMORY_SOURCES.index(m.source) > MEMORY_SOURCES.index(row.source):
            return
        row.answer, row.source, row.justification = m.answer, m.source, m.justification
        row.correction_id, row.episode_id = m.correction_id, m.episode_id
        row.checks, row.suite = checks, suite
        row.status, row.retired_by = "active", None
        s.flush()
        surplus = (s.scalar(select(func.count()).select_from(Memory)) or 0) - self.memory_limit
        if surplus > 0:
            oldest = (
                select(Memory.id)
                .order_by(
                    (Memory.status == "active").asc(),
                    func.coalesce(Memory.last_used_at, Memory.created_at).asc(),
                )
                .limit(surplus)
            )
            s.execute(delete(Memory).where(Memory.id.in_(oldest.scalar_subquery())))

    def search_memories(
        self,
        query: str,
        limit: int,
        model: str | None = None,
        gold: bool = False,
        common: Collection[str] = (),
    ) -> list[dict[str, Any]]:
        """Memories whose prompt shares words with `query`, best BM25 (SQLite) or ts_rank
        (PostgreSQL) first; those retired for `model` (it passes them unaided) left out, and
        those justified by gold unless `gold` (the asker may learn from gold). Words in
        `common` are searched for only where the query's other words find fewer than
        `limit` memories."""
        terms = search_terms(query)
        rare = [t for t in terms if t not in common]
        if rare and len(terms) > len(rare):
            rows = self._search(rare, limit, model, gold)
            if len(rows) == limit:
                return rows
        return self._search(terms, limit, model, gold)

    def _search(
        self, terms: list[str], limit: int, model: str | None, gold: bool
    ) -> list[dict[str, Any]]:
        if not terms:
            return []
        params: dict[str, Any] = {"limit": limit, "model": model or "", "gold": gold}
        if self.engine.dialect.name == "sqlite":
            sql = text(
                "SELECT m.id, m.prompt_hash, m.prompt, m.answer, m.source, m.justification, "
                "m.suite FROM memories_fts JOIN memories m ON m.id = memories_fts.rowid "
                "WHERE memories_fts MATCH :q AND (m.retired_by IS NULL OR m.retired_by != :model) "
                "AND m.status != 'harmful' AND (:gold OR m.justification != 'gold') "
                "ORDER BY bm25(memories_fts) LIMIT :limit"
            )
            params["q"] = " OR ".join(f'"{t}"' for t in terms)
        else:
            sql = text(
                "SELECT id, prompt_hash, prompt, answer, source, justification, suite "
                "FROM memories, to_tsquery('simple', :q) q "
                "WHERE search @@ q AND (retired_by IS NULL OR retired_by != :model) "
                "AND status != 'harmful' AND (:gold OR justification != 'gold') "
                "ORDER BY ts_rank(search, q) DESC, id LIMIT :limit"
            )
            params["q"] = " | ".join(f"'{t}'" for t in terms)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sql, params)]

    def memories(self, status: str | None = None) -> list[dict[str, Any]]:
        with self._session() as s:
            query = select(Memory).order_by(Memory.id)
            if status:
                query = query.where(Memory.status == status)
            return [columns(r) for r in s.scalars(query)]

    def count_recall_effect(self, helped: Sequence[int], hurt: Sequence[int]) -> int:
        """Add paired measurements (with and without recall) to the memories that were
        recalled; those that hurt more often than they helped become `harmful` and are no
        longer recalled. Returns how many became harmful."""
        with self._session.begin() as s:
            for ids, column in ((helped, Memory.helped), (hurt, Memory.hurt)):
                for memory_id in ids:  # one at a time: an id may come up more than once
                    s.execute(
                        update(Memory).where(Memory.id == memory_id).values({column: column + 1})
                    )
            result = s.execute(
                update(Memory)
                .where(Memory.hurt > Memory.helped, Memory.status != "harmful")
                .values(status="harmful")
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def set_recall_policy(
        self, model: str, suite: str, recall: bool, reason: str, measured: dict[str, Any]
    ) -> None:
        with self._session.begin() as s:
            row = s.get(RecallPolicy, (model, suite)) or RecallPolicy(model=model, suite=suite)
            row.recall, row.reason, row.measured, row.updated_at = (
                recall,
                reason,
                measured,
                utcnow(),
            )
            s.add(row)

    def recall_policies(self, model: str | None = None) -> list[dict[str, Any]]:
        """Per model ("" the base) and suite: recall on or off, and why."""
        with self._session() as s:
            query = select(RecallPolicy).order_by(RecallPolicy.model, RecallPolicy.suite)
            if model is not None:
                query = query.where(RecallPolicy.model == model)
            return [columns(r) for r in s.scalars(query)]

    def reset_recall_policy(self, suite: str, model: str | None = None) -> int:
        """Forget recall's policy for `suite` (for `model` only, if given): the next night
        measures recall there again. Returns the rows removed."""
        with self._session.begin() as s:
            query = delete(RecallPolicy).where(RecallPolicy.suite == suite)
            if model is not None:
                query = query.where(RecallPolicy.model == model)
            return int(s.execute(query).rowcount or 0)  # type: ignore[attr-defined]

    def memory_prompts(self) -> list[str]:
        with self._session() as s:
            return list(s.scalars(select(Memory.prompt)))

    def retire_memories(self, ids: Sequence[int], by: str) -> None:
        """`by` (an adapter version) passes these unaided: not recalled when it answers."""
        with self._session.begin() as s:
            s.execute(
                update(Memory).where(Memory.id.in_(ids)).values(status="retired", retired_by=by)
            )

    def restore_memories(self, by: str) -> None:
        """The memories retired for `by` are active again (it will not serve: rejected)."""
        with self._session.begin() as s:
            restored = {"status": "active", "retired_by": None}
            s.execute(update(Memory).where(Memory.retired_by == by).values(restored))

    def rebuild_memory_index(self) -> None:
        """Rebuild the full-text index from the memories table (after corruption)."""
        if self.engine.dialect.name != "sqlite":
            with self.engine.begin() as conn:
                conn.exec_driver_sql("REINDEX INDEX ix_memories_search")
            return
        try:
            with self.engine.begin() as conn:
                conn.exec_driver_sql("INSERT INTO memories_fts(memories_fts) VALUES ('rebuild')")
            return
        except SQLAlchemyError:
            pass  # its structure is damaged: FTS5 cannot even open it, nor DROP it
        # The documented way out for a virtual table that cannot be opened: unlist it, then
        # drop its shadow tables (plain tables) on a fresh connection, and create it anew.
        with self.engine.begin() as conn:
            conn.exec_driver_sql("PRAGMA writable_schema=ON")
            conn.exec_driver_sql("DELETE FROM sqlite_schema WHERE name = 'memories_fts'")
            conn.exec_driver_sql("PRAGMA writable_schema=OFF")
        self.engine.dispose()
        with self.engine.begin() as conn:
            for shadow in ("data", "idx", "config", "docsize"):
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS memories_fts_{shadow}")
            conn.exec_driver_sql(SQLITE_FTS_TABLE)
            conn.exec_driver_sql("INSERT INTO memories_fts(memories_fts) VALUES ('rebuild')")
