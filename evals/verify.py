"""Gold answers: what an item's own checks spell out, whether the checks pass an answer, and
scoring an episode's answers once it has ended."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any

from reflexa.evals.checks import parse_checks, run_checks, tool_checks
from reflexa.evals.verdict import JudgeFn, VerifyContext, grounded, outcome


def gold_answer(checks: Sequence[dict[str, Any]]) -> str | None:
    """An answer the item's checks spell out (exact text, a number, an expected JSON value),
    or None. The caller verifies it against the checks before using it."""
    for spec in checks:
        expected = spec.get("expected")
        if expected is None:
            continue
        if spec["type"] == "exact":
            return str(expected)
        if spec["type"] == "numeric":
            number = float(expected)
            return str(int(number)) if number.is_integer() else str(number)
        if spec["type"] in ("json", "schema"):
            return json.dumps(expected, ensure_ascii=False)
    return None


async def passes(
    checks: Sequence[dict[str, Any]], prompt: str, answer: str, *, allow_unconfined: bool = False
) -> bool:
    """True when `answer` passes every grounded check (`outcome`): the given ones and the tool
    checks that apply (a stated sum is computed; no judge: it is not evidence). False when
    one fails or errors, and when none applies."""
    parsed = parse_checks(grounded(checks))
    parsed += tool_checks(prompt, answer, parsed)
    ctx = VerifyContext(prompt, allow_unconfined=allow_unconfined)
    return outcome(await run_checks(parsed, answer, ctx)) == "passed"


async def score(
    scoring: Sequence[dict[str, Any]],
    prompt: str,
    answers: Sequence[str],
    *,
    judge: JudgeFn | None = None,
    allow_unconfined: bool = False,
) -> list[bool | None]:
    """Whether each answer is right by the item's scoring (gold), by the one rule
    (`outcome`: a scoring check that errors makes the answer wrong); None each where the item
    has no scoring. The application's, after an episode ends: the loop never holds scoring."""
    if not scoring:
        return [None] * len(answers)
    checks = parse_checks(scoring)
    ctx = VerifyContext(prompt, judge, allow_unconfined)
    distinct = list(dict.fromkeys(answers))  # a repair that kept the answer: scored once
    verdicts = await asyncio.gather(*(run_checks(checks, a, ctx) for a in distinct))
    right = {a: outcome(vs) == "passed" for a, vs in zip(distinct, verdicts, strict=True)}
    return [right[a] for a in answers]


async def score_draws(
    episode: Mapping[str, Any], prompt: str, drawn: Sequence[str], allow_unconfined: bool
) -> list[dict[str, Any]]:
    """A gate's extra answers to an episode's first prompt, scored after the loop: whether
    each passed as the gate counts a pass (`passed`): by the item's scoring where it has one
    (`correct`), else by its visible grounded checks and the tools that apply
    (`checks_passed`). Both are kept: together they measure how often a pass of the visible
    checks is right (`trainers.admission`)."""
    unconfined = allow_unconfined
    checked = await asyncio.gather(
        *(passes(episode["checks"], prompt, a, allow_unconfined=unconfined) for a in drawn)
    )
    right = await score(episode["scoring"], prompt, drawn, allow_unconfined=unconfined)
    return [
        {"answer": a, "passed": c if r is None else r, "checks_passed": c, "correct": r}
        for a, c, r in zip(drawn, checked, right, strict=True)
    ]
