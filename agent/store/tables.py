"""The store's tables. Changes go through a new migration in `migrations/versions/`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy import text as sql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSON,
        list[Any]: JSON,
        datetime: DateTime(timezone=True),
    }


class Episode(Base):
    """One request through the reflection graph, whatever its outcome."""

    __tablename__ = "episodes"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    thread_id: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    finished_at: Mapped[datetime | None]
    prompt: Mapped[str] = mapped_column(Text)
    messages: Mapped[list[Any]]
    checks: Mapped[list[Any]]  # visible: what the loop saw
    scoring: Mapped[list[Any]] = mapped_column(default=list)  # gold: only scored the episode
    gold_allowed: Mapped[bool] = mapped_column(Boolean, default=False)  # may be learnt from
    # running | passed | repaired | unresolved | verifier_error | error
    status: Mapped[str] = mapped_column(String(16), index=True)
    answer: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    first_passed: Mapped[bool | None]
    final_passed: Mapped[bool | None]
    judge_only: Mapped[bool] = mapped_column(Boolean, default=False)
    first_correct: Mapped[bool | None]  # by scoring; None: the item has no scoring
    final_correct: Mapped[bool | None]
    right_to_wrong: Mapped[bool | None]  # the harm ledger: reflection broke a right answer
    wrong_to_right: Mapped[bool | None]
    # Per attempt, right by scoring (None: no scoring): scored after the loop, never in it.
    scores: Mapped[list[Any]] = mapped_column(default=list)
    # A gate's extra answers to the first prompt: [{answer, passed}] (passed by scoring where
    # the item has it, else by its visible checks). None: none were asked.
    draws: Mapped[list[Any] | None]
    n_attempts: Mapped[int] = mapped_column(Integer, default=0)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    latency_s: Mapped[float | None] = mapped_column(Float)
    model: Mapped[str] = mapped_column(String(200))
    adapter: Mapped[str | None] = mapped_column(String(200))
    suite: Mapped[str | None] = mapped_column(String(200), index=True)
    split: Mapped[str | None] = mapped_column(String(50))
    item_id: Mapped[str | None] = mapped_column(String(200))
    eval_run_id: Mapped[str | None] = mapped_column(String(32), index=True)
    owner: Mapped[str | None] = mapped_column(String(300))  # host:pid:start of its process
    attempts: Mapped[list[Attempt]] = relationship(
        back_populates="episode", order_by="Attempt.index", cascade="all, delete-orphan"
    )


class Attempt(Base):
    """One answer within an episode: the first generation or a repair."""

    __tablename__ = "attempts"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    episode_id: Mapped[str] = mapped_column(
        ForeignKey("episodes.id", ondelete="CASCADE"), index=True
    )
    index: Mapped[int]
    kind: Mapped[str] = mapped_column(String(16))  # generate | repair
    strategy: Mapped[str | None] = mapped_column(String(16))  # a repair's (graphs/repair.py)
    note: Mapped[str | None] = mapped_column(Text)  # what the strategy did
    answer: Mapped[str] = mapped_column(Text)
    verdicts: Mapped[list[Any]]
    passed: Mapped[bool]
    score: Mapped[float]
    diagnosis: Mapped[dict[str, Any] | None]
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    latency_s: Mapped[float] = mapped_column(Float, default=0.0)
    model: Mapped[str] = mapped_column(String(200))
    memory: Mapped[dict[str, Any] | None]  # the corrections recalled into its prompt
    episode: Mapped[Episode] = relationship(back_populates="attempts")


class Correction(Base):
    """A better answer for a prompt: a verified repair, a gold answer, or a user's."""

    __tablename__ = "corrections"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    episode_id: Mapped[str | None] = mapped_column(
        ForeignKey("episodes.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    prompt: Mapped[str] = mapped_column(Text)
    prompt_hash: Mapped[str] = mapped_column(String(64), index=True)
    messages: Mapped[list[Any]]
    rejected: Mapped[str | None] = mapped_column(Text)
    chosen: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16))  # repair | gold | user | sampled | self
    verified: Mapped[bool]
    justification: Mapped[str] = mapped_column(String(16), default="checks")  # see JUSTIFICATIONS
    correct: Mapped[bool | None]  # scoring's view of `chosen`: measures precision, selects nothing


