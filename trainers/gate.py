"""The gate: a candidate adapter against the current default, on the same server and items.

Gate suites are the gate splits (`dev`, or `heldout` in older suites; never `test`, which
is only reported) of the suites the training data came from, plus the frozen
`capabilities` suite. Both sides answer every item once (first attempt, no repairs), as
they will serve: with their own recall when memory is on (and without, to measure what recall
does; where it hurts, it is turned off). Promote only when the pooled gate-split first-attempt
pass rises with McNemar p < alpha and no gate suite drops by more than `max_drop`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from reflexa.evals.builtin import BUILTIN
from reflexa.evals.compare import compare_runs
from reflexa.evals.suite import Suite, SuiteError, load_suite
from reflexa.trainers.cycle_config import CycleConfig
from reflexa.trainers.ports import MemoryLedger

FROZEN = "capabilities"
# (label, done, total)
GateProgress = Callable[[str, int, int], None]


class Evaluate(Protocol):
    """What the gate needs from the application, handed in by the caller: one recorded eval
    run of `suite`'s `split` on `adapter` (None: the base model), first attempts only, as it
    would serve, with recall or without (`memory`), whatever the recall policy says, and
    memories justified by gold recalled only where `gold`. Returns the run's report:
    `run_id`, and `items` with `item_id`, `first_passed`, `final_passed` and `recalled` (the
    ids of the memories in its first answer's prompt)."""

    def __call__(
        self,
        adapter: str | None,
        suite: Suite,
        split: str,
        memory: bool,
        gold: bool,
        on_progress: Callable[[int, int], None] | None,
    ) -> Awaitable[dict[str, Any]]: ...


@dataclass(frozen=True)
class GateSuite:
    suite: Suite
    splits: tuple[str, ...]  # the splits run: the gate split (all of a frozen suite)
    frozen: bool  # a capability suite (never trained on), not a held-out split

    @property
    def label(self) -> str:
        return f"{self.suite.name}:{'+'.join(self.splits)}" if not self.frozen else self.suite.name


@dataclass(frozen=True)
class GateResult:
    """What the gate decided about a candidate, and the evidence: `dev` is the pooled
    comparison on the gate splits (current `a`, candidate `b`, `difference`, `p_value`; None
    when there was none), `suites` each gate suite's, `memory` what recall did per side."""

    decision: Literal["promote", "reject"]
    reason: str
    dev: dict[str, Any] | None
    suites: dict[str, dict[str, Any]]
    memory: dict[str, Any] = field(default_factory=dict)
    current: str | None = None  # the adapter version the candidate was measured against
    notes: list[str] = field(default_factory=list)  # training suites not gated on, and why

    @property
    def promotes(self) -> bool:
        return self.decision == "promote"

    def to_dict(self) -> dict[str, Any]:
        """As recorded with the adapter and the cycle (`reflexa cycle --json`)."""
        return asdict(self)


def gate_suites(
    store: MemoryLedger, trained_suites: list[str]
) -> tuple[list[GateSuite], list[str]]:
    """The suites to gate on, and notes on training suites that could not be used."""
    gates, notes = [], []
    for name in trained_suites:
        suite = _find_suite(store, name)
        if suite is None:
            notes.append(f"{name}: suite file not found; not gated on")
            continue
        if suite.gate_split is None:
            notes.append(f"{name}: no dev (or heldout) split; not gated on (test never is)")
            continue
        gates.append(GateSuite(suite, (suite.gate_split,), frozen=False))
    frozen = BUILTIN[FROZEN]()
    gates.append(GateSuite(frozen, tuple(frozen.splits()), frozen=True))
    return gates, notes


def _find_suite(store: MemoryLedger, name: str) -> Suite | None:
    if name in BUILTIN:
        return BUILTIN[name]()
    source = store.eval_run_source(name)
    try:
        return load_suite(Path(source)) if source and Path(source).is_file() else None
    except SuiteError:
        return None


Results = dict[str, dict[str, dict[str, bool]]]  # gate label → item → first/final pass


async def run_gate(
    cycle: CycleConfig,
    store: MemoryLedger,
    evaluate: Evaluate,
    gates: list[GateSuite],
    current: str | None,
    candidate: str,
    *,
    memory: bool = True,
    gold: bool = False,
    on_progress: GateProgress | None = None,
) -> GateResult:
    """Both sides on every gate suite, first attempts, as they would serve: with memory on,
    each answers with its own recall (what it passes unaided retired for it; memories
    justified by gold only where the candidate may learn from `gold`) and again without.
    Where recall made a side's first answers worse on a suite by more than `max_drop`,
    recall is turned off for that side and suite (recorded in the store), and memories that
    hurt more often than they helped stop being recalled. The decision compares what each
    side will then serve."""
    modes = (True, False) if memory else (False,)
    served: dict[str, Results] = {}
    runs: dict[str, dict[str, str]] = {}
    effects: dict[str, dict[str, Any]] = {}
    for side, adapter in (("current", current), ("candidate", candidate)):
        measured: dict[bool, Results] = {}
        recalled: dict[str, list[int]] = {}  # item → memories in its prompt
        for recall in modes:
            results: Results = {}
            for gate in gates:
                for split in gate.splits:
                    label = f"{side}{'' if recall else ' unaided'} {gate.suite.name}:{split}"
                    report = await evaluate(
                        adapter, gate.suite, split, recall, gold,
                        on_progress and (lambda d, t, label=label: on_progress(label, d, t)),
                    )  # fmt: skip
                    mode = "memory" if recall else "no memory"
                    runs.setdefault(gate.label, {})[f"{side}:{split}:{mode}"] = report["run_id"]
                    for item in report["items"]:
                        key = f"{split}/{item['item_id']}"
                        results.setdefault(gate.label, {})[key] = {
                            "first_attempt": item["first_passed"],
                            "final": item["final_passed"],
                        }
                        if recall:
                            recalled[f"{gate.label}/{key}"] = item["recalled"]
            measured[recall] = results
        if len(modes) == 1:
            served[side] = measured[False]
            continue
        effects[side] = _memory_effect(store, adapter, gates, measured, recalled, cycle.max_drop)
        served[side] = {
            g.label: measured[effects[side][g.label]["recall"]].get(g.label, {}) for g in gates
        }
    verdict = decide(served["current"], served["candidate"], gates, runs, cycle)
    return GateResult(verdict.decision, verdict.reason, verdict.dev, verdict.suites, effects)


def _memory_effect(
    store: MemoryLedger,
    adapter: str | None,
    gates: list[GateSuite],
    measured: dict[bool, Results],
    recalled: dict[str, list[int]],
    max_drop: float,
) -> dict[str, Any]:
    """Per gate suite: first-attempt pass with and without recall, and whether recall stays
    on (recorded as the model's recall policy). Items whose result recall flipped count
    for or against the memories recalled into them."""
    out: dict[str, Any] = {}
    helped: list[int] = []
    hurt: list[int] = []
    for gate in gates:
        on, off = measured[True].get(gate.label, {}), measured[False].get(gate.label, {})
        first = compare_runs(off, on)["first_attempt"]
        keep = first["difference"] >= -max_drop
        reason = f"first-attempt pass {first['a']:.1%} without recall, {first['b']:.1%} with it" + (
            "" if keep else f": recall off (it cost more than {max_drop:.0%})"
        )
        store.set_recall_policy(adapter or "", gate.suite.name, keep, reason, first)
        out[gate.label] = {"without": first["a"], "with": first["b"], "recall": keep,
                           "reason": reason}  # fmt: skip
        for key, result in on.items():
            before = off.get(key)
            if before is not None and before["first_attempt"] != result["first_attempt"]:
                ids = recalled.get(f"{gate.label}/{key}", [])
                (helped if result["first_attempt"] else hurt).extend(ids)
    out["harmful_memories"] = store.count_recall_effect(helped, hurt)
    return out


def decide(
    current: dict[str, dict[str, dict[str, bool]]],
    candidate: dict[str, dict[str, dict[str, bool]]],
    gates: list[GateSuite],
    runs: dict[str, dict[str, str]],
    cycle: CycleConfig,
) -> GateResult:
    """The decision from per-item first-attempt results of both sides."""
    alpha, max_drop = cycle.alpha, cycle.max_drop
    suites = {}
    pooled_a: dict[str, dict[str, bool]] = {}
    pooled_b: dict[str, dict[str, bool]] = {}
    for gate in gates:
        a, b = current.get(gate.label, {}), candidate.get(gate.label, {})
        first = compare_runs(a, b)["first_attempt"]
        suites[gate.label] = {
            "frozen": gate.frozen,
            "items": len(set(a) & set(b)),
            "current": first["a"],
            "candidate": first["b"],
            "difference": first["difference"],
            "p_value": first["p_value"],
            "runs": runs.get(gate.label, {}),
        }
        if not gate.frozen:
            pooled_a |= {f"{gate.label}/{k}": v for k, v in a.items()}
            pooled_b |= {f"{gate.label}/{k}": v for k, v in b.items()}
    dev = compare_runs(pooled_a, pooled_b)["first_attempt"] if pooled_a else None
    drops = [
        f"{k} dropped {-v['difference']:.1%}"
        for k, v in suites.items()
        if v["difference"] < -max_drop
    ]
    decision: Literal["promote", "reject"] = "reject"
    if dev is None:
        reason = "no gate split (dev or heldout) to measure the candidate on"
    elif drops:
        reason = f"regression beyond {max_drop:.0%}: " + "; ".join(drops)
    elif dev["difference"] <= 0 or dev["p_value"] >= alpha:
        reason = (
            f"gate-split (dev) first-attempt pass {dev['a']:.1%} → {dev['b']:.1%} "
            f"(p = {dev['p_value']:.3g}): not a significant improvement"
        )
    else:
        decision = "promote"
        reason = (
            f"gate-split (dev) first-attempt pass {dev['a']:.1%} → {dev['b']:.1%} "
            f"(p = {dev['p_value']:.3g}); no suite dropped more than {max_drop:.0%}"
        )
    return GateResult(decision, reason, dev, suites)
