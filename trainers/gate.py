"""The gate: a candidate adapter against the current default, on the same server and items.

Gate suites are the gate splits (`dev`, or `heldout` in older suites; never `test`, which
is only reported) of the suites the training data came from, plus the frozen
`capabilities` suite. Both sides answer every item once (first attempt, no repairs).
Promote only when the pooled held-out first-attempt pass rises with McNemar p < alpha and no
gate suite drops by more than `max_drop`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.episodes import open_agent
from agent.evaluation import EvalOptions, run_eval
from agent.model_client import ModelClient
from agent.settings import Settings
from agent.store import Store
from evals.builtin import BUILTIN
from evals.compare import compare_runs
from evals.suite import Suite, SuiteError, load_suite

FROZEN = "capabilities"
# (label, done, total)
GateProgress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class GateSuite:
    suite: Suite
    splits: tuple[str, ...]  # the splits run: the gate split (all of a frozen suite)
    frozen: bool  # a capability suite (never trained on), not a held-out split

    @property
    def label(self) -> str:
        return f"{self.suite.name}:{'+'.join(self.splits)}" if not self.frozen else self.suite.name


def gate_suites(store: Store, trained_suites: list[str]) -> tuple[list[GateSuite], list[str]]:
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


def _find_suite(store: Store, name: str) -> Suite | None:
    if name in BUILTIN:
        return BUILTIN[name]()
    source = store.eval_run_source(name)
    try:
        return load_suite(Path(source)) if source and Path(source).is_file() else None
    except SuiteError:
        return None


async def run_gate(
    settings: Settings,
    client: ModelClient,
    gates: list[GateSuite],
    current: str | None,
    candidate: str,
    on_progress: GateProgress | None = None,
) -> dict[str, Any]:
    """Both sides on every gate suite; per-suite figures, the pooled held-out test, and the
    decision with its reason."""
    per_side: dict[str | None, dict[str, dict[str, dict[str, bool]]]] = {}
    runs: dict[str, dict[str, str]] = {}
    for side, adapter in (("current", current), ("candidate", candidate)):
        async with open_agent(settings, client, adapter) as agent:
            results: dict[str, dict[str, dict[str, bool]]] = {}
            for gate in gates:
                for split in gate.splits:
                    label = f"{side} {gate.suite.name}:{split}"
                    options = EvalOptions(
                        split=split,
                        reflect=False,
                        adapter=adapter,
                        concurrency=settings.cycle.concurrency,
                        memory=False,  # the gate compares models, not recalled examples
                    )
                    report = await run_eval(
                        agent,
                        gate.suite,
                        options,
                        on_progress and (lambda d, t, label=label: on_progress(label, d, t)),
                    )
                    runs.setdefault(gate.label, {})[f"{side}:{split}"] = report["run_id"]
                    for item in report["items"]:
                        results.setdefault(gate.label, {})[f"{split}/{item['item_id']}"] = {
                            "first_attempt": item["first_passed"],
                            "final": item["final_passed"],
                        }
            per_side[side] = results
    return decide(per_side["current"], per_side["candidate"], gates, runs, settings)


def decide(
    current: dict[str, dict[str, dict[str, bool]]],
    candidate: dict[str, dict[str, dict[str, bool]]],
    gates: list[GateSuite],
    runs: dict[str, dict[str, str]],
    settings: Settings,
) -> dict[str, Any]:
    """The decision from per-item first-attempt results of both sides."""
    alpha, max_drop = settings.cycle.alpha, settings.cycle.max_drop
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
    held = compare_runs(pooled_a, pooled_b)["first_attempt"] if pooled_a else None
    drops = [
        f"{k} dropped {-v['difference']:.1%}"
        for k, v in suites.items()
        if v["difference"] < -max_drop
    ]
    if held is None:
        decision, reason = "reject", "no held-out suite to measure the candidate on"
    elif drops:
        decision, reason = "reject", f"regression beyond {max_drop:.0%}: " + "; ".join(drops)
    elif held["difference"] <= 0 or held["p_value"] >= alpha:
        decision = "reject"
        reason = (
            f"held-out first-attempt pass {held['a']:.1%} → {held['b']:.1%} "
            f"(p = {held['p_value']:.3g}): not a significant improvement"
        )
    else:
        decision = "promote"
        reason = (
            f"held-out first-attempt pass {held['a']:.1%} → {held['b']:.1%} "
            f"(p = {held['p_value']:.3g}); no suite dropped more than {max_drop:.0%}"
        )
    return {"decision": decision, "reason": reason, "heldout": held, "suites": suites}
