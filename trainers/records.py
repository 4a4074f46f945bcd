"""The records that cross from the application's store into the trainers, typed and named for
what they are. The store builds them; the trainers never see its tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from reflexa.evals.verdict import VerdictRecord


@dataclass(frozen=True)
class AttemptRecord:
    """One answer of an episode, as the loop saw it: its checks' verdicts, not its score."""

    kind: str  # generate | repair
    answer: str
    verdicts: list[VerdictRecord]
    passed: bool  # evals.verdict.outcome(verdicts) == "passed"
    strategy: str | None = None  # a repair's: constrained | sample | feedback
    diagnosis: dict[str, Any] | None = None
    memory: dict[str, Any] | None = None  # Recall.trace(): the memories in its prompt

    def recalled_gold(self) -> bool:
        """A memory justified by gold was in its prompt (records before justifications were
        traced name the memory's source)."""
        used = (self.memory or {}).get("used", [])
        return any("gold" in (m.get("justification"), m.get("source")) for m in used)


@dataclass(frozen=True)
class EpisodeRecord:
    """A finished episode: what the loop saw (prompt, visible checks, attempts) and, apart,
    how the application scored it afterwards (scoring, first_correct)."""

    id: str
    prompt: str
    messages: list[dict[str, Any]]
    checks: list[dict[str, Any]]  # visible
    attempts: list[AttemptRecord]
    status: str
    first_passed: bool | None  # by the visible checks (None: none applied)
    suite: str | None = None
    split: str | None = None
    scoring: list[dict[str, Any]] = field(default_factory=list)  # gold: only scores
    gold_allowed: bool = False  # its scoring may become a training row, where a compile allows
    first_correct: bool | None = None  # by scoring (None: no scoring)
    created_at: datetime | None = None  # when it was logged


@dataclass(frozen=True)
class CorrectionRecord:
    """A better answer for a prompt, and what justified it (`evals.signal.JUSTIFICATIONS`);
    `correct` is scoring's view of it: a measurement, which selects only where gold may."""

    id: int
    episode_id: str | None
    prompt: str
    prompt_hash: str
    chosen: str | None
    rejected: str | None
    source: str  # repair | gold | user | sampled | self
    verified: bool
    justification: str
    correct: bool | None = None
    created_at: datetime | None = None  # when it was logged


@dataclass(frozen=True)
class ScoredAnswers:
    """A held-out item's answers, greedy first (then a gate's draws): (answer, the visible
    checks passed it, scoring found it right). Scoring's verdicts only measure what a
    justification is worth on the suite; they never pick a row."""

    prompt: str
    checks: list[dict[str, Any]]
    answers: list[tuple[str, bool, bool]]
