"""The gate: candidate adapters against the current default, on the same server and items.

Gate suites are the gate splits (`dev`, or `heldout` in older suites; never `test`, which
is only reported) of the suites the training data came from, plus the frozen
`capabilities` suite. Each side answers every item as it will serve (first attempt, no
repairs; with recall when memory is on, and without, to measure what recall does; a
candidate with the current side's recall), greedily and `gate_draws` more times in the same
request (`frozen_draws` on the frozen suite, whose non-inferiority test needs more): an
item's evidence is the share of its answers that pass. The current side is measured once
per night, with memory frozen until every candidate is decided, and each candidate is
compared with that one measurement; on the frozen suite, whose items never change, once per
adapter (the application reuses another night's identical requests: `Evaluate`).

With `futility` on, a candidate is measured on a random half of the dev items first and
rejected there if its pooled pass fraction is not above the current side's: stopping only
to reject cannot make a promotion likelier, and a candidate that is truly better is rarely
behind on half the items, so a losing night costs half as much.

A candidate is promotable when the pooled dev pass fraction rises with an exact paired
sign-flip p-value below `alpha` after Holm's adjustment across the night's candidates, no
dev suite drops by more than `max_drop` significantly (Holm over the dev suites), and the
frozen suite is non-inferior (the one-sided 95 % lower bound of its difference above
`-frozen_margin`). Of the promotable ones, the largest dev plus frozen gain wins.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from reflexa.evals.builtin import BUILTIN, GENERATED, fresh_dev
from reflexa.evals.compare import compare_fractions, compare_runs
from reflexa.evals.suite import DEV, Suite, SuiteError, load_suite
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
    `run_id`, and `items` with `item_id`, `first_passed`, `final_passed`, `recalled` (the
    ids of the memories in its first answer's prompt) and `draws` (whether each of its
    `draws` extra answers, sampled in the same request, passed). An item of the frozen
    suite another night asked exactly so may be answered from that night's record."""

    def __call__(
        self,
        adapter: str | None,
        suite: Suite,
        split: str,
        memory: bool,
        gold: bool,
        draws: int,
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

    def half(self, seed: int) -> GateSuite:
        """A random half of the gate split's items, drawn by the night's `seed` (the same
        half for every candidate); a frozen suite as it is."""
        if self.frozen:
            return self
        items = [i for i in self.suite.items if i.split not in self.splits or _heads(seed, i.id)]
        return dataclasses.replace(self, suite=dataclasses.replace(self.suite, items=items))


def _heads(seed: int, key: str) -> bool:
    return hashlib.sha256(f"{seed}/{key}".encode()).digest()[0] % 2 == 0


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
    store: MemoryLedger,
    trained_suites: list[str],
    seed: int | None = None,
    exclude: Collection[str] = (),
) -> tuple[list[GateSuite], list[str]]:
    """The suites to gate on, and notes on how each training suite was used. With a
    night's `seed`, a generated built-in suite's dev split is drawn afresh (less the
    prompts in `exclude`); a suite from a file reuses its dev split, and the note says so."""
    gates, notes = [], []
    for name in trained_suites:
        if seed is not None and name in GENERATED:
            fresh = fresh_dev(name, seed, exclude)
            n = sum(i.split == DEV for i in fresh.items)
            notes.append(f"{name}: a fresh dev sample of {n} items (seed {seed})")
            gates.append(GateSuite(fresh, (DEV,), frozen=False))
            continue
        suite = _find_suite(store, name)
        if suite is None:
            notes.append(f"{name}: suite file not found; not gated on")
            continue
        if suite.gate_split is None:
            notes.append(f"{name}: no dev (or heldout) split; not gated on (test never is)")
            continue
        gates.append(GateSuite(suite, (suite.gate_split,), frozen=False))
        if seed is not None:
            notes.append(f"{name}: its fixed {suite.gate_split} split, reused every night")
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


TOLD_OFF = "served without recall as the current adapter is; not measured with it"
# gate label → item → {first_attempt, final (greedy), passes, answers (with the draws)}
Results = dict[str, dict[str, dict[str, Any]]]


