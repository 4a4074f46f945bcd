"""Comparing two runs item by item: McNemar's exact test on pass/fail pairs, and its
generalisation to per-item pass fractions (several answers per item), the exact paired
sign-flip test, with a one-sided lower bound for non-inferiority."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from math import comb
from typing import Any

import numpy as np

Z_95 = 1.6449  # one-sided 95 % normal quantile


def mcnemar_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: b items only the first run passed, c only the second."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(comb(n, i) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def compare_runs(
    a: Mapping[str, Mapping[str, bool]], b: Mapping[str, Mapping[str, bool]]
) -> dict[str, Any]:
    """Per metric (`first_attempt`, `final`): both runs' pass rates on their common items,
    the difference b - a, the discordant counts and the p-value."""
    common = sorted(set(a) & set(b))
    out: dict[str, Any] = {"items": len(common)}
    for metric in ("first_attempt", "final"):
        only_a = sum(a[i][metric] and not b[i][metric] for i in common)
        only_b = sum(b[i][metric] and not a[i][metric] for i in common)
        rate_a = sum(a[i][metric] for i in common) / len(common) if common else 0.0
        rate_b = sum(b[i][metric] for i in common) / len(common) if common else 0.0
        out[metric] = {
            "a": round(rate_a, 4),
            "b": round(rate_b, 4),
            "difference": round(rate_b - rate_a, 4),
            "only_a_passed": only_a,
            "only_b_passed": only_b,
            "p_value": float(f"{mcnemar_p(only_a, only_b):.3g}"),  # 3 significant digits
        }
    return out


def sign_flip_p(differences: Sequence[int]) -> float:
    """Two-sided exact p-value of the paired sign-flip test on integer differences: with no
    effect, each pair's difference is as likely negative as positive. On pass/fail pairs
    (differences of -1, 0, 1) it is McNemar's exact test."""
    steps = [abs(d) for d in differences if d]
    reach = sum(steps)
    spread = np.zeros(2 * reach + 1)  # the sum's distribution over the signs; index reach is 0
    spread[reach] = 1.0
    for d in steps:
        spread = (np.roll(spread, d) + np.roll(spread, -d)) / 2  # never wraps: |sum| <= reach
    totals = np.abs(np.arange(-reach, reach + 1))
    return min(1.0, float(spread[totals >= abs(sum(differences))].sum()))


def compare_fractions(
    a: Mapping[str, tuple[int, int]], b: Mapping[str, tuple[int, int]]
) -> dict[str, Any]:
    """Two runs' items as (answers passed, answers asked): their mean pass fractions on the
    common items, the difference b - a, the exact sign-flip p-value and the one-sided 95 %
    lower bound of the difference (normal approximation; for non-inferiority)."""
    common = sorted(set(a) & set(b))
    if not common:
        return {"items": 0, "a": 0.0, "b": 0.0, "difference": 0.0, "p_value": 1.0,
                "lower_95": 0.0}  # fmt: skip
    scale = math.lcm(*(n for i in common for n in (a[i][1], b[i][1])))
    fa = [a[i][0] * scale // a[i][1] for i in common]
    fb = [b[i][0] * scale // b[i][1] for i in common]
    diffs = [y - x for x, y in zip(fa, fb, strict=True)]
    mean = sum(diffs) / len(diffs) / scale
    spread = statistics.stdev(diffs) / scale if len(diffs) > 1 else 0.0
    return {
        "items": len(common),
        "a": round(sum(fa) / len(fa) / scale, 4),
        "b": round(sum(fb) / len(fb) / scale, 4),
        "difference": round(mean, 4),
        "p_value": float(f"{sign_flip_p(diffs):.3g}"),
        "lower_95": round(mean - Z_95 * spread / math.sqrt(len(diffs)), 4),
    }
