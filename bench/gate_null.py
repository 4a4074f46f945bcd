"""The gate's false-promotion rate: how often it would promote a candidate that is the
current adapter again, simulated from real per-item results.

For each night of a nights-bench run whose gate measured the current adapter, every gate
item's pass probability is taken from the current side's real answers (the greedy one and
the draws, with recall and without; `plug-in`: passes / answers, `smoothed`: (passes + 1/2)
/ (answers + 1), which leaves no item certain). A simulated night draws the current side's
answers and those of K candidates from those same probabilities and runs the gate's own
code on them (the night's `Referee`: the current side measured once, each candidate judged
with futility's half-way stop and the frozen suite only where the dev splits would promote,
`holm` across them), with the default cycle settings: any promotion is a false one. Writes
bench/results/gate-null-DATE.json.

    .venv/bin/python -m bench.gate_null .bench-work/nights-XXXX [--trials 1000] [--candidates 1 2 4]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.record import write_result
from reflexa.agent.app.eval_run import scored
from reflexa.agent.settings import Settings
from reflexa.agent.store import Store
from reflexa.evals.compare import compare_fractions
from reflexa.evals.metrics import wilson
from reflexa.evals.suite import Suite, SuiteItem
from reflexa.trainers.cycle_config import CycleConfig
from reflexa.trainers.gate import FROZEN, GateSuite, holm, measure
from reflexa.trainers.referee import Candidate, Referee

# label → mode ("memory" / "no memory") → item key "split/id" → (passes, answers, recalled)
Observed = dict[str, dict[str, dict[str, tuple[int, int, list[int]]]]]


def gate_of(home: Path, printed: dict[str, Any] | None) -> dict[str, Any] | None:
    """The gate's whole record (its suites, with the runs of each side) of the cycle whose
    `reflexa cycle --json` output is `printed`, from the home's store; None where the night
    was not gated."""
    cycle_id = (printed or {}).get("cycle_id")
    with Store.open(Settings(home=home).database) as store:
        cycle = next((c for c in store.cycles(limit=1000) if c["id"] == cycle_id), {})
    gate = (cycle.get("result") or {}).get("gate") or {}
    return gate if gate.get("suites") else None


def observed(home: Path, gate: dict[str, Any]) -> Observed:
    """The current side's real answers per gate item, from its eval runs' episodes: the
    greedy answer's pass (by scoring, as the gate judged it), its draws', and the memories
    recalled into its prompt."""
    out: Observed = {}
    with Store.open(Settings(home=home).database) as store:
        for label, suite in gate["suites"].items():
            for run, run_id in suite["runs"].items():
                side, split, mode = run.split(":")
                if side != "current":
                    continue
                for episode in store.run_episodes(run_id):
                    draws = [bool(d["passed"]) for d in episode.get("draws") or []]
                    first = episode["attempts"][0] if episode.get("attempts") else {}
                    recalled = [m["id"] for m in (first.get("memory") or {}).get("used", [])]
                    passes = scored(episode)[0] + sum(draws)
                    key = f"{split}/{episode['item_id']}"
                    out.setdefault(label, {}).setdefault(mode, {})[key] = (
                        passes,
                        1 + len(draws),
                        recalled,
                    )
    return out


def base(modes: dict[str, Any]) -> dict[str, tuple[int, int, list[int]]]:
    """The pass every item had: with recall, where memory was on (a suite whose recall was
    off before the night is asked unaided only)."""
    return modes.get("memory") or modes.get("no memory") or modes["no memory, served"]


def gates_of(gate: dict[str, Any], seen: Observed) -> list[GateSuite]:
    """The night's gate suites, with just the items' ids and splits (all the gate reads)."""
    gates = []
    for label, suite in gate["suites"].items():
        keys = list(base(seen[label]))
        items = [SuiteItem(id=k.split("/", 1)[1], prompt="-", split=k.split("/")[0]) for k in keys]
        splits = tuple(dict.fromkeys(i.split for i in items))
        gates.append(GateSuite(Suite(label.split(":")[0], items, "simulated"), splits,
                               frozen=suite["frozen"]))  # fmt: skip
    return gates


def simulated(
    seen: Observed,
    smooth: bool,
    rng: random.Random,
    lift: float = 0.0,
    lifted: str | None = None,
) -> Callable[..., Any]:
    """An `Evaluate` that answers each item from its observed pass probability; a candidate
    (an adapter named c0, c1, …) with `lift`, the share of its failing answers it turns
    right on the dev splits (0: the current adapter again), or on suite `lifted`'s alone."""
    by_name = {label.split(":")[0]: modes for label, modes in seen.items()}

    async def evaluate(adapter: Any, suite: Suite, split: str, memory: bool, gold: bool,
                       draws: int, on_progress: Any) -> dict[str, Any]:  # fmt: skip
        modes = by_name[suite.name]
        items = []
        for item in suite.select(split):
            key = f"{split}/{item.id}"
            passes, answers, recalled = base(modes)[key]
            if not memory and key in modes.get("no memory", {}):
                passes, answers, _ = modes["no memory"][key]
            p = chance(passes, answers, smooth)
            better = suite.name != FROZEN and lifted in (None, suite.name)
            if str(adapter).startswith("c") and better:
                p += lift * (1 - p)
            drawn = [rng.random() < p for _ in range(1 + draws)]  # as many as the gate asks
            items.append({"item_id": item.id, "first_passed": drawn[0], "final_passed": drawn[0],
                          "recalled": recalled if memory else [], "draws": drawn[1:]})  # fmt: skip
        return {"run_id": "simulated", "items": items}

    return evaluate