@dataclass
class Measured:
    """One side's measurement on the gate suites, as it will serve: per gate suite, with
    recall or without, whichever recall's measurement chose. `memory` (per gate label: pass
    with and without recall, and whether it stays on) and the memories recall helped or
    hurt are written to the store only once the night's candidates are decided
    (`record_memory`), so no candidate's gate changes what the next one is measured with."""

    adapter: str | None
    served: Results
    runs: dict[str, dict[str, str]]
    memory: dict[str, Any] = field(default_factory=dict)
    helped: list[int] = field(default_factory=list)
    hurt: list[int] = field(default_factory=list)


async def measure(
    cycle: CycleConfig,
    evaluate: Evaluate,
    gates: list[GateSuite],
    adapter: str | None,
    side: str,
    *,
    memory: bool = True,
    gold: bool = False,
    recall: Mapping[str, bool] | None = None,
    on_progress: GateProgress | None = None,
) -> Measured:
    """`adapter` (None: the base model) on every gate suite, first attempts with their draws:
    with memory on, with its own recall (memories justified by gold only where `gold`) and
    again without, greedy answers alone, for the items whose prompt recall changed (the
    others' prompt is the same either way, so is what they measure). Where recall made a
    suite's greedy answers worse by more than `max_drop`, significantly, that suite is served
    without it, its items recall changed asked again unaided with their draws. (Draws would
    make the unaided pass about three times dearer: bench/results/gate-cost-*.json.) With
    `recall` (per gate label), each suite is served as it says instead, whatever this
    side's own measurement chose (still recorded): a candidate is judged with the current
    side's recall, so the gate compares adapters, not two recall choices chance made apart.
    A suite `recall` turns off is asked unaided only (one eval run, not three): off is taken
    as this side's own choice there, as it would serve once promoted (and stays: referee)."""
    runs: dict[str, dict[str, str]] = {}
    recalled: dict[str, list[int]] = {}  # item → memories in its prompt

    async def asked(on: list[GateSuite], recall: bool, draws: bool, only: set[str] | None,
                    mode: str) -> Results:  # fmt: skip
        """The gates' items (those in `only`, if given: gate label/split/item) answered."""
        results: Results = {}
        for gate in on:
            for split in gate.splits:
                suite = gate.suite
                if only is not None:
                    suite = dataclasses.replace(suite, items=[
                        i for i in suite.items
                        if i.split != split or f"{gate.label}/{split}/{i.id}" in only
                    ])  # fmt: skip
                    if not suite.select(split):
                        continue
                label = f"{side}{'' if recall else ' unaided'} {gate.suite.name}:{split}"
                n = (cycle.frozen_draws if gate.frozen else cycle.gate_draws) if draws else 0
                report = await evaluate(
                    adapter, suite, split, recall, gold, n,
                    on_progress and (lambda d, t, label=label: on_progress(label, d, t)),
                )  # fmt: skip
                runs.setdefault(gate.label, {})[f"{side}:{split}:{mode}"] = report["run_id"]
                for item in report["items"]:
                    key = f"{split}/{item['item_id']}"
                    draws_passed = item.get("draws") or []
                    results.setdefault(gate.label, {})[key] = {
                        "first_attempt": item["first_passed"],
                        "final": item["final_passed"],
                        "passes": item["first_passed"] + sum(draws_passed),
                        "answers": 1 + len(draws_passed),
                    }
                    if recall:
                        recalled[f"{gate.label}/{key}"] = item["recalled"]
        return results

    if not memory:
        return Measured(adapter, await asked(gates, False, True, None, "no memory"), runs)
    out = Measured(adapter, {}, runs)
    if told_off := [g for g in gates if recall is not None and recall.get(g.label) is False]:
        out.served |= await asked(told_off, False, True, None, "no memory, served")
        out.memory |= {g.label: {"recall": False, "reason": TOLD_OFF, "measured": {}}
                       for g in told_off}  # fmt: skip
        gates = [g for g in gates if g not in told_off]
    on_all = await asked(gates, True, True, None, "memory")
    shown = {k for k, ids in recalled.items() if ids}
    off_shown = await asked(gates, False, False, shown, "no memory")  # greedy answers alone
    for gate in gates:
        on = on_all.get(gate.label, {})
        off = {k: v for k, v in on.items() if f"{gate.label}/{k}" not in shown}
        off |= off_shown.get(gate.label, {})
        effect = compare_fractions(_fractions(off, greedy=True), _fractions(on, greedy=True))
        # Off only where recall's cost is beyond max_drop and significant (one-sided at
        # alpha): on a point estimate, chance alone would turn it off in many nights.
        harm = effect["p_value"] / 2 if effect["difference"] < 0 else 1.0
        keep = effect["difference"] >= -cycle.max_drop or harm >= cycle.alpha
        reason = f"greedy pass {effect['a']:.1%} without recall, {effect['b']:.1%} with it" + (
            "" if keep
            else f": recall off (it cost more than {cycle.max_drop:.0%}, p = {harm:.2g})"
        )  # fmt: skip
        out.memory[gate.label] = {"without": effect["a"], "with": effect["b"], "recall": keep,
                                  "reason": reason, "measured": effect}  # fmt: skip
        out.served[gate.label] = on
        # served unaided: its changed items asked again, with their draws
        if not (keep if recall is None else recall.get(gate.label, keep)):
            mine = {k for k in shown if k.startswith(f"{gate.label}/")}
            again = await asked([gate], False, True, mine, "no memory, served")
            out.served[gate.label] = off | again.get(gate.label, {})
        for key, result in on.items():  # items whose greedy answer recall flipped
            before = off.get(key)
            if before is not None and before["first_attempt"] != result["first_attempt"]:
                ids = recalled.get(f"{gate.label}/{key}", [])
                (out.helped if result["first_attempt"] else out.hurt).extend(ids)
    return out


