"""The built-in suites, by name."""

import functools
from collections.abc import Callable, Collection

from reflexa.evals.builtin.arithmetic import arithmetic, sums
from reflexa.evals.builtin.capabilities import capabilities
from reflexa.evals.builtin.humaneval import humaneval
from reflexa.evals.builtin.json_extract import json_extract
from reflexa.evals.suite import DEV, Suite
from reflexa.evals.verify import gold_answer

BUILTIN: dict[str, Callable[[], Suite]] = {
    "arithmetic": arithmetic,
    "sums": sums,
    "json-extract": json_extract,
    "humaneval": humaneval,
    "capabilities": capabilities,
}
# The suites generated from a seed: a gate may draw a fresh dev sample of them each night.
GENERATED: dict[str, Callable[[int], Suite]] = {
    "arithmetic": lambda seed: arithmetic(seed),
    "sums": sums,
    "json-extract": json_extract,
}


def fresh_dev(name: str, seed: int, exclude: Collection[str] = ()) -> Suite:
    """Built-in suite `name` with its dev split drawn afresh from `seed` (a night's), less
    any question of its other splits or in `exclude` (what the loop may have learnt from):
    a gate that decides on one fixed dev sample night after night ends up fitted to it."""
    suite = BUILTIN[name]()
    kept = [i for i in suite.items if i.split != DEV]
    taken = {i.user_prompt for i in kept} | set(exclude)
    drawn = [i for i in GENERATED[name](seed).items if i.split == DEV]
    dev = [
        item.model_copy(update={"id": f"dev{seed}-{n:03d}"})
        for n, item in enumerate(i for i in drawn if i.user_prompt not in taken)
    ]
    return Suite(suite.name, [*kept, *dev], suite.source, suite.description, suite.allow_gold)


@functools.cache
def held_out_items() -> tuple[tuple[str, str | None], ...]:
    """(prompt, gold answer) of every non-train item of every built-in suite, built once
    per process: the contamination guard needs them for each agent it opens."""
    return tuple(
        (i.user_prompt, gold_answer(i.scoring_specs()))
        for factory in BUILTIN.values()
        for i in factory().items
        if i.split != "train"
    )


@functools.cache
def all_prompts() -> tuple[str, ...]:
    """Every built-in item's prompt, built once per process."""
    return tuple(i.user_prompt for factory in BUILTIN.values() for i in factory().items)