def chance(passes: int, answers: int, smooth: bool) -> float:
    """An item's pass probability from its observed answers, `plug-in` or `smoothed`."""
    return (passes + 0.5) / (answers + 1) if smooth else passes / answers


def promotions(seen: Observed, gates: list[GateSuite], k: int, trials: int,
                     smooth: bool, seed: int, lift: float = 0.0, lifted: str | None = None,
                     **settings: Any) -> dict[str, Any]:  # fmt: skip
    """How often a night with `k` candidates promotes one: with `lift` 0 a false promotion,
    else the gate's power to find that lift; and how often the frozen suite's
    non-inferiority test rejected one (on it the candidates are the current one again).
    `settings`: `[cycle]` settings other than the defaults."""
    memory = any("memory" in modes for modes in seen.values())
    ws = dataclasses.replace(Settings().workspace(), memory=memory)  # as a scheduled night
    ws = ws.with_cycle(**settings)
    cycle = ws.cycle
    evaluate = simulated(seen, smooth, random.Random(seed), lift, lifted)

    frozen_rejected = 0

    def night(n: int) -> bool:
        nonlocal frozen_rejected
        referee = Referee(ws, f"simulated-{n}", lambda: None, lambda *_: evaluate, None, None)  # type: ignore[type-var]
        referee.seed = seed * trials + n  # each night draws its own half for futility

        def candidate(name: str) -> Candidate:
            return lambda on, recall: asyncio.run(
                measure(cycle, evaluate, on, name, "candidate", memory=memory, recall=recall)
            )

        judged = [referee.judge(gates, False, candidate(f"c{i}"))[0] for i in range(k)]
        frozen_rejected += any(f"{FROZEN} may be worse" in r.reason for r in judged)
        return any(r.promotes for r in holm(judged, cycle.alpha))

    promoted = sum(night(n) for n in range(trials))
    return {"candidates": k, "trials": trials, "promoted": promoted,
            "rate": promoted / trials, "upper_95": round(wilson(promoted, trials)[1], 4),
            "frozen_rejected": frozen_rejected / trials}  # fmt: skip


def simulate(home: Path, gate: dict[str, Any], candidates: list[int], trials: int,
             seed: int, lifts: Sequence[float] = (),
             lifted: Sequence[str | None] = (None,)) -> dict[str, Any]:  # fmt: skip
    """A night's gate (`gate`, as its cycle recorded it) replayed `trials` times with each
    number of candidates, both ways of estimating the items' pass probabilities; and, for
    each of `lifts` on each of `lifted` (a suite, or None: every dev suite), one better
    candidate's chance of promotion as the defaults judge it, without futility, and with
    the frozen suite's answers as many as the dev splits'."""
    seen = observed(home, gate)
    gates = gates_of(gate, seen)
    rates = {
        way: [promotions(seen, gates, k, trials, way == "smoothed", seed) for k in candidates]
        for way in ("plug-in", "smoothed")
    }
    variants: dict[str, dict[str, Any]] = {
        "defaults": {},
        "no futility": {"futility": False},
        "frozen_draws = gate_draws": {"frozen_draws": CycleConfig().gate_draws},
    }
    power = {
        f"{lift} on {suite or 'every dev suite'}, {way}": {
            name: promotions(
                seen, gates, 1, trials, way == "smoothed", seed, lift, suite, **changes
            )
            for name, changes in variants.items()
        }
        for lift in lifts
        for suite in lifted
        for way in ("plug-in", "smoothed")
    }
    items = {label: len(base(modes)) for label, modes in seen.items()}
    return {"current": gate.get("current"), "items": items, "false_promotion": rates,
            "power": power, "chance_drops": chance_drops(seen, trials, seed)}  # fmt: skip


