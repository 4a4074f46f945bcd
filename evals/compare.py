"""Comparing two runs item by item, with McNemar's exact test on the discordant pairs."""

from __future__ import annotations

from collections.abc import Mapping
from math import comb
from typing import Any


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
