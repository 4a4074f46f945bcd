"""The night's referee: the gate suites a night's candidates are judged on and its one
measurement of the current adapter on them; and, once the night is decided, what the
gate learnt about recall, written for the adapters that will serve."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from reflexa.evals.contamination import TRAIN_SPLIT
from reflexa.trainers.gate import Evaluate, GateSuite, Measured, gate_suites, measure, record_memory
from reflexa.trainers.ports import ModelServer, TrainerStore
from reflexa.trainers.registry import load
from reflexa.trainers.workspace import Workspace

# (what, done, total): progress of the stage under way
Progress = Callable[[str, int, int], None]
# The application's model server, connected when a stage first needs it, and the gate's eval
# runs on that server (see `gate.Evaluate`), also from the application.
Server = TypeVar("Server", bound=ModelServer)
Connect = Callable[[], Server]
Evaluator = Callable[[Server], Evaluate]


class Referee:
    """The night's gate suites (generated ones with a dev sample drawn for the night, less
    what the loop may have learnt from) and its one measurement of the current adapter on
    them (per gold policy), taken before any candidate's: every candidate is compared with
    it."""

    def __init__(self, ws: Workspace, connect: Connect[Server], evaluator: Evaluator[Server],
                 current: dict[str, Any] | None, on_progress: Progress | None) -> None:  # fmt: skip
        self.ws, self.connect, self.evaluator = ws, connect, evaluator
        self.current, self.on_progress = current, on_progress
        self.measured: dict[tuple[tuple[str, ...], bool], tuple[list[GateSuite], Measured]] = {}
        self.seed: int | None = None
        self.learnt: set[str] = set()

    def gates(
        self, store: TrainerStore, cycle_id: str, suites: list[str]
    ) -> tuple[list[GateSuite], list[str]]:
        if self.seed is None:
            self.seed = int(cycle_id[:8], 16)
            self.learnt = {e.prompt for e in store.training_episodes(TRAIN_SPLIT)}
        return gate_suites(store, suites, self.seed, self.learnt)

    def __call__(self, gates: list[GateSuite], gold: bool) -> Measured:
        key = (tuple(g.label for g in gates), gold)
        if key not in self.measured:
            client = self.connect()
            name = load(self.ws, client, self.current) if self.current else None
            self.measured[key] = gates, asyncio.run(
                measure(self.ws.cycle, self.evaluator(client), gates, name, "current",
                        memory=self.ws.memory, gold=gold, on_progress=self.on_progress)
            )  # fmt: skip
        return self.measured[key][1]


def settle_memory(
    store: TrainerStore,
    referee: Referee,
    tried: list[tuple[str, Measured | None, list[GateSuite]]],
    best: str | None,
) -> None:
    """Memory was frozen while the candidates were gated: now what recall did is written
    for the current adapter and for the one promoted, and the memories retired for a
    candidate that will not serve are active again."""
    for gates, measured in referee.measured.values():
        record_memory(store, measured, gates)
    for name, side, gates in tried:  # each candidate's served name, as gated
        if name == best and side is not None:
            record_memory(store, side, gates)
        elif name != best:
            store.restore_memories(name)
