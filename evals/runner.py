"""Running a suite's items with bounded concurrency. The caller says how to solve an item
(the agent, with or without reflection); this module knows nothing of graphs or models."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from reflexa.evals.suite import SuiteItem


@dataclass(frozen=True)
class ItemOutcome:
    """One item's result. `first_passed`/`final_passed` are by the item's scoring (gold)
    where it has one, else by its visible checks; `checks_passed`: the first answer passed
    the visible checks (what the loop believed)."""

    item_id: str
    split: str
    tags: list[str]
    episode_id: str
    status: str
    first_passed: bool
    final_passed: bool
    right_to_wrong: bool
    repairs: int
    tokens: int
    latency_s: float
    error: str | None = None
    scored: bool = False
    checks_passed: bool = False
    wrong_to_right: bool = False
    # Each repair: its strategy, whether it passed the visible checks, tokens, seconds.
    repair_log: list[dict[str, Any]] = field(default_factory=list)
    final_strategy: str | None = None  # the repair whose answer was returned (None: the first)
    skipped: list[str] = field(default_factory=list)  # strategies the record ruled out
    recalled: list[int] = field(default_factory=list)  # memories in its first answer's prompt
    draws: list[bool] = field(default_factory=list)  # more answers to its first prompt: passed?

    @property
    def pass_fraction(self) -> float:
        """The share of its first answer and its draws that passed: an item's evidence."""
        return (self.first_passed + sum(self.draws)) / (1 + len(self.draws))

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


SolveFn = Callable[[SuiteItem], Awaitable[ItemOutcome]]


async def run_items(
    items: Sequence[SuiteItem],
    solve: SolveFn,
    concurrency: int = 8,
    on_done: Callable[[ItemOutcome], None] | None = None,
) -> list[ItemOutcome]:
    """Every item's outcome, in the items' order; at most `concurrency` at once. The first
    item that raises stops the rest (cancelled, not left running) and is raised."""
    gate = asyncio.Semaphore(concurrency)

    async def one(item: SuiteItem) -> ItemOutcome:
        async with gate:
            outcome = await solve(item)
        if on_done is not None:
            on_done(outcome)
        return outcome

    tasks = [asyncio.ensure_future(one(item)) for item in items]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:  # one failed (or we were cancelled): the others stop too
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
