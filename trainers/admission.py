"""Which suites' rows a pass of form may admit. A check of form (a schema without values, a
format) says nothing about the values, so a row it alone justifies (`form`) is admitted only
for a suite where it was measured and found precise: on the suite's scored held-out answers
(first answers and a gate's draws) whose checks judge form alone, the share of those the
checks passed that scoring found right, with its 95 % lower bound (Wilson) at least
`form_precision` over at least `MIN_MEASURED` answers. Where nothing measures it, only
users, allowed gold, self-consistency and checks that decide the value admit rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

MIN_MEASURED = 30  # answers the checks passed, at least, before a precision is believed
Z = 1.96


def wilson_lower(right: int, n: int) -> float:
    """The 95 % Wilson lower bound of a proportion `right` of `n`."""
    if n == 0:
        return 0.0
    p = right / n
    centre = p + Z * Z / (2 * n)
    spread = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n))
    return (centre - spread) / (1 + Z * Z / n)


def form_admission(
    evidence: Mapping[str, Sequence[tuple[bool, bool]]], threshold: float
) -> dict[str, dict[str, Any]]:
    """Per suite: how many held-out answers its checks of form passed, how many of those
    were right, the precision and its lower bound, and whether `form` rows are admitted."""
    out = {}
    for suite, pairs in sorted(evidence.items()):
        passed = [right for checks_ok, right in pairs if checks_ok]
        n, right = len(passed), sum(passed)
        lower = wilson_lower(right, n)
        out[suite] = {
            "measured": n,
            "right": right,
            "precision": round(right / n, 4) if n else None,
            "lower_95": round(lower, 4),
            "admitted": n >= MIN_MEASURED and lower >= threshold,
        }
    return out
