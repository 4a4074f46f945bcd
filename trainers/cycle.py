"""`reflexa cycle`: sample → compile → train → gate → promote or reject, each stage timed and
recorded in the `cycles` table. Before the gate runs, the memories the candidate passes
unaided are retired for it, so the gate measures the memory it would serve with.

A night can run for hours. One stopped before it ended (killed, rebooted) is taken up by the
next cycle begun within `resume_hours`: a finished sampling stage is not run again, a
candidate whose training finished is gated without training it again, and the gate's eval
runs (kept apart per cycle) resume where they stopped, finished ones as they are.

A file lock keeps two cycles on one host from overlapping, and the store's lock (an advisory
lock on PostgreSQL) two hosts on one database. Training runs in a child process (`python -m
reflexa.trainers.train`) with the vLLM server untouched, so the server keeps answering; if
the child fails or is killed, nothing is promoted. Outcomes: promoted, rejected, skipped (not
enough data), failed (an error; the message says which stage).
"""

from __future__ import annotations

import asyncio
import functools
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from reflexa.evals.contamination import Guard
from reflexa.evals.held_out import held_out_guard
from reflexa.trainers.blend import forgot
from reflexa.trainers.candidate import Gated, blended, candidate
from reflexa.trainers.config import train_config
from reflexa.trainers.errors import TrainerError
from reflexa.trainers.examples import Example
from reflexa.trainers.gate import holm
from reflexa.trainers.history import method_order, nothing_new
from reflexa.trainers.methods import default_methods, distinct, holds_gold, parse_method
from reflexa.trainers.ports import TrainerStore
from reflexa.trainers.referee import (
    Connect,
    Evaluator,
    Progress,
    Referee,
    Server,
    Side,
    settle_memory,
)
from reflexa.trainers.registry import promote
from reflexa.trainers.rehearsal import read_rehearsal, rehearsal_prompts, rehearse, write_rehearsal
from reflexa.trainers.sampling import COVERING, sample_corrections, sampling_targets
from reflexa.trainers.stages import Skip, Stages, cycle_lock
from reflexa.trainers.workspace import Workspace


