"""A run's numbers: pass rates with Wilson 95 % intervals, repair gain and harm, cost."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from reflexa.evals.runner import ItemOutcome

Z95 = 1.959964


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion k/n."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def rate(k: int, n: int) -> dict[str, Any]:
    lo, hi = wilson(k, n)
    return {"k": k, "n": n, "rate": k / n if n else 0.0, "ci95": [round(lo, 4), round(hi, 4)]}


def paired_gain(fixed: int, broken: int, n: int, z: float = Z95) -> dict[str, Any]:
    """Difference of two paired proportions (final - first) with a Wald 95 % interval."""
    if n == 0:
        return {"gain": 0.0, "ci95": [0.0, 0.0]}
    d = (fixed - broken) / n
    var = (fixed + broken - (fixed - broken) ** 2 / n) / (n * n)
    half = z * math.sqrt(max(var, 0.0))
    return {"gain": d, "ci95": [round(d - half, 4), round(d + half, 4)]}


def harm_ledger(outcomes: Sequence[ItemOutcome]) -> dict[str, Any]:
    """What reflection did to answers, by scoring (items without scoring left out): right →
    wrong, wrong → right, and the net change per scored item."""
    scored = [o for o in outcomes if o.scored]
    broken = sum(o.right_to_wrong for o in scored)
    fixed = sum(o.wrong_to_right for o in scored)
    return {
        "scored": len(scored),
        "right_to_wrong": broken,
        "wrong_to_right": fixed,
        "net": round((fixed - broken) / len(scored), 4) if scored else 0.0,
    }


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summarize(outcomes: Sequence[ItemOutcome]) -> dict[str, Any]:
    """The metrics of one run (errors count as failures: an item never answered is not right)."""
    n = len(outcomes)
    first = sum(o.first_passed for o in outcomes)
    final = sum(o.final_passed for o in outcomes)
    fixed = sum(o.final_passed and not o.first_passed for o in outcomes)
    broken = sum(o.first_passed and not o.final_passed for o in outcomes)
    latencies = [o.latency_s for o in outcomes if o.error is None]
    return {
        "items": n,
        "errors": sum(o.error is not None for o in outcomes),
        "first_attempt_pass": rate(first, n),
        "final_pass": rate(final, n),
        "repair_gain": paired_gain(fixed, broken, n),
        "harm_rate": rate(broken, first),
        "harm": harm_ledger(outcomes),
        "checks_pass": rate(sum(o.checks_passed for o in outcomes), n),
        "mean_repairs": round(statistics.mean(o.repairs for o in outcomes), 3) if n else 0.0,
        "tokens": sum(o.tokens for o in outcomes),
        "latency_s": {
            "p50": round(percentile(latencies, 0.5), 3),
            "p95": round(percentile(latencies, 0.95), 3),
        },
    } | _fractions(outcomes)


def _fractions(outcomes: Sequence[ItemOutcome]) -> dict[str, Any]:
    """Where items were answered more than once (`--draws`), the mean share of an item's
    answers that passed: the gate's evidence per item."""
    drawn = [o for o in outcomes if o.draws]
    if not drawn:
        return {}
    fraction = statistics.mean(o.pass_fraction for o in drawn)
    return {"pass_fraction": {"mean": round(fraction, 4), "answers": 1 + len(drawn[0].draws)}}


def by_strategy(outcomes: Sequence[ItemOutcome]) -> dict[str, dict[str, Any]]:
    """Per repair strategy: repairs made, how many passed the visible checks, the scored items
    whose returned answer it made that scoring found fixed (wrong → right) or broken, the
    turns where the routing table skipped it (agent.app.routing), and its tokens and
    seconds, in all and per fixed item."""
    out: dict[str, dict[str, Any]] = {}

    def row(strategy: str) -> dict[str, Any]:
        return out.setdefault(strategy, {"repairs": 0, "passed": 0, "fixed": 0, "broke": 0,
                                         "skipped": 0, "tokens": 0, "seconds": 0.0})  # fmt: skip

    for o in outcomes:
        for strategy in o.skipped:
            row(strategy)["skipped"] += 1
        for r in o.repair_log:
            s = row(r["strategy"])
            s["repairs"] += 1
            s["passed"] += bool(r["passed"])
            s["tokens"] += r["tokens"]
            s["seconds"] += r["latency_s"]
        if o.final_strategy is not None and o.scored:
            s = out[o.final_strategy]
            s["fixed"] += o.wrong_to_right
            s["broke"] += o.right_to_wrong
    for s in out.values():
        s["seconds"] = round(s["seconds"], 3)
        s["tokens_per_fix"] = round(s["tokens"] / s["fixed"]) if s["fixed"] else None
        s["seconds_per_fix"] = round(s["seconds"] / s["fixed"], 3) if s["fixed"] else None
    return dict(sorted(out.items()))
