"""Reading and writing episodes, attempts and corrections."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, delete, func, select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from agent.store.db import make_engine, migrate
from agent.store.tables import (
    Adapter,
    Attempt,
    Correction,
    Cycle,
    Episode,
    EvalRun,
    Memory,
    RecallPolicy,
    utcnow,
)
from evals.contamination import learnable, prompt_hash, words
from evals.signal import justification_of

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


class Store:
    """The database of everything Reflexa did. Each method is one short transaction."""

    def __init__(self, engine: Engine, memory_limit: int = 10_000) -> None:
        self.engine = engine
        self.memory_limit = memory_limit  # memories kept; the least recently used go first
        self._session = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def open(cls, url: str, memory_limit: int = 10_000) -> Store:
        engine = make_engine(url)
        migrate(engine)
        return cls(engine, memory_limit)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start_episode(
        self,
        *,
        id: str,
        thread_id: str,
        prompt: str,
        messages: list[dict[str, Any]],
        checks: list[dict[str, Any]],
        model: str,
        scoring: list[dict[str, Any]] | None = None,
        gold_allowed: bool = False,
        adapter: str | None = None,
        suite: str | None = None,
        split: str | None = None,
        item_id: str | None = None,
        eval_run_id: str | None = None,
    ) -> None:
        """Record that an episode began (status `running`), so even a crash leaves a trace."""
        with self._session.begin() as s:
            s.add(
                Episode(
                    id=id, thread_id=thread_id, prompt=prompt, messages=messages, checks=checks,
                    scoring=scoring or [], gold_allowed=gold_allowed, status="running",
                    model=model, adapter=adapter, suite=suite, split=split,
                    item_id=item_id, eval_run_id=eval_run_id, judge_only=False, n_attempts=0,
                    prompt_tokens=0, completion_tokens=0,
                )
            )  # fmt: skip

    def finish_episode(
        self,
        id: str,
        *,
        status: str,
        answer: str | None,
        error: str | None,
        attempts: Sequence[dict[str, Any]],
        latency_s: float,
        final_index: int | None = None,
        corrections: Sequence[dict[str, Any]] = (),
    ) -> None:
        """Write the outcome, its attempts and its corrections in one transaction.

        `final_index` is the attempt whose answer was returned."""
        with self._session.begin() as s:
            episode = s.get_one(Episode, id)
            episode.status, episode.answer, episode.error = status, answer, error
            episode.finished_at = utcnow()
            episode.latency_s = latency_s
            episode.n_attempts = len(attempts)
            episode.prompt_tokens = sum(a.get("prompt_tokens", 0) for a in attempts)
            episode.completion_tokens = sum(a.get("completion_tokens", 0) for a in attempts)
            if attempts:
                episode.first_passed = bool(attempts[0]["passed"])
                episode.final_passed = status in ("passed", "repaired")
                episode.judge_only = all(
                    v["kind"] == "judge" for a in attempts for v in a["verdicts"] if not v["error"]
                )
                first, final = attempts[0], attempts[final_index if final_index is not None else -1]
                if first.get("gold_passed") is not None:  # scored: the harm ledger
                    episode.first_correct = bool(first["gold_passed"])
                    episode.final_correct = bool(final["gold_passed"])
                    episode.right_to_wrong = episode.first_correct and not episode.final_correct
                    episode.wrong_to_right = episode.final_correct and not episode.first_correct
            episode.attempts = [_attempt(i, a) for i, a in enumerate(attempts)]
            # Gold is kept only where it may be learnt from (a training item, gold allowed).
            gold_ok = learnable(episode.split) and episode.gold_allowed
            keep = [c for c in corrections if gold_ok or c["source"] != "gold"]
            rows = [_correction(id, c) for c in keep]
            s.add_all(rows)
            split, checks, suite = episode.split, episode.checks, episode.suite
        used = {m["id"] for a in attempts for m in (a.get("memory") or {}).get("used", [])}
        self._remember(rows if learnable(split) else [], checks, used, suite)

    def add_correction(self, episode_id: str | None, **fields: Any) -> int:
        with self._session.begin() as s:
            row = _correction(episode_id, fields)
            s.add(row)
            episode = s.get(Episode, episode_id) if episode_id else None
            split, checks, suite = (
                (episode.split, episode.checks, episode.suite) if episode else (None, [], None)
            )
        self._remember([row] if learnable(split) else [], checks, suite=suite)
        return row.id

    # Correction memory.

    def _remember(
        self,
        corrections: Sequence[Correction],
        checks: list[Any],
        used: Collection[int] = (),
        suite: str | None = None,
    ) -> None:
        """Make verified corrections recallable, one memory per prompt (the better source, or
        the newer of equals, wins), and count the memories an episode used. A transaction of
        its own: a broken index (`reflexa memory rebuild`) or a concurrent writer of the same
        prompt costs the memory, never the episode or the correction."""
        try:
            with self._session.begin() as s:
                for c in corrections:
                    if c.verified and c.chosen and c.source in MEMORY_SOURCES:
                        self._upsert_memory(s, c, checks, suite)
                if used:
                    s.execute(
                        update(Memory)
                        .where(Memory.id.in_(used))
                        .values(uses=Memory.uses + 1, last_used_at=utcnow())
                    )
        except SQLAlchemyError:
            pass

    def _upsert_memory(
        self, s: Session, c: Correction, checks: list[Any], suite: str | None
    ) -> None:
        row = s.scalars(select(Memory).where(Memory.prompt_hash == c.prompt_hash)).first()
        if row is None:
            row = Memory(prompt_hash=c.prompt_hash, prompt=c.prompt, uses=0)
            s.add(row)
        elif MEMORY_SOURCES.index(c.source) > MEMORY_SOURCES.index(row.source):
            return
        row.answer, row.source, row.justification = c.chosen or "", c.source, c.justification
        row.correction_id, row.episode_id = c.id, c.episode_id
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
        self, query: str, limit: int, model: str | None = None
    ) -> list[dict[str, Any]]:
        """Memories whose prompt shares words with `query`, best BM25 (SQLite) or ts_rank
        (PostgreSQL) first; those retired for `model` (it passes them unaided) left out."""
        terms = search_terms(query)
        if not terms:
            return []
        params = {"limit": limit, "model": model or ""}
        if self.engine.dialect.name == "sqlite":
            sql = text(
                "SELECT m.id, m.prompt_hash, m.prompt, m.answer, m.source, m.suite "
                "FROM memories_fts JOIN memories m ON m.id = memories_fts.rowid "
                "WHERE memories_fts MATCH :q AND (m.retired_by IS NULL OR m.retired_by != :model) "
                "AND m.status != 'harmful' ORDER BY bm25(memories_fts) LIMIT :limit"
            )
            params["q"] = " OR ".join(f'"{t}"' for t in terms)
        else:
            sql = text(
                "SELECT id, prompt_hash, prompt, answer, source, suite "
                "FROM memories, to_tsquery('simple', :q) q "
                "WHERE search @@ q AND (retired_by IS NULL OR retired_by != :model) "
                "AND status != 'harmful' ORDER BY ts_rank(search, q) DESC, id LIMIT :limit"
            )
            params["q"] = " | ".join(f"'{t}'" for t in terms)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sql, params)]

    def memories(self, status: str | None = None) -> list[dict[str, Any]]:
        with self._session() as s:
            query = select(Memory).order_by(Memory.id)
            if status:
                query = query.where(Memory.status == status)
            return [_columns(r) for r in s.scalars(query)]

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
            return [_columns(r) for r in s.scalars(query)]

    def memory_prompts(self) -> list[str]:
        with self._session() as s:
            return list(s.scalars(select(Memory.prompt)))

    def retire_memories(self, ids: Sequence[int], by: str) -> None:
        """`by` (an adapter version) passes these unaided: not recalled when it answers."""
        with self._session.begin() as s:
            s.execute(
                update(Memory).where(Memory.id.in_(ids)).values(status="retired", retired_by=by)
            )

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

    def episode(self, id: str) -> dict[str, Any] | None:
        with self._session() as s:
            row = s.get(Episode, id)
            return None if row is None else episode_dict(row, with_attempts=True)

    def last_episode(self, thread_id: str) -> dict[str, Any] | None:
        with self._session() as s:
            row = s.scalars(
                select(Episode)
                .where(Episode.thread_id == thread_id)
                .order_by(Episode.created_at.desc())
                .limit(1)
            ).first()
            return None if row is None else episode_dict(row, with_attempts=True)

    def failures(self, limit: int = 20) -> list[dict[str, Any]]:
        """Episodes whose first answer failed, or that ended in an error, newest first."""
        with self._session() as s:
            rows = s.scalars(
                select(Episode)
                .where((Episode.first_passed.is_(False)) | (Episode.status == "error"))
                .order_by(Episode.created_at.desc())
                .limit(limit)
            )
            return [episode_dict(r) for r in rows]

    def count(self, table: type[Episode] | type[Attempt] | type[Correction] | type[Memory]) -> int:
        with self._session() as s:
            return int(s.scalar(select(func.count()).select_from(table)) or 0)

    def open_eval_run(self, suite: str, source: str, config: dict[str, Any]) -> tuple[str, bool]:
        """The unfinished run with this suite and config (resumed), or a new one."""
        key = hashlib.sha256(json.dumps([suite, config], sort_keys=True).encode()).hexdigest()
        with self._session.begin() as s:
            run = s.scalars(
                select(EvalRun)
                .where(EvalRun.config_key == key, EvalRun.status == "running")
                .order_by(EvalRun.created_at.desc())
            ).first()
            if run is not None:
                return run.id, True
            run_id = uuid.uuid4().hex
            s.add(EvalRun(id=run_id, suite=suite, source=source, status="running",
                          config=config, config_key=key))  # fmt: skip
            return run_id, False

    def run_episodes(self, run_id: str) -> list[dict[str, Any]]:
        """The finished episodes of an eval run, one per item (the newest, if an item ran twice)."""
        with self._session() as s:
            rows = s.scalars(
                select(Episode)
                .where(Episode.eval_run_id == run_id, Episode.status != "running")
                .order_by(Episode.created_at)
            )
            return list({r.item_id: episode_dict(r) for r in rows}.values())

    def finish_eval_run(self, run_id: str, metrics: dict[str, Any]) -> None:
        with self._session.begin() as s:
            run = s.get_one(EvalRun, run_id)
            run.status, run.metrics, run.finished_at = "done", metrics, utcnow()

    def eval_run(self, run_id: str) -> dict[str, Any] | None:
        with self._session() as s:
            row = s.get(EvalRun, run_id)
            return None if row is None else _columns(row)

    def training_episodes(self, split: str) -> list[dict[str, Any]]:
        """Answered episodes of `split` or of no split (chat, `ask`), with their attempts."""
        with self._session() as s:
            rows = s.scalars(
                select(Episode)
                .options(selectinload(Episode.attempts))
                .where(
                    Episode.status.in_(("passed", "repaired", "unresolved")),
                    Episode.split.is_(None) | (Episode.split == split),
                )
                .order_by(Episode.created_at)
            )
            return [episode_dict(r, with_attempts=True) for r in rows if r.attempts]

    def prompts_outside_split(self, split: str) -> list[tuple[str, list[Any]]]:
        """(prompt, scoring) of the episodes recorded under any split other than `split`
        (held-out, gate, test), one per prompt."""
        with self._session() as s:
            rows = s.execute(
                select(Episode.prompt, Episode.scoring).where(
                    Episode.split.is_not(None), Episode.split != split
                )
            )
            return list({prompt: (prompt, scoring) for prompt, scoring in rows}.values())

    # The adapter registry.

    def next_adapter_version(self) -> str:
        with self._session() as s:
            versions = s.scalars(select(Adapter.version))
            return f"v{max((int(v[1:]) for v in versions), default=0) + 1}"

    def add_adapter(self, **fields: Any) -> dict[str, Any]:
        with self._session.begin() as s:
            row = Adapter(status="candidate", **fields)
            s.add(row)
            s.flush()
            return _columns(row)

    def adapters(self) -> list[dict[str, Any]]:
        with self._session() as s:
            return [_columns(r) for r in s.scalars(select(Adapter).order_by(Adapter.created_at))]

    def adapter(self, version: str) -> dict[str, Any] | None:
        with self._session() as s:
            row = s.get(Adapter, version)
            return None if row is None else _columns(row)

    def promoted_adapter(self) -> dict[str, Any] | None:
        """The adapter that ask, chat, serve and eval use by default (None: the base model)."""
        with self._session() as s:
            row = s.scalars(select(Adapter).where(Adapter.status == "promoted")).first()
            return None if row is None else _columns(row)

    def update_adapter(self, version: str, *, metrics: dict[str, Any] | None = None,
                       **fields: Any) -> None:  # fmt: skip
        """Set columns; `metrics` entries are merged into the adapter's metrics."""
        with self._session.begin() as s:
            row = s.get_one(Adapter, version)
            for key, value in fields.items():
                setattr(row, key, value)
            if metrics:
                row.metrics = {**row.metrics, **metrics}

    def set_promoted(self, version: str | None, reason: str, demoted_status: str) -> None:
        """Make `version` (None: the base model) the default in one transaction; the
        adapter that was promoted gets `demoted_status` (retired, or rejected on rollback)."""
        with self._session.begin() as s:
            for row in s.scalars(select(Adapter).where(Adapter.status == "promoted")):
                row.status, row.reason = demoted_status, reason
            if version is not None:
                row = s.get_one(Adapter, version)
                row.status, row.reason, row.promoted_at = "promoted", reason, utcnow()

    # Self-repair cycles.

    def start_cycle(self, trigger: str) -> str:
        """A new cycle; cycles left `running` by a killed process are marked failed."""
        cycle_id = uuid.uuid4().hex
        with self._session.begin() as s:
            for row in s.scalars(select(Cycle).where(Cycle.status == "running")):
                row.status, row.reason = "failed", "interrupted (the process was stopped)"
                row.finished_at = utcnow()
            s.add(Cycle(id=cycle_id, status="running", trigger=trigger, stages=[]))
        return cycle_id

    def record_stage(self, cycle_id: str, stage: dict[str, Any]) -> None:
        with self._session.begin() as s:
            row = s.get_one(Cycle, cycle_id)
            row.stages = [*row.stages, stage]

    def finish_cycle(self, cycle_id: str, *, status: str, reason: str | None,
                     adapter_version: str | None, result: dict[str, Any]) -> None:  # fmt: skip
        with self._session.begin() as s:
            row = s.get_one(Cycle, cycle_id)
            row.status, row.reason, row.adapter_version = status, reason, adapter_version
            row.result, row.finished_at = result, utcnow()

    def cycles(self, limit: int = 20) -> list[dict[str, Any]]:
        with self._session() as s:
            rows = s.scalars(select(Cycle).order_by(Cycle.started_at.desc()).limit(limit))
            return [_columns(r) for r in rows]

    def eval_run_source(self, suite: str) -> str | None:
        """Where the suite of that name was last run from (a file path, or built-in)."""
        with self._session() as s:
            return s.scalars(
                select(EvalRun.source)
                .where(EvalRun.suite == suite)
                .order_by(EvalRun.created_at.desc())
                .limit(1)
            ).first()

    def corrections(self) -> list[dict[str, Any]]:
        with self._session() as s:
            rows = s.scalars(select(Correction).order_by(Correction.id))
            return [_columns(r) for r in rows]


