"""Which suites' rows a justification may admit, from what it was measured to be worth on
the suite's scored held-out answers (first answers and a gate's draws).

A check of form (a schema without values, a format) says nothing about the values, so a row
it alone justifies (`form`) is admitted only for a suite where it was measured and found
precise: of the answers whose checks judge form alone, the share of those the checks passed
that scoring found right, with its 95 % lower bound (Wilson) at least `form_precision`
over at least `MIN_MEASURED` answers.

Self-consistency is admitted unless measured imprecise: the same vote the sampling stage
takes, taken over each held-out item's answers (its greedy one and the gate's draws: fewer
than a night samples, so only the greedy answer's agreement usually decides), is right as
often as scoring says; where the 95 % upper bound of that share stays below
`consistency_precision`, a model that agrees with itself on a wrong answer (the same wrong
field, every time) is not evidence there. The bound already carries how few votes there
are, so `MIN_VOTES` is only a floor against refusing on a couple of them: a user's suite
measured 0 right of 14 votes (upper bound 0.22), and 7 of its 9 rows that night were wrong.

Where nothing measures them, users, allowed gold, self-consistency and checks that decide
the value admit rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from reflexa.evals.metrics import wilson
from reflexa.evals.signal import by_checks, vote
from reflexa.trainers.records import ScoredAnswers

MIN_MEASURED = 30  # answers measured, at least, before a precision admits `form` rows
MIN_VOTES = 10  # votes measured, at least, before an upper bound refuses `consistency` rows


def wilson_lower(right: int, n: int) -> float:
    return wilson(right, n)[0]


def wilson_upper(right: int, n: int) -> float:
    return wilson(right, n)[1]


def form_admission(
    evidence: Mapping[str, Sequence[ScoredAnswers]], threshold: float
) -> dict[str, dict[str, Any]]:
    """Per suite (where its checks judge form alone): how many held-out answers they passed,
    how many of those were right, the precision and its lower bound, and whether `form`
    rows are admitted."""
    out = {}
    for suite, items in sorted(evidence.items()):
        form = [i for i in items if by_checks(i.checks, i.prompt, i.answers[0][0]) == "form"]
        if not form:
            continue
        right = [ok for item in form for _, passed, ok in item.answers if passed]
        n, lower = len(right), wilson_lower(sum(right), len(right))
        out[suite] = _measured(right) | {"admitted": n >= MIN_MEASURED and lower >= threshold}
    return out


def consistency_admission(
    evidence: Mapping[str, Sequence[ScoredAnswers]],
    threshold: float,
    min_greedy: int,
    min_majority: int,
) -> dict[str, dict[str, Any]]:
    """Per suite with held-out items answered more than once: how many votes picked an
    answer, how many of those were right, the precision and its upper bound, and whether
    `consistency` rows are admitted (refused only where measured below `threshold`)."""
    out = {}
    for suite, items in sorted(evidence.items()):
        right = []
        for item in items:
            if len(item.answers) < 2:
                continue
            texts, passes, correct = zip(*item.answers, strict=True)
            chosen = vote(texts[0], texts[1:], item.checks, passes, min_greedy, min_majority)
            if chosen is not None:
                right.append(correct[texts.index(chosen.answer)])
        if right:
            upper = wilson_upper(sum(right), len(right))
            out[suite] = _measured(right) | {
                "upper_95": round(upper, 4),
                "admitted": len(right) < MIN_VOTES or upper >= threshold,
            }
    return out


def _measured(right: list[bool]) -> dict[str, Any]:
    n, k = len(right), sum(right)
    return {"measured": n, "right": k, "precision": round(k / n, 4) if n else None,
            "lower_95": round(wilson_lower(k, n), 4)}  # fmt: skip
