"""What every verifier returns, and what it is given besides the answer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, TypeVar

Kind = Literal["grounded", "judge"]


@dataclass(frozen=True)
class Verdict:
    """One verifier's judgement of one answer.

    `feedback` is shown to the model when it repairs, so it says what is wrong and what form
    is wanted without giving away a gold answer. A verifier that crashed has `error` set; its
    verdict does not count as the answer failing.
    """

    verifier: str
    passed: bool
    score: float
    feedback: str = ""
    kind: Kind = "grounded"
    error: str | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


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


def grounded_ran(verdicts: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The recorded verdicts of grounded checks that ran (did not fail to run)."""
    return [v for v in verdicts if v["kind"] == "grounded" and v["error"] is None]


def grounded_pass(verdicts: Sequence[Mapping[str, Any]]) -> bool:
    """Passed on evidence: a grounded check ran, and every check that ran passed."""
    ran = [v for v in verdicts if v["error"] is None]
    return bool(grounded_ran(ran)) and all(v["passed"] for v in ran)
