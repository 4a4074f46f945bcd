"""What every verifier returns, and what it is given besides the answer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, TypedDict, TypeVar

Kind = Literal["grounded", "judge"]


class VerdictRecord(TypedDict):
    """A verdict as recorded with its attempt (`Verdict.to_dict()`)."""

    verifier: str
    passed: bool
    score: float
    feedback: str
    kind: Kind
    error: str | None


@dataclass(frozen=True)
class Verdict:
    """One verifier's judgement of one answer.

    `feedback` is shown to the model when it repairs, so it says what is wrong and what form
    is wanted without giving away a gold answer. A verifier that crashed (or gave up on this
    answer) has `error` set: the answer did not pass it (`outcome`).
    """

    verifier: str
    passed: bool
    score: float
    feedback: str = ""
    kind: Kind = "grounded"
    error: str | None = None

    def to_dict(self) -> VerdictRecord:
        return VerdictRecord(**asdict(self))  # type: ignore[typeddict-item]


@dataclass(frozen=True)
class JudgeResult:
    passed: bool
    score: float
    feedback: str


# (prompt, answer, rubric) -> the judge's structured opinion.
JudgeFn = Callable[[str, str, str], Awaitable[JudgeResult]]


@dataclass(frozen=True)
class VerifyContext:
    prompt: str
    judge: JudgeFn | None = None
    allow_unconfined: bool = False  # run model code where the sandbox cannot isolate it


# "Grounded": evidence other than the judge, a model's opinion of an answer. The judge alone
# never verifies a correction, a training row or a memory.


Spec = TypeVar("Spec", bound=Mapping[str, Any])


def grounded(checks: Iterable[Spec]) -> list[Spec]:
    """The check specs that are evidence: all but the judge's."""
    return [c for c in checks if c.get("type") != "judge"]


# Whether an answer passed the checks that applied to it. `unchecked`: none applied, which is
# said as such and is never a pass.
Outcome = Literal["passed", "failed", "unchecked"]


def outcome(verdicts: Iterable[Verdict | Mapping[str, Any]]) -> Outcome:
    """The one rule for "it passed", wherever a pass decides something (the graph, selection,
    the vote, rewards, scoring, metrics): passed when there is a verdict and every one passed;
    a check that errored is not passed (an answer that makes a check give up does not escape
    it); no verdict at all is `unchecked`. Takes verdicts or their recorded dicts."""
    seen = False
    for v in verdicts:
        seen = True
        passed, error = (v.passed, v.error) if isinstance(v, Verdict) else (v["passed"], v["error"])
        if error is not None or not passed:
            return "failed"
    return "passed" if seen else "unchecked"


def grounded_ran(verdicts: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The recorded verdicts of grounded checks that ran (did not fail to run)."""
    return [v for v in verdicts if v["kind"] == "grounded" and v["error"] is None]


def grounded_pass(verdicts: Sequence[Mapping[str, Any]]) -> bool:
    """Passed on evidence: a grounded check judged it, and it passed every check (`outcome`)."""
    return bool(grounded_ran(verdicts)) and outcome(verdicts) == "passed"