def combined(a: Measured, b: Measured) -> Measured:
    """One side's measurements on two sets of gate suites, as one."""
    return Measured(a.adapter, a.served | b.served, a.runs | b.runs, a.memory | b.memory,
                    a.helped + b.helped, a.hurt + b.hurt)  # fmt: skip


def _fractions(results: dict[str, dict[str, Any]], greedy: bool = False) -> dict[str, Any]:
    """Per item (answers passed, answers); `greedy`: the greedy answer's alone."""
    if greedy:
        return {k: (int(v["first_attempt"]), 1) for k, v in results.items()}
    return {k: (int(v["passes"]), int(v["answers"])) for k, v in results.items()}


def decide(
    current: Measured, candidate: Measured, gates: list[GateSuite], cycle: CycleConfig
) -> GateResult:
    """The decision from per-item pass fractions of both sides, before any adjustment for
    the other candidates of the night (`holm`)."""
    suites = {}
    pooled_a: dict[str, dict[str, Any]] = {}
    pooled_b: dict[str, dict[str, Any]] = {}
    for gate in gates:
        a, b = current.served.get(gate.label, {}), candidate.served.get(gate.label, {})
        compared = _compared(a, b)  # per suite named current/candidate, as recorded before
        sides = {"current": compared.pop("a"), "candidate": compared.pop("b")}
        runs = current.runs.get(gate.label, {}) | candidate.runs.get(gate.label, {})
        suites[gate.label] = {"frozen": gate.frozen} | sides | compared | {"runs": runs}
        if not gate.frozen:
            pooled_a |= {f"{gate.label}/{k}": v for k, v in a.items()}
            pooled_b |= {f"{gate.label}/{k}": v for k, v in b.items()}
    dev = _compared(pooled_a, pooled_b) if pooled_a else None
    regressed = dropped({k: v for k, v in suites.items() if not v["frozen"]}, cycle)
    problems = [
        f"{k} dropped {-v['difference']:.1%} (p = {v['p_value']:.3g}; Holm over "
        f"{len(suites) - sum(v['frozen'] for v in suites.values())} dev suites)"
        for k, v in suites.items() if k in regressed
    ] + [
        f"{k} may be worse by more than {cycle.frozen_margin:.0%} ({v['difference']:+.1%}, "
        f"lower bound {v['lower_95']:+.1%})"
        for k, v in suites.items() if v["frozen"] and v["lower_95"] < -cycle.frozen_margin
    ]  # fmt: skip
    memory = {"current": current.memory, "candidate": candidate.memory}
    decision: Literal["promote", "reject"] = "reject"
    if dev is None:
        reason = "no gate split (dev or heldout) to measure the candidate on"
    elif problems:
        reason = "regression: " + "; ".join(problems)
    elif dev["difference"] <= 0 or dev["p_value"] >= cycle.alpha:
        reason = f"{_dev_line(dev)}: not a significant improvement"
    else:
        decision = "promote"
        reason = f"{_dev_line(dev)}; no suite regressed"
    return GateResult(decision, reason, dev, suites, memory)


