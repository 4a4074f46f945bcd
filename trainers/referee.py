"""The night's referee: the gate suites a night's candidates are judged on and its one
measurement of the current adapter on them; and, once the night is decided, what the
gate learnt about recall, written for the adapters that will serve."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from reflexa.evals.contamination import TRAIN_SPLIT
from reflexa.trainers.gate import (
    Evaluate,
    GateResult,
    GateSuite,
    Measured,
    combined,
    decide,
    gate_suites,
    measure,
)
from reflexa.trainers.ports import MemoryLedger, ModelServer, TrainerStore
from reflexa.trainers.registry import check_adapter, load
from reflexa.trainers.workspace import Workspace

# (what, done, total): progress of the stage under way
Progress = Callable[[str, int, int], None]
# The application's model server, connected when a stage first needs it, and the gate's eval
# runs on that server for one cycle (`gate.Evaluate`; the cycle's id keeps its runs apart
# from any other's, so a taken-up cycle resumes its own), also from the application.
Server = TypeVar("Server", bound=ModelServer)
Connect = Callable[[], Server]
Evaluator = Callable[[Server, str], Evaluate]
ServerT_co = TypeVar("ServerT_co", bound=ModelServer, covariant=True)
# A candidate measured on gate suites, each served with recall or not as the mapping (gate
# label → recall on) says: the current side's recall (`measure`'s `recall`).
Candidate = Callable[[list[GateSuite], dict[str, bool]], Measured]
KEPT = "off since an earlier night: "  # the reason of a recall policy carried forward


class Side(Protocol[ServerT_co]):
    """A server of its own for one adapter at a time, where the application has one (its
    merged server): (served name, adapter folder) → a server answering as that name with
    those weights; `stop` stops it (it starts again when next asked)."""

    def __call__(self, name: str, adapter: Path) -> ServerT_co: ...
    def stop(self) -> None: ...


class Referee(Generic[Server]):
    """The night's gate suites (generated ones with a dev sample drawn for the night, less
    what the loop may have learnt from) and its one measurement of the current adapter on
    each (per gold policy), taken before any candidate's (the cycle asks for it first):
    every candidate is compared with that one. Each side is measured on `side`'s server
    where there is one, else through the application's."""

    def __init__(self, ws: Workspace, cycle_id: str, connect: Connect[Server],
                 evaluator: Evaluator[Server], current: dict[str, Any] | None,
                 on_progress: Progress | None,
                 side: Side[Server] | None = None) -> None:  # fmt: skip
        self.ws, self.cycle_id, self.connect, self.evaluator = ws, cycle_id, connect, evaluator
        self.current, self.on_progress, self.side = current, on_progress, side
        self.measured: dict[bool, tuple[list[GateSuite], Measured]] = {}  # by gold policy
        self.seed: int | None = None
        self.learnt: set[str] = set()
        self.off: dict[str, dict[str, Any]] = {}  # suite → the current's recorded policy

    def gates(
        self, store: TrainerStore, cycle_id: str, suites: list[str]
    ) -> tuple[list[GateSuite], list[str]]:
        if self.seed is None:
            self.seed = int(cycle_id[:8], 16)
            self.learnt = {e.prompt for e in store.training_episodes(TRAIN_SPLIT)}
            model = (self.current or {}).get("name") or ""
            self.off = {p["suite"]: p for p in store.recall_policies(model) if not p["recall"]}
        return gate_suites(store, suites, self.seed, self.learnt)

    def __call__(self, gates: list[GateSuite], gold: bool) -> Measured:
        """The current adapter on `gates`: those not measured yet tonight are, now. A suite
        an earlier night turned recall off for it stays off, unaided only: a night's test
        has little power (95 items, greedy), and re-deciding it each night flipped it back
        on where it had cost 8 points (arithmetic), hiding the candidate's gain under it."""
        done, before = self.measured.get(gold, ([], None))
        new = [g for g in gates if g.label not in {d.label for d in done}]
        if new or before is None:
            client, name = self.serve(self.current)
            off = self.off if self.ws.memory else {}
            kept = {g.label: off[g.suite.name] for g in new if g.suite.name in off}
            now = asyncio.run(
                measure(self.ws.cycle, self.evaluator(client, self.cycle_id), new, name, "current",
                        memory=self.ws.memory, gold=gold, on_progress=self.on_progress,
                        recall=dict.fromkeys(kept, False) or None)
            )  # fmt: skip
            for label, policy in kept.items():  # the measurement that turned it off, kept
                reason = policy["reason"].removeprefix(KEPT)
                now.memory[label] = {"recall": False, "reason": KEPT + reason,
                                     "measured": policy["measured"] or {}}  # fmt: skip
            self.measured[gold] = done + new, now if before is None else combined(before, now)
        return self.measured[gold][1]

    def serve(self, row: dict[str, Any] | None) -> tuple[Server, str | None]:
        """Where an adapter (`row`; None: the base model) answers, and as what name."""
        if row is None:
            return self.connect(), None
        if self.side is not None:
            return self.side(row["name"], check_adapter(row, self.ws)), row["name"]
        client = self.connect()
        return client, load(self.ws, client, row)

    def release(self) -> None:
        """Stop the side's server, if there is one, so training has its memory."""
        if self.side is not None:
            self.side.stop()

    def judge(
        self, gates: list[GateSuite], gold: bool, candidate: Candidate
    ) -> tuple[GateResult, Measured, list[GateSuite]]:
        """A candidate against the current adapter, each suite served with the current
        side's recall: on the dev splits first, and on the frozen suite only if those would
        promote it (a rejected candidate is not measured there). Returns the decision, the
        candidate's measurement and the gate suites it was judged on. (Served with its own
        recall, a candidate no better than the current one was promoted in 8 % of nights
        replayed from night 2's answers, where recall cost sums and arithmetic 7-36 points
        and the two sides' choices fell apart by chance: `bench/gate_null.py`.)"""
        dev = [g for g in gates if not g.frozen]
        frozen = [g for g in gates if g.frozen]
        current = self(dev, gold)  # the first time: before any candidate's
        as_current = functools.partial(_as_served, candidate, current)
        if self.ws.cycle.futility:
            half = [g.half(self.seed or 0) for g in dev]
            early, measured = self._futile(current, half, as_current)
            if early is not None:
                return early, measured, half
        measured = as_current(dev)  # the half measured already is not asked again
        verdict = decide(current, measured, dev, self.ws.cycle)
        if not frozen:
            return verdict, measured, dev
        if not verdict.promotes:
            note = ", ".join(g.label for g in frozen) + ": not measured, as the dev splits reject"
            return dataclasses.replace(verdict, notes=[note]), measured, dev
        current = self(gates, gold)
        measured = combined(measured, _as_served(candidate, current, frozen))
        return decide(current, measured, gates, self.ws.cycle), measured, gates

    def _futile(
        self,
        current: Measured,
        half: list[GateSuite],
        candidate: Callable[[list[GateSuite]], Measured],
    ) -> tuple[GateResult | None, Measured]:
        """The candidate on half the dev items: a rejection if it is not ahead there."""
        measured = candidate(half)
        verdict = decide(current, measured, half, self.ws.cycle)
        dev = verdict.dev
        if dev is None or dev["difference"] > 0:
            return None, measured
        reason = (
            f"futile: on a random half of the dev items ({dev['items']}) the candidate was not "
            f"ahead (pass {dev['a']:.1%} → {dev['b']:.1%}); the other half and the frozen "
            "suite were not measured"
        )
        return dataclasses.replace(verdict, decision="reject", reason=reason), measured


def _as_served(candidate: Candidate, current: Measured, gates: list[GateSuite]) -> Measured:
    """The candidate on `gates`, each served with recall where the current side is."""
    return candidate(gates, {label: m["recall"] for label, m in current.memory.items()})


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


def record_memory(store: MemoryLedger, side: Measured, gates: list[GateSuite]) -> int:
    """Write what recall did for `side`: its recall policy per suite, and the memories it
    helped or hurt (those that hurt more often than they helped stop being recalled).
    Returns how many became harmful."""
    for gate in gates:
        effect = side.memory.get(gate.label)
        if effect is not None:
            store.set_recall_policy(side.adapter or "", gate.suite.name, effect["recall"],
                                    effect["reason"], effect["measured"])  # fmt: skip
    return store.count_recall_effect(side.helped, side.hurt) if side.memory else 0
