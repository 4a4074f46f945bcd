"""The built-in suites, by name."""

import functools
from collections.abc import Callable

from reflexa.evals.builtin.arithmetic import arithmetic, sums
from reflexa.evals.builtin.capabilities import capabilities
from reflexa.evals.builtin.humaneval import humaneval
from reflexa.evals.builtin.json_extract import json_extract
from reflexa.evals.suite import Suite
from reflexa.evals.verify import gold_answer

BUILTIN: dict[str, Callable[[], Suite]] = {
    "arithmetic": arithmetic,
    "sums": sums,
    "json-extract": json_extract,
    "humaneval": humaneval,
    "capabilities": capabilities,
}


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