class Rating(Base):
    """A person's thumbs up (good) or down (bad) on an episode's answer, and who gave it."""

    __tablename__ = "ratings"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    episode_id: Mapped[str] = mapped_column(
        ForeignKey("episodes.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    rating: Mapped[str] = mapped_column(String(4))  # good | bad
    by: Mapped[str | None] = mapped_column(String(200))
    comment: Mapped[str | None] = mapped_column(Text)


class Memory(Base):
    """A verified correction the agent can recall as a worked example (one per prompt).
    Full-text indexed by migration 0004 (FTS5 on SQLite, tsvector on PostgreSQL)."""

    __tablename__ = "memories"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    prompt_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prompt: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16))  # user | repair | gold | sampled | self
    justification: Mapped[str] = mapped_column(String(16), default="checks")
    suite: Mapped[str | None] = mapped_column(String(200))  # of the episode it came from
    helped: Mapped[int] = mapped_column(Integer, default=0)  # recalled, and scoring flipped
    hurt: Mapped[int] = mapped_column(Integer, default=0)  # to right / to wrong (paired runs)
    correction_id: Mapped[int | None]
    episode_id: Mapped[str | None] = mapped_column(String(32))
    checks: Mapped[list[Any]]  # what verified the answer; retirement reruns them
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    uses: Mapped[int] = mapped_column(Integer, default=0)
    # active | retired (for `retired_by`) | harmful (recalling it hurt more than it helped)
    status: Mapped[str] = mapped_column(String(16), index=True, default="active")
    retired_by: Mapped[str | None] = mapped_column(String(32))  # passes it unaided


class RecallPolicy(Base):
    """Whether a model recalls memories on a suite's items (and of its memories); the gate
    turns recall off where, measured with and without it, recall made answers worse."""

    __tablename__ = "recall_policy"
    model: Mapped[str] = mapped_column(String(200), primary_key=True)  # "": the base model
    suite: Mapped[str] = mapped_column(String(200), primary_key=True)
    recall: Mapped[bool]
    reason: Mapped[str] = mapped_column(Text)
    measured: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class EvalRun(Base):
    """One `reflexa eval run`: a suite, its options, and (when done) its metrics."""

    __tablename__ = "eval_runs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    suite: Mapped[str] = mapped_column(String(200), index=True)
    source: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(16))  # running | done
    config: Mapped[dict[str, Any]]
    config_key: Mapped[str] = mapped_column(String(64), index=True)  # suite + options, hashed
    metrics: Mapped[dict[str, Any] | None]


class Adapter(Base):
    """A trained LoRA adapter and what the gate made of it."""

    __tablename__ = "adapters"
    __table_args__ = (  # one promoted adapter at most (migration 0010)
        Index("one_promoted", "status", unique=True, sqlite_where=sql("status = 'promoted'"),
              postgresql_where=sql("status = 'promoted'")),
    )  # fmt: skip
    version: Mapped[str] = mapped_column(String(32), primary_key=True)  # v1, v2, …
    name: Mapped[str] = mapped_column(String(64))  # reflexa-<hash12>: its name in vLLM
    path: Mapped[str] = mapped_column(Text)
    parent: Mapped[str | None] = mapped_column(String(32))  # the default when it was trained
    base_model: Mapped[str] = mapped_column(String(200))
    method: Mapped[str] = mapped_column(String(8))  # sft | dpo
    dataset_hash: Mapped[str] = mapped_column(String(64))
    examples: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    promoted_at: Mapped[datetime | None]
    # candidate | promoted | rejected | retired
    status: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    metrics: Mapped[dict[str, Any]]


class Cycle(Base):
    """One `reflexa cycle`: compile → train → gate → promote, each stage timed."""

    __tablename__ = "cycles"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    finished_at: Mapped[datetime | None]
    # running | promoted | rejected | skipped | failed
    status: Mapped[str] = mapped_column(String(16))
    trigger: Mapped[str] = mapped_column(String(16))  # cli | schedule
    stages: Mapped[list[Any]]
    adapter_version: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None]