def dropped(suites: dict[str, dict[str, Any]], cycle: CycleConfig) -> set[str]:
    """The dev suites that regressed: a drop of more than `max_drop` that is significant
    (one-sided, Holm's step-down over the dev suites at `alpha`). A point estimate would not
    do: chance alone drops a suite the candidate left as it was by more than 2 points in up
    to a fifth of nights (bench/results/gate-null-2026-12-06-4.json)."""
    worse = {k: v["p_value"] / 2 if v["difference"] < 0 else 1.0 for k, v in suites.items()}
    found: set[str] = set()
    for rank, k in enumerate(sorted(worse, key=worse.__getitem__)):
        if worse[k] >= cycle.alpha / (len(worse) - rank):
            break
        found.add(k)
    return {k for k in found if suites[k]["difference"] < -cycle.max_drop}


def _compared(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Pass fractions compared (`a`/`b` current/candidate), and the greedy answers alone."""
    fractions = compare_fractions(_fractions(a), _fractions(b))
    greedy = compare_runs(a, b)["first_attempt"]
    return {
        "items": fractions["items"],
        "a": fractions["a"],
        "b": fractions["b"],
        "difference": fractions["difference"],
        "p_value": fractions["p_value"],
        "lower_95": fractions["lower_95"],
        "answers": max((v["answers"] for v in b.values()), default=1),
        "greedy": {"a": greedy["a"], "b": greedy["b"], "p_value": greedy["p_value"]},
    }


def _dev_line(dev: dict[str, Any], adjusted: str = "") -> str:
    return (
        f"dev pass {dev['a']:.1%} → {dev['b']:.1%} over {dev['answers']} answers an item "
        f"(greedy {dev['greedy']['a']:.1%} → {dev['greedy']['b']:.1%}; "
        f"p = {dev['p_value']:.3g}{adjusted})"
    )


def holm(results: Sequence[GateResult], alpha: float) -> list[GateResult]:
    """The night's candidates decided together: Holm's step-down adjustment of their dev
    p-values (a family of K tests at `alpha`), so trying more methods does not make a
    promotion likelier by chance. A candidate whose adjusted p-value is not below `alpha`
    is rejected; with one candidate nothing changes."""
    if len(results) < 2:
        return list(results)
    p = [r.dev["p_value"] if r.dev else 1.0 for r in results]
    order = sorted(range(len(results)), key=p.__getitem__)
    adjusted = [1.0] * len(results)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(results) - rank) * p[i]))
        adjusted[i] = running
    out = []
    for r, adj in zip(results, adjusted, strict=True):
        if r.dev is None:
            out.append(r)
            continue
        dev = r.dev | {"p_holm": float(f"{adj:.3g}")}
        note = f", Holm-adjusted over {len(results)} candidates {adj:.3g}"
        if r.promotes and adj >= alpha:
            reason = f"{_dev_line(dev, note)}: not a significant improvement"
            out.append(dataclasses.replace(r, decision="reject", reason=reason, dev=dev))
        elif r.promotes:
            reason = f"{_dev_line(dev, note)}; no suite regressed"
            out.append(dataclasses.replace(r, reason=reason, dev=dev))
        else:
            out.append(dataclasses.replace(r, dev=dev))
    return out
