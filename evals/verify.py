"""Gold answers: what an item's own checks spell out, and whether the checks pass it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from reflexa.evals.checks import parse_checks, run_checks, tool_checks
from reflexa.evals.verdict import VerifyContext, grounded


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
    """True when every grounded check passes `answer`: the given ones and the tool checks
    that apply (a stated sum is computed; no judge: it is not evidence). False when none
    applies."""
    parsed = parse_checks(grounded(checks))
    parsed += tool_checks(prompt, answer, parsed)
    if not parsed:
        return False
    ctx = VerifyContext(prompt, allow_unconfined=allow_unconfined)
    verdicts = await run_checks(parsed, answer, ctx)
    return all(v.passed and v.error is None for v in verdicts)
