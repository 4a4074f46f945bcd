"""The reflection graph's state and the run-scoped context its nodes are given."""

from __future__ import annotations

import operator
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypedDict

from langchain_core.language_models import BaseChatModel

from reflexa.evals import JudgeFn
from reflexa.evals.verdict import VerdictRecord

# passed: the first answer passed every check; unchecked: no check applied to it (never a
# pass); verifier_error: a check errored and none failed (evals.verdict.outcome)
Status = Literal["running", "passed", "repaired", "unresolved", "verifier_error", "unchecked"]


class Attempt(TypedDict):
    kind: Literal["generate", "repair"]
    strategy: str | None  # a repair's: constrained | sample | feedback (graphs/repair.py)
    note: str | None  # what the strategy did (candidates that passed, a fallback)
    answer: str
    verdicts: list[VerdictRecord]
    passed: bool  # evals.verdict.outcome(verdicts) == "passed"
    score: float
    diagnosis: dict[str, Any] | None
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    model: str
    memory: dict[str, Any]  # Recall.trace(): the memories in its prompt, or why none


@dataclass(frozen=True)
class Recall:
    """What one request recalled from the correction memory: the memories (best first; each
    with id, prompt, answer, source, similarity, tokens) and, when something was left out or
    went wrong, a note saying why."""

    memories: list[dict[str, Any]] = field(default_factory=list)
    note: str | None = None
    seconds: float = 0.0

    def trace(self) -> dict[str, Any]:
        """For the trace: which memories, not their answers."""
        keys = ("id", "source", "justification", "similarity", "tokens")
        used = [{k: m.get(k) for k in keys} | {"prompt": m["prompt"][:80]} for m in self.memories]
        return {"used": used, "note": self.note, "seconds": round(self.seconds, 4)}


# (the request's text, its suite or None) → what to show as worked examples
RecallFn = Callable[[str, str | None], Recall]

# (the answering model, the turn's suite or None, its checks) → what the record shows of each
# repair strategy there: (repairs, of which passed the visible checks) (agent.app.routing)
RoutingFn = Callable[[str, str | None, list[dict[str, Any]]], dict[str, tuple[int, int]]]


class ReflectionState(TypedDict, total=False):
    """One thread. `messages` accumulates over turns; the rest describes the current turn
    and is reset by each turn's input. It holds what the loop may see and nothing else: an
    item's scoring (gold) is not here; the application scores the episode after it ends."""

    messages: Annotated[list[dict[str, str]], operator.add]
    episode_id: str  # the store's record of this turn, finished even after a resume
    checks: list[dict[str, Any]]  # the task's checks; with none, judge + intrinsic checks
    attempts: list[Attempt]
    max_repairs: int
    status: Status
    answer: str | None
    final_index: int | None
    model_s: float  # seconds spent waiting on the model this turn
    use_memory: bool  # recall past corrections for this turn
    suite: str | None  # the eval suite the turn's item belongs to (None: chat)
    recalled: list[dict[str, Any]]  # the memories shown as worked examples
    memory: dict[str, Any]  # Recall.trace(): what each attempt of this turn was shown
    started: float  # the turn's start (epoch seconds), for its repair time budget
    draws: int  # extra answers to the first prompt, asked with it in one request (a gate's)
    draw_temperature: float
    drawn: list[str]  # those answers: evidence for whoever scores the turn, never repaired


@dataclass(frozen=True)
class ReflectionContext:
    """What the nodes need, per run: the model to answer with (base or adapter), the judge."""

    llm: BaseChatModel
    model_name: str
    judge: JudgeFn | None = None
    diagnose_llm: BaseChatModel | None = None  # default: llm
    recall: RecallFn | None = None  # the correction memory; None: off
    samples: int = 8  # candidates a sampling repair may draw (≤ 1: never sample)
    escalate: bool = True  # draw them 2, 2, 4, … and stop at a verified one (repair.batches)
    sample_temperature: float = 1.0
    strategies: tuple[str, ...] = ("constrained", "sample", "feedback")  # repairs allowed
    routing: RoutingFn | None = None  # the record of what fixes where; None: route by rule
    min_tries: int = 20  # a strategy passing fewer than 1 in this many repairs in a place,
    # after this many, is ruled out there by the record
    max_tokens: int = 512  # per answer (the answering model's own limit)
    repair_tokens: int = 4096  # completion tokens all repairs of a turn may use together
    repair_seconds: float = 60.0  # no repair starts once the turn has run this long
    allow_unconfined: bool = False  # run model code where the sandbox cannot isolate it


def turn_input(
    prompt: str,
    checks: list[dict[str, Any]] | None = None,
    max_repairs: int = 2,
    episode_id: str = "",
    history: list[dict[str, str]] | None = None,
    use_memory: bool = True,
    suite: str | None = None,
    draws: int = 0,
    draw_temperature: float = 1.0,
) -> ReflectionState:
    """The input that starts a new turn of a thread (after `history`, in a new thread).
    `draws`: that many more answers to the first prompt, sampled at `draw_temperature` in one
    request beside the first answer (the gate's evidence per item); the loop does not use them."""
    return {
        "messages": [*(history or []), {"role": "user", "content": prompt}],
        "episode_id": episode_id,
        "checks": checks or [],
        "attempts": [],
        "max_repairs": max_repairs,
        "status": "running",
        "answer": None,
        "final_index": None,
        "model_s": 0.0,
        "use_memory": use_memory,
        "suite": suite,
        "recalled": [],
        "memory": {},
        "started": time.time(),
        "draws": draws,
        "draw_temperature": draw_temperature,
        "drawn": [],
    }