def _attempt(index: int, a: dict[str, Any]) -> Attempt:
    return Attempt(
        index=index, kind=a["kind"], answer=a["answer"], verdicts=a["verdicts"],
        passed=a["passed"], score=a["score"], gold_passed=a.get("gold_passed"),
        diagnosis=a.get("diagnosis"), prompt_tokens=a.get("prompt_tokens", 0),
        completion_tokens=a.get("completion_tokens", 0), latency_s=a.get("latency_s", 0.0),
        model=a["model"], memory=a.get("memory"),
    )  # fmt: skip


def _correction(episode_id: str | None, c: dict[str, Any]) -> Correction:
    return Correction(
        episode_id=episode_id, prompt=c["prompt"], prompt_hash=prompt_hash(c["prompt"]),
        messages=c.get("messages") or [{"role": "user", "content": c["prompt"]}],
        rejected=c.get("rejected"), chosen=c.get("chosen"), source=c["source"],
        verified=c["verified"],
        justification=c.get("justification") or justification_of(c["source"]),
        correct=c.get("correct"),
    )  # fmt: skip


def _columns(row: Any) -> dict[str, Any]:
    out = {}
    for column in row.__table__.columns:
        value = getattr(row, column.key)
        out[column.key] = value.isoformat() if isinstance(value, datetime) else value
    return out


def episode_dict(row: Episode, with_attempts: bool = False) -> dict[str, Any]:
    out = _columns(row)
    if with_attempts:
        out["attempts"] = [_columns(a) for a in row.attempts]
    return out