def run_cycle(
    ws: Workspace,
    store: TrainerStore,
    connect: Connect[Server],
    evaluator: Evaluator[Server],
    *,
    trigger: str = "cli",
    round_no: int = 1,
    log: Callable[[str], None] = lambda _: None,
    on_progress: Progress | None = None,
    side: Side[Server] | None = None,
    serve_promoted: Callable[[], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One whole cycle, recorded in `store`; returns what `reflexa cycle --json` prints.
    `connect` starts or finds the model server when a stage first needs it; `evaluator`
    gives the gate its eval runs on that server (or on `side`'s, where the gate measures
    each adapter on a server of its own); `serve_promoted`, called once a candidate is
    promoted, serves it as the application serves promoted adapters (merged), saying how.
    `round_no`: its place in a chain of rounds (`round_settings`)."""
    ws = round_settings(ws, round_no)
    with cycle_lock(ws), store.cycle_lock():
        taken = store.take_up_cycle(ws.cycle.resume_hours)
        cycle_id = taken["id"] if taken else store.start_cycle(trigger)
        stages = Stages(store, cycle_id, log)
        if taken:
            stages.take_up(taken)
        stages.round_no = round_no
        stages.history = [c for c in store.cycles(limit=30) if c["id"] != cycle_id]
        out: dict[str, Any] = {
            "cycle_id": cycle_id,
            "round": round_no,
            "gold": ws.cycle.allow_gold,
            "adapter": None,
            "gate": None,
        }
        try:
            idle = None
            if trigger == "schedule" and not taken:  # a night taken up goes on regardless
                idle = nothing_new(stages.history, store.learning_counts())
            if idle:
                raise Skip(idle)
            connect = functools.cache(connect)
            referee = Referee(ws, cycle_id, connect, evaluator, store.promoted_adapter(),
                              on_progress, side)  # fmt: skip
            out |= _run(ws, store, referee, stages, log, on_progress, serve_promoted)
        except Skip as e:
            out |= {"status": "skipped", "decision": "skip", "reason": str(e)}
        except (TrainerError, subprocess.SubprocessError, OSError, httpx.HTTPError) as e:
            out |= {"status": "failed", "decision": "fail", "reason": f"{e}" or type(e).__name__}
        out["stages"] = stages.done
        out["seen"] = store.learning_counts()  # what the next scheduled night compares with
        store.finish_cycle(
            cycle_id,
            status=out["status"],
            reason=out["reason"],
            adapter_version=out["adapter"] and out["adapter"]["version"],
            result=out,
        )
        return out


def round_settings(ws: Workspace, round_no: int) -> Workspace:
    """The workspace of round `round_no` of a chain: gold is allowed in the first
    `cycle.gold_rounds` only; later rounds learn from the model's own verified answers."""
    if round_no <= ws.cycle.gold_rounds or not ws.cycle.allow_gold:
        return ws
    return ws.with_cycle(allow_gold=False)


def _run(
    ws: Workspace,
    store: TrainerStore,
    referee: Referee[Server],
    stage: Stages,
    log: Callable[[str], None],
    on_progress: Progress | None,
    serve_promoted: Callable[[], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    config = train_config(ws.cycle)
    current, connect = referee.current, referee.connect
    # What gold taught the served adapter lives in it, not in the rows tonight may use (gold
    # is off now): SFT goes on from it (afresh, sums round 2 gained 1 point on dev:
    # bench/results/rounds-sums-2026-11-24.json).
    stage.continue_parent = holds_gold(current) and not ws.cycle.allow_gold
    configured = ws.cycle.methods or default_methods(config.method)
    methods = distinct(configured, ws.cycle.allow_gold, stage.continue_parent, bool(current))
    protected = held_out_guard(store.held_out_prompts())
    settle = _settling(ws, methods)
    targets = sampling_targets(store, protected, ws.cycle.sample_limit, settle)
    mixed: set[str] | None = None  # GRPO's prompts, where sampling measured them
    if "sample" in stage.before:  # sampled before the stop
        sampled = stage.before["sample"]
        mixed = set(sampled["mixed_prompts"]) if "mixed_prompts" in sampled else None
    elif ws.cycle.sample_n > 0 and targets:
        with stage("sample") as detail:
            client, model = referee.serve(current)  # the current adapter's merged server, if any
            counts, mixed = asyncio.run(
                sample_corrections(
                    ws, store, client, model, targets,
                    on_progress and (lambda d, t: on_progress("sample", d, t)),
                )
            )  # fmt: skip
            detail |= counts | {"mixed_prompts": sorted(mixed)}
        referee.release()  # memory back for training; the gate restarts it, not re-merging
    sft = [m for m in map(parse_method, methods) if m.format == "sft"]
    if any(m.rehearsal(ws.cycle.rehearsal) > 0 for m in sft):
        stage.rehearsal = _rehearsal(ws, store, referee, stage, protected, on_progress)

    tried: list[Gated] = []
    skipped: dict[str, str] = {}
    order_why = None
    if len(methods) > 1:
        methods, order_why = method_order(stage.history, methods)
        log(f"cycle: {order_why}")
    budget = ws.cycle.budget_minutes * 60
    for method in methods:
        spent = time.perf_counter() - stage.started
        if method != methods[0] and spent > budget:  # the likeliest winner went first
            skipped[method] = (
                f"the night's budget was spent ({spent / 60:.0f} of "
                f"{ws.cycle.budget_minutes:g} minutes, budget_minutes)"
            )
            continue
        args = (method, config, len(methods) > 1, protected, current, mixed, on_progress)
        try:
            tried.append(candidate(ws, store, stage, referee, *args))
        except Skip as e:
            if len(methods) == 1:
                raise
            skipped[method] = str(e)
    if not tried:
        raise Skip(
            "no method had enough data: " + "; ".join(f"{m}: {r}" for m, r in skipped.items())
        )
    decided = holm([c.gate for c in tried], ws.cycle.alpha)
    forgetful = [c for c, d in zip(tried, decided, strict=True) if forgot(d, ws.cycle)]
    blend: dict[str, Any] = {}
    if ws.cycle.blend > 0 and forgetful and not any(d.promotes for d in decided):
        spent = time.perf_counter() - stage.started
        source = max(forgetful, key=lambda c: c.gain)
        blend = {"of": source.adapter["version"]}
        try:
            if spent > budget:
                raise Skip(f"the night's budget was spent ({spent / 60:.0f} minutes)")
            tried.append(blended(ws, store, stage, referee, source, on_progress))
            blend |= tried[-1].summary()
        except (Skip, TrainerError) as e:  # the night is decided without it
            blend["skipped"] = str(e)
        decided = holm([c.gate for c in tried], ws.cycle.alpha)
    for c, d in zip(tried, decided, strict=True):
        c.gate = d
        store.update_adapter(c.adapter["version"], metrics={"gate": d.to_dict()})
    promotable = [c for c in tried if c.gate.promotes]
    best = max(promotable, key=lambda c: c.gain, default=None)
    shown = best or max(tried, key=lambda c: c.gain)

    with stage("promote" if best else "reject") as detail:
        sides = [(c.name, c.measured, c.gates) for c in tried]
        settle_memory(store, referee, sides, best.name if best else None)
        for c in tried:
            if c is best:
                promote(ws, store, connect(), c.adapter["version"], c.gate.reason)
                if serve_promoted is not None:
                    referee.release()  # the gate's server of it: its memory to the new one
                    detail["serving"] = serve_promoted()
                continue
            reason = c.gate.reason
            if best is not None and c.gate.promotes:
                reason = f"the gate preferred {best.adapter['version']} ({best.method}): {reason}"
            store.update_adapter(c.adapter["version"], status="rejected", reason=reason)
            if referee.side is None:  # loaded into the application's server to be gated
                connect().unload_adapter(c.name)
    status = "promoted" if best else "rejected"
    log(f"cycle: {status} {shown.adapter['version']} ({shown.method}): {shown.gate.reason}")
    adapter = store.adapter(shown.adapter["version"])
    out = {
        "status": status,
        "decision": shown.gate.decision,
        "reason": shown.gate.reason,
        "method": shown.method,  # as configured: its name in the record
        "adapter": adapter and _public(adapter),
        "gate": shown.gate.to_dict(),
    }
    if len(methods) > 1:  # the evidence for the choice
        out["methods"] = {c.method: c.summary() for c in tried} | {
            m: {"skipped": reason} for m, reason in skipped.items()
        }
        out["method_order"] = order_why
    if blend:  # what pulling the forgetful candidate back toward the current adapter did
        out["blend"] = blend
    return out


def _rehearsal(
    ws: Workspace,
    store: TrainerStore,
    referee: Referee[Server],
    stage: Stages,
    protected: Guard,
    on_progress: Progress | None,
) -> list[Example]:
    """The current model's answers to chat prompts, to rehearse (trainers/rehearsal.py); a
    taken-up cycle reads those it wrote before the stop."""
    path = ws.home / "datasets" / f"{stage.cycle_id}-rehearsal.jsonl"
    if "rehearse" in stage.before and path.is_file():
        return read_rehearsal(path)
    prompts = rehearsal_prompts(store, protected, ws.cycle.rehearsal_limit)
    if not prompts:
        return []
    with stage("rehearse") as detail:
        client, model = referee.serve(referee.current)  # as sampling asks it
        kept, counts = asyncio.run(
            rehearse(ws, client, model, prompts,
                     on_progress and (lambda d, t: on_progress("rehearse", d, t)))
        )  # fmt: skip
        detail |= counts | {"file": str(write_rehearsal(kept, path))}
    referee.release()
    return kept


def _settling(ws: Workspace, methods: Sequence[str]) -> list[str]:
    """The justifications whose rows settle a prompt, so it is not sampled again: gold only
    where this round may learn from it and no candidate needs the model's own samples there
    (label-free SFT learns from them; GRPO trains where they disagree)."""
    own = {"sft-label-free", "grpo"} & {parse_method(m).recipe for m in methods}
    gold = ws.cycle.allow_gold and not own
    allowed = ws.cycle.justifications
    return [j for j in COVERING if j in allowed and (j != "gold" or gold)]


def _public(row: dict[str, Any]) -> dict[str, Any]:
    keep = ("version", "name", "path", "status", "method", "examples", "dataset_hash", "parent")
    return {k: row[k] for k in keep}
