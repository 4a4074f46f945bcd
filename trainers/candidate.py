"""One candidate of a night: trained (or blended) and gated against the current adapter.

Before the gate measures a candidate, the memories it passes unaided are retired for it, so
the gate measures the memory it would serve with.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

from reflexa.evals.contamination import Guard
from reflexa.trainers.blend import blend_adapter
from reflexa.trainers.config import TrainConfig
from reflexa.trainers.gate import GateResult, GateSuite, Measured, measure
from reflexa.trainers.methods import holds_gold, parse_method
from reflexa.trainers.ports import TrainerStore
from reflexa.trainers.referee import Progress, Referee, Server
from reflexa.trainers.retire import retire_passed
from reflexa.trainers.stages import Stages, compile_and_train, trained_before
from reflexa.trainers.workspace import Workspace


@dataclass
class Gated:
    method: str
    adapter: dict[str, Any]
    name: str  # as the server knows it
    gate: GateResult
    compiled: dict[str, Any]
    measured: Measured | None = None
    gates: list[GateSuite] = dataclasses.field(default_factory=list)
    suites: list[str] = dataclasses.field(default_factory=list)  # its rows came from these

    @property
    def gain(self) -> float:
        """What the gate saw it gain over the current side: the dev pass fraction's rise plus
        the frozen suite's, so of two that pass, the one that forgets less can win (measured:
        with rehearsal, dev +6.3 and frozen +5.3 points; without, +8.3 and -1.3)."""
        frozen = sum(v["difference"] for v in self.gate.suites.values() if v.get("frozen"))
        return (self.gate.dev or {}).get("difference", 0.0) + frozen

    def summary(self) -> dict[str, Any]:
        return {"adapter": self.adapter["version"], "decision": self.gate.decision,
                "gate_split": (self.gate.dev or {}).get("b"),
                "suites": {k: v["difference"] for k, v in self.gate.suites.items()},
                "examples": self.compiled.get("examples"),
                "train_s": self.adapter["metrics"]["train"]["train_s"]}  # fmt: skip


def candidate(
    ws: Workspace,
    store: TrainerStore,
    stage: Stages,
    referee: Referee[Server],
    method: str,
    config: TrainConfig,
    named: bool,
    protected: Guard,
    current: dict[str, Any] | None,
    mixed: set[str] | None,
    on_progress: Progress | None,
) -> Gated:
    """Compile, train and gate one method's candidate (stages named after the method when
    several are tried). `mixed`: the sampled prompts whose answers disagreed, where GRPO
    trains (a group whose answers all earn the same reward has no advantage to learn)."""
    recipe = parse_method(method)
    allow_gold = ws.cycle.allow_gold and recipe.recipe != "sft-label-free"
    config = config.replace(**recipe.training())  # the method's own settings
    suffix = f" {method}" if named else ""
    kept = trained_before(store, stage, suffix)
    if kept is not None:
        summary, suites, continued, row = kept
        stage.log(f"cycle: {row['version']} ({method}) was trained before the stop: gated as it is")
    else:
        summary, suites, continued, row = compile_and_train(
            ws, store, stage, recipe, config, suffix, protected, current, mixed, allow_gold
        )
    record = {"data": summary, "continued": continued,
              "holds_gold": continued and holds_gold(current)}  # fmt: skip
    return gated(ws, store, stage, referee, method, row, suffix, suites, allow_gold, record,
                 on_progress)  # fmt: skip


def blended(
    ws: Workspace,
    store: TrainerStore,
    stage: Stages,
    referee: Referee[Server],
    forgetful: Gated,
    on_progress: Progress | None,
) -> Gated:
    """`forgetful` pulled back toward the current adapter by `[cycle] blend` (trainers/blend.py),
    gated on the suites it was; a taken-up night gates the blend it made before the stop."""
    weight, current = ws.cycle.blend, referee.current
    before = stage.before.get("blend")
    row = before and store.adapter(before["adapter"])
    with stage("blend") as detail:
        if not row:
            row = blend_adapter(ws, store, forgetful.adapter, current, weight)
        detail |= {"adapter": row["version"], "of": forgetful.adapter["version"],
                   "weight": weight}  # fmt: skip
    allow_gold = ws.cycle.allow_gold and parse_method(forgetful.method).recipe != "sft-label-free"
    gold = holds_gold(forgetful.adapter) or holds_gold(current)  # the blend holds both
    record = {"data": forgetful.compiled, "holds_gold": gold,
              "blend": {"of": forgetful.adapter["version"], "weight": weight}}  # fmt: skip
    return gated(ws, store, stage, referee, f"{forgetful.method} blend", row, " blend",
                 forgetful.suites, allow_gold, record, on_progress)  # fmt: skip


def gated(
    ws: Workspace,
    store: TrainerStore,
    stage: Stages,
    referee: Referee[Server],
    method: str,
    row: dict[str, Any],
    suffix: str,
    suites: list[str],
    allow_gold: bool,
    record: dict[str, Any],
    on_progress: Progress | None,
) -> Gated:
    """The registered adapter `row` gated on the gate suites of `suites` (where its rows came
    from); what it was trained on and how (`record`) is kept with it."""
    current = referee.current
    with stage("gate" + suffix) as detail:
        gates, notes = referee.gates(store, stage.cycle_id, suites)
        # The current side first, all of it (once a night; its frozen suite once per adapter,
        # reused on later nights), then the candidate's server for every measurement of the
        # candidate: each side's server starts once.
        if gates:
            referee(gates, allow_gold)
        client, candidate_name = referee.serve(row)
        assert candidate_name is not None
        if ws.memory:  # what the candidate passes unaided: retired for it
            detail["retired"] = asyncio.run(
                retire_passed(
                    ws, store, client, candidate_name,
                    on_progress and functools.partial(on_progress, "retire memories"),
                )
            )  # fmt: skip

        def candidate_on(on: list[GateSuite], recall: dict[str, bool]) -> Measured:
            client, name = referee.serve(row)  # a side's server: started again if switched
            return asyncio.run(
                measure(ws.cycle, referee.evaluator(client, stage.cycle_id), on, name,
                        "candidate", memory=ws.memory, gold=allow_gold, recall=recall,
                        on_progress=on_progress)
            )  # fmt: skip

        verdict, measured, gates = referee.judge(gates, allow_gold, candidate_on)
        current_version = current["version"] if current else None
        gate = dataclasses.replace(verdict, current=current_version, notes=[*notes, *verdict.notes])
        store.update_adapter(
            row["version"],
            metrics={"gate": gate.to_dict(),
                     "cycle": {"id": stage.cycle_id, "round": stage.round_no, "method": method,
                               "gold": allow_gold, **record}},
        )  # fmt: skip
        detail |= {"decision": gate.decision, "suites": len(gate.suites)}
    adapter = store.adapter(row["version"]) or row
    return Gated(method, adapter, candidate_name, gate, record.get("data", {}), measured, gates,
                 suites)  # fmt: skip
