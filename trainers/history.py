"""Learning how to learn, from the record: what each past night tried, what won and what it
cost, so the next night tries the likeliest winner first within its time budget; and a
scheduled night with nothing new to learn from says so at once, at no cost."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

DECIDED = ("promoted", "rejected")  # nights whose methods the gate judged


def tried(cycle: dict[str, Any]) -> dict[str, tuple[bool, float]]:
    """Per method a night gated: (it was promoted, seconds it took to train)."""
    result = cycle.get("result") or {}
    if cycle.get("status") not in DECIDED:
        return {}
    promoted = result.get("status") == "promoted"
    served = (result.get("adapter") or {}).get("version") if promoted else None
    if result.get("methods"):
        return {
            m: (s.get("adapter") == served, float(s.get("train_s") or 0))
            for m, s in result["methods"].items()
            if "skipped" not in s
        }
    method = result.get("method") or (result.get("adapter") or {}).get("method")
    train: dict[str, Any] = next((s for s in result.get("stages", []) if s["stage"] == "train"), {})
    return {method: (promoted, float(train.get("train_s") or 0))} if method else {}


def method_order(cycles: Sequence[dict[str, Any]], methods: Sequence[str]) -> tuple[list[str], str]:
    """`methods` by their record over past nights, the likeliest winner first: promotions
    per try with one win and one loss assumed for each (so an untried method is 50 %), then
    the cheaper one; and why, in a line."""
    record: dict[str, list[tuple[bool, float]]] = {m: [] for m in methods}
    for cycle in cycles:
        for method, outcome in tried(cycle).items():
            if method in record:
                record[method].append(outcome)

    def chance(m: str) -> float:
        wins = sum(won for won, _ in record[m])
        return (wins + 1) / (len(record[m]) + 2)

    def cost(m: str) -> float:
        seconds = [s for _, s in record[m]]
        return sum(seconds) / len(seconds) if seconds else 0.0

    order = sorted(methods, key=lambda m: (-chance(m), cost(m), methods.index(m)))
    why = "; ".join(
        f"{m} won {sum(w for w, _ in record[m])} of {len(record[m])} nights"
        + (f", {cost(m):.0f} s to train" if record[m] else "")
        for m in order
    )
    return order, f"methods in order of their record: {why}"


def nothing_new(cycles: Sequence[dict[str, Any]], now: dict[str, int]) -> str | None:
    """Why a scheduled night may stop at once: the store holds just what the last night the
    gate judged had (`now`, `learning_counts`: no episode, no correction since); None when
    there is something new."""
    last = next((c for c in cycles if c.get("status") in DECIDED), None)
    before = ((last or {}).get("result") or {}).get("seen")
    if before != now:
        return None
    return (
        f"nothing new since the last night ({now['episodes']} training episodes and "
        f"{now['corrections']} corrections, as then): nothing to learn"
    )


MIN_GRPO_STEPS = 30  # fewer teach nothing measurable (a CPU round of 37 steps lost 3 points)


def grpo_steps(
    adapters: Sequence[dict[str, Any]],
    cycles: Sequence[dict[str, Any]],
    prompts: int,
    generations: int,
    batch_size: int,
    epochs: float,
    left_s: float,
) -> tuple[int | None, str]:
    """The GRPO steps that fit the night's time left (`left_s`, less the longest gate stage
    of the last night the gate judged): all it needs (`epochs` passes over `prompts`) when
    they fit or no GRPO run was timed yet, else as many as the last run's seconds a step
    allow; None (a recorded skip) when fewer than MIN_GRPO_STEPS fit. And why, in a line."""
    needed = math.ceil(epochs * math.ceil(prompts * generations / batch_size))
    per_step = _seconds_a_step(adapters, "grpo")
    if per_step is None:
        return needed, f"GRPO: {needed} steps ({epochs:g} passes); no GRPO run timed yet"
    last = next((c for c in cycles if c.get("status") in DECIDED), {})
    stages = (last.get("result") or {}).get("stages") or []
    gate_s = max((s.get("seconds", 0) for s in stages if s["stage"].startswith("gate")), default=0)
    fit = int((left_s - gate_s) / per_step)
    cost = f"{per_step:.1f} s a step by the last GRPO run, a gate {gate_s / 60:.0f} min"
    if fit >= needed:
        return needed, f"GRPO: {needed} steps ({epochs:g} passes) fit the budget ({cost})"
    if fit < MIN_GRPO_STEPS:
        return None, (
            f"the night's budget leaves room for {max(fit, 0)} GRPO steps, fewer than "
            f"{MIN_GRPO_STEPS} ({cost}; budget_minutes)"
        )
    return fit, f"GRPO: {fit} of the {needed} steps it needs fit the budget ({cost})"


def _seconds_a_step(adapters: Sequence[dict[str, Any]], method: str) -> float | None:
    """Training seconds a step of the newest adapter trained with `method` (None: none)."""
    for adapter in reversed(adapters):
        train = (adapter.get("metrics") or {}).get("train") or {}
        if adapter.get("method") == method and train.get("loss") and train.get("train_s"):
            return float(train["train_s"]) / max(int(train["loss"][-1]["step"]), 1)
    return None
