"""What every verifier returns, and what it is given besides the answer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Literal

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