def chance_drops(seen: Observed, trials: int, seed: int) -> dict[str, dict[str, float]]:
    """Per dev suite, how often two draws of the same side's answers (the greedy one and
    `gate_draws` more) differ by a drop of more than `max_drop`: what a point-estimate rule
    would call a regression of a suite the candidate left as it was."""
    cycle, rng = CycleConfig(), random.Random(seed)
    out: dict[str, dict[str, float]] = {}
    for label, modes in seen.items():
        if label.split(":")[0] == FROZEN:
            continue
        for way in ("plug-in", "smoothed"):
            ps = [chance(p, n, way == "smoothed") for p, n, _ in base(modes).values()]
            m = cycle.gate_draws + 1
            drops = sum(
                compare_fractions(_drawn(ps, m, rng), _drawn(ps, m, rng))["difference"]
                < -cycle.max_drop
                for _ in range(trials)
            )
            out.setdefault(label, {})[way] = drops / trials
    return out


def _drawn(ps: list[float], m: int, rng: random.Random) -> dict[str, tuple[int, int]]:
    """Each item's (answers passed, `m`) drawn from its pass probability."""
    return {str(i): (sum(rng.random() < p for _ in range(m)), m) for i, p in enumerate(ps)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="A nights-bench run folder.")
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--candidates", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--lift", type=float, nargs="*", default=[],
        help="Also a better candidate's chance of promotion, with futility and without: it "
        "turns this share of the failing dev answers right.",
    )  # fmt: skip
    parser.add_argument(
        "--lift-suite", nargs="*", default=[],
        help="Suites (by name) the better candidate is better on alone, each in turn, besides "
        "every dev suite at once.",
    )  # fmt: skip
    args = parser.parse_args()
    state = json.loads((args.run / "state.json").read_text())
    nights = []
    for key, done in sorted(state["done"].items()):
        gate = gate_of(args.run / "home", done["result"]) if key.startswith("night ") else None
        if gate is None:
            continue
        night = simulate(args.run / "home", gate, args.candidates, args.trials, args.seed,
                         args.lift, [None, *args.lift_suite])  # fmt: skip
        nights.append({"night": int(key.split()[1])} | night)
        for way, rows in night["false_promotion"].items():
            for r in rows:
                print(
                    f"{key}, {way}, {r['candidates']} candidate(s): {r['promoted']} of "
                    f"{r['trials']} promoted ({r['rate']:.1%}, upper 95 % {r['upper_95']:.1%})"
                )
        for label, ways in night["chance_drops"].items():
            print(f"{key}, {label} unchanged, dropped more than max_drop by chance: " + ", ".join(
                f"{rate:.1%} ({way})" for way, rate in ways.items()))  # fmt: skip
        for lift, variants in night["power"].items():
            print(f"{key}, a candidate with lift {lift}: promoted " + ", ".join(
                f"{r['rate']:.1%} ({r['frozen_rejected']:.1%} by the frozen suite) with {name}"
                for name, r in variants.items()))  # fmt: skip
    if not nights:
        sys.exit(f"gate_null: no night in {args.run} has a gate's measurement yet")
    doc = {"run": str(args.run), "args": {k: v for k, v in vars(args).items() if k != "run"},
           "config": CycleConfig().model_dump(include={"alpha", "max_drop", "frozen_margin",
                                                       "gate_draws", "frozen_draws",
                                                       "futility"}),
           "nights": nights}  # fmt: skip
    print(f"written to {write_result('gate-null', doc)}")


if __name__ == "__main__":
    main()
