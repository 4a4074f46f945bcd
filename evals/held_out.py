"""What is never learnt from (trained on or recalled): the held-out items."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from reflexa.evals.builtin import held_out_items
from reflexa.evals.contamination import TRAIN_SPLIT, Guard
from reflexa.evals.suite import Suite
from reflexa.evals.verify import gold_answer


def held_out_guard(
    recorded: Iterable[tuple[str, list[Any]]] = (), extra: Iterable[Suite] = ()
) -> Guard:
    """Every non-train item of the built-in suites and of `extra`, every `recorded` (prompt,
    scoring) of a non-train split, and their canonical duplicates (see `evals.contamination`)."""
    guard = Guard()
    for prompt, gold in held_out_items():
        guard.add(prompt, gold)
    for item in (i for s in extra for i in s.items if i.split != TRAIN_SPLIT):
        guard.add(item.user_prompt, gold_answer(item.scoring_specs()))
    for prompt, scoring in recorded:
        guard.add(prompt, gold_answer(scoring))
    return guard
