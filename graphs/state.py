"""The reflection graph's state and the run-scoped context its nodes are given."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypedDict

from langchain_core.language_models import BaseChatModel

from evals import JudgeFn

# passed: the first answer passed every check (or nothing applied: see its empty verdicts)
Status = Literal["running", "passed", "repaired", "unresolved", "verifier_error"]


class Attempt(TypedDict):
    kind: Literal["generate", "repair"]
    answer: str
    verdicts: list[dict[str, Any]]
    passed: bool
    score: float
    gold_passed: bool | None
    diagnosis: dict[str, Any] | None
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    model: str


class ReflectionState(TypedDict, total=False):
    """One thread. `messages` accumulates over turns; the rest describes the current turn
    and is reset by each turn's input."""

    messages: Annotated[list[dict[str, str]], operator.add]
    episode_id: str  # the store's record of this turn, finished even after a resume
    checks: list[dict[str, Any]]  # the task's checks; with none, judge + intrinsic checks
    gold: list[dict[str, Any]]  # scoring-only checks, never shown to the model
    attempts: list[Attempt]
    max_repairs: int
    status: Status
    answer: str | None
    final_index: int | None
    model_s: float  # seconds spent waiting on the model this turn


@dataclass(frozen=True)
class ReflectionContext:
    """What the nodes need, per run: the model to answer with (base or adapter), the judge."""

    llm: BaseChatModel
    model_name: str
    judge: JudgeFn | None = None
    diagnose_llm: BaseChatModel | None = None  # default: llm


def turn_input(
    prompt: str,
    checks: list[dict[str, Any]] | None = None,
    gold: list[dict[str, Any]] | None = None,
    max_repairs: int = 2,
    episode_id: str = "",
    history: list[dict[str, str]] | None = None,
) -> ReflectionState:
    """The input that starts a new turn of a thread (after `history`, in a new thread)."""
    return {
        "messages": [*(history or []), {"role": "user", "content": prompt}],
        "episode_id": episode_id,
        "checks": checks or [],
        "gold": gold or [],
        "attempts": [],
        "max_repairs": max_repairs,
        "status": "running",
        "answer": None,
        "final_index": None,
        "model_s": 0.0,
    }
