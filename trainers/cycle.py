"""`reflexa cycle`: sample → compile → train → gate → promote or reject, each stage timed and
recorded in the `cycles` table. Before the gate runs, the memories the candidate passes
unaided are retired for it, so the gate measures the memory it would serve with.

A file lock keeps two cycles from overlapping. Training runs in a child process (`python -m
reflexa.trainers.train`) with the vLLM server untouched, so the server keeps answering; if
the child fails or is killed, nothing is promoted. Outcomes: promoted, rejected, skipped (not
enough data), failed (an error; the message says which stage).
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reflexa.agent.errors import ReflexaError
from reflexa.agent.model.client import ModelClient
from reflexa.agent.settings import Settings, settings_json
from reflexa.agent.store import Store
from reflexa.evals.contamination import Guard
from reflexa.evals.held_out import held_out_guard
from reflexa.trainers.config import TrainConfig, train_config
from reflexa.trainers.dataset import Format, TooFewExamples, build_dataset
from reflexa.trainers.gate import Evaluate, gate_suites, run_gate
from reflexa.trainers.registry import load, promote
from reflexa.trainers.retire import retire_passed
from reflexa.trainers.sampling import COVERING, sample_corrections, sampling_targets

# (what, done, total): progress of the stage under way
Progress = Callable[[str, int, int], None]
Connect = Callable[[], ModelClient]
# The gate's eval runs on a connected server (see `gate.Evaluate`), from the application.
Evaluator = Callable[[ModelClient], Evaluate]


# What each candidate method (`cycle.methods`) trains: sft-label-free is SFT without gold.
FORMAT: dict[str, Format] = {"sft": "sft", "sft-label-free": "sft", "dpo": "dpo", "grpo": "grpo"}


class Skip(Exception):
    """Nothing to train on: a normal, recorded, non-promoting outcome."""


@contextmanager
def cycle_lock(settings: Settings) -> Iterator[None]:
    """Held for a whole cycle; a second cycle fails at once instead of waiting."""
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.run_dir / "cycle.lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise ReflexaError(
                f"another cycle is running (pid {f.read().strip() or '?'})"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        yield


class _Stages:
    """Times each stage and records it as it ends, success or not."""

    def __init__(self, store: Store, cycle_id: str, log: Callable[[str], None]) -> None:
        self.store, self.cycle_id, self.log = store, cycle_id, log
        self.round_no = 1
        self.continue_parent = False  # SFT goes on from the promoted adapter (`run_cycle`)
        self.done: list[dict[str, Any]] = []

    @contextmanager
    def __call__(self, name: str) -> Iterator[dict[str, Any]]:
        self.log(f"cycle: {name}")
        detail: dict[str, Any] = {}
        started = time.perf_counter()
        record = {"stage": name, "ok": True}
        try:
            yield detail
        except Skip as e:
            detail["skipped"] = str(e)
            raise
        except BaseException as e:
            record |= {"ok": False, "error": str(e) or type(e).__name__}
            raise
        finally:
            record |= {"seconds": round(time.perf_counter() - started, 1), **detail}
            self.done.append(record)
            self.store.record_stage(self.cycle_id, record)


def run_cycle(
    settings: Settings,
    store: Store,
    connect: Connect,
    evaluator: Evaluator,
    *,
    trigger: str = "cli",
    round_no: int = 1,
    log: Callable[[str], None] = lambda _: None,
    on_progress: Progress | None = None,
) -> dict[str, Any]:
    """One whole cycle, recorded in `store`; returns what `reflexa cycle --json` prints.
    `connect` starts or finds the model server when a stage first needs it; `evaluator`
    gives the gate its eval runs on that server. `round_no`: its place in a chain of
    rounds (`round_settings`)."""
    chained = round_settings(settings, round_no)
    # Past the gold rounds, what gold taught lives in the promoted adapter, not in the rows
    # this round may use: SFT goes on from it (afresh, sums round 2 gained 1 point on dev:
    # bench/results/rounds-sums-2026-11-24.json).
    gold_dropped = settings.cycle.allow_gold and not chained.cycle.allow_gold
    settings = chained
    with cycle_lock(settings):
        cycle_id = store.start_cycle(trigger)
        stages = _Stages(store, cycle_id, log)
        stages.round_no, stages.continue_parent = round_no, gold_dropped
        out: dict[str, Any] = {
            "cycle_id": cycle_id,
            "round": round_no,
            "gold": settings.cycle.allow_gold,
            "adapter": None,
            "gate": None,
        }
        try:
            out |= _run(settings, store, functools.cache(connect), evaluator, stages, log,
                        on_progress)  # fmt: skip
        except Skip as e:
            out |= {"status": "skipped", "decision": "skip", "reason": str(e)}
        except (ReflexaError, subprocess.SubprocessError, OSError) as e:
            out |= {"status": "failed", "decision": "fail", "reason": str(e)}
        out["stages"] = stages.done
        store.finish_cycle(
            cycle_id,
            status=out["status"],
            reason=out["reason"],
            adapter_version=out["adapter"] and out["adapter"]["version"],
            result=out,
        )
        return out


def round_settings(settings: Settings, round_no: int) -> Settings:
    """The settings of round `round_no` of a chain: gold is allowed in the first
    `cycle.gold_rounds` only; later rounds learn from the model's own verified answers."""
    if round_no <= settings.cycle.gold_rounds or not settings.cycle.allow_gold:
        return settings
    cycle = settings.cycle.model_copy(update={"allow_gold": False})
    return settings.model_copy(update={"cycle": cycle})


@dataclass
class _Candidate:
    method: str
    adapter: dict[str, Any]
    name: str  # as the server knows it
    gate: dict[str, Any]
    compiled: dict[str, Any]

    @property
    def promotable(self) -> bool:
        return bool(self.gate["decision"] == "promote")

    def summary(self) -> dict[str, Any]:
        held = self.gate["heldout"] or {}
        return {"adapter": self.adapter["version"], "decision": self.gate["decision"],
                "gate_split": held.get("b"), "examples": self.compiled.get("examples"),
                "train_s": self.adapter["metrics"]["train"]["train_s"]}  # fmt: skip


def _run(
    settings: Settings,
    store: Store,
    connect: Connect,
    evaluator: Evaluator,
    stage: _Stages,
    log: Callable[[str], None],
    on_progress: Progress | None,
) -> dict[str, Any]:
    config = train_config(settings)
    methods = _distinct(settings.cycle.methods or [config.method], settings.cycle.allow_gold)
    protected = held_out_guard(store.held_out_prompts())
    current = store.promoted_adapter()
    settle = _settling(settings, methods)
    targets = sampling_targets(store, protected, settings.cycle.sample_limit, settle)
    mixed: set[str] | None = None  # GRPO's prompts, where sampling measured them
    if settings.cycle.sample_n > 0 and targets:
        with stage("sample") as detail:
            model = load(settings, connect(), current) if current else None
            counts, mixed = asyncio.run(
                sample_corrections(
                    settings, store, connect(), model, targets,
                    on_progress and (lambda d, t: on_progress("sample", d, t)),
                )
            )  # fmt: skip
            detail |= counts

    tried: list[_Candidate] = []
    skipped: dict[str, str] = {}
    for method in methods:
        args = (method, config, len(methods) > 1, protected, current, mixed, on_progress)
        try:
            tried.append(_candidate(settings, store, connect, evaluator, stage, *args))
        except Skip as e:
            if len(methods) == 1:
                raise
            skipped[method] = str(e)
    if not tried:
        raise Skip(
            "no method had enough data: " + "; ".join(f"{m}: {r}" for m, r in skipped.items())
        )
    promotable = [c for c in tried if c.promotable]
    best = max(promotable, key=lambda c: c.gate["heldout"]["b"], default=None)
    shown = best or max(tried, key=lambda c: (c.gate["heldout"] or {}).get("b", 0))

    with stage("promote" if best else "reject"):
        for c in tried:
            if c is best:
                promote(settings, store, connect(), c.adapter["version"], c.gate["reason"])
                continue
            reason = c.gate["reason"]
            if best is not None and c.promotable:
                reason = f"the gate preferred {best.adapter['version']} ({best.method}): {reason}"
            store.update_adapter(c.adapter["version"], status="rejected", reason=reason)
            connect().unload_adapter(c.name)
    status = "promoted" if best else "rejected"
    log(f"cycle: {status} {shown.adapter['version']} ({shown.method}): {shown.gate['reason']}")
    adapter = store.adapter(shown.adapter["version"])
    out = {
        "status": status,
        "decision": shown.gate["decision"],
        "reason": shown.gate["reason"],
        "adapter": adapter and _public(adapter),
        "gate": shown.gate,
    }
    if len(methods) > 1:  # the evidence for the choice
        out["methods"] = {c.method: c.summary() for c in tried} | {
            m: {"skipped": reason} for m, reason in skipped.items()
        }
    return out


def _distinct(methods: Sequence[str], allow_gold: bool) -> list[str]:
    """The methods that train differently: without gold, sft-label-free is sft."""
    recipes: dict[tuple[str, bool], str] = {}
    for m in methods:
        recipes.setdefault((FORMAT[m], allow_gold and m != "sft-label-free"), m)
    return list(recipes.values())


def _settling(settings: Settings, methods: Sequence[str]) -> list[str]:
    """The justifications whose rows settle a prompt, so it is not sampled again: gold only
    where this round may learn from it and no candidate needs the model's own samples there
    (label-free SFT learns from them; GRPO trains where they disagree)."""
    own = {"sft-label-free", "grpo"} & set(methods)
    gold = settings.cycle.allow_gold and not own
    allowed = settings.cycle.justifications
    return [j for j in COVERING if j in allowed and (j != "gold" or gold)]


def _candidate(
    settings: Settings,
    store: Store,
    connect: Connect,
    evaluator: Evaluator,
    stage: _Stages,
    method: str,
    config: TrainConfig,
    named: bool,
    protected: Guard,
    current: dict[str, Any] | None,
    mixed: set[str] | None,
    on_progress: Progress | None,
) -> _Candidate:
    """Compile, train and gate one method's candidate (stages named after the method when
    several are tried). `mixed`: the sampled prompts whose answers disagreed, where GRPO
    trains (a group whose answers all earn the same reward has no advantage to learn)."""
    fmt = FORMAT[method]
    allow_gold = settings.cycle.allow_gold and method != "sft-label-free"
    suffix = f" {method}" if named else ""
    with stage("compile" + suffix) as detail:
        dataset_dir = settings.home_dir / "datasets" / dataset_name(stage.cycle_id, suffix)
        try:
            compiled, examples = build_dataset(
                store, dataset_dir, fmt, allow_gold=allow_gold,
                justifications=settings.cycle.justifications, protected=protected,
                min_examples=config.min_examples, cycle=stage.cycle_id,
                allow_unconfined=settings.sandbox.allow_unconfined,
                repair_turns=settings.cycle.repair_turns, mixed=mixed,
            )  # fmt: skip
        except TooFewExamples as e:
            detail |= e.summary
            raise Skip(str(e)) from None
        summary = compiled.summary(examples) | {"dataset": str(dataset_dir)}
        detail |= summary

    with stage("train" + suffix) as detail:
        parent = current["version"] if current else None
        row = _train_in_child(settings, dataset_dir, parent, fmt, stage.continue_parent)
        detail |= {"adapter": row["version"], "train_s": row["metrics"]["train"]["train_s"]}

    with stage("gate" + suffix) as detail:
        client = connect()
        current_name = load(settings, client, current) if current else None
        candidate_name = load(settings, client, row)
        if settings.memory.enabled:  # what the candidate passes unaided: retired for it
            detail["retired"] = asyncio.run(
                retire_passed(
                    settings, store, client, candidate_name,
                    on_progress and functools.partial(on_progress, "retire memories"),
                )
            )  # fmt: skip
        gates, notes = gate_suites(store, compiled.suites())
        gate = asyncio.run(
            run_gate(
                settings, store, evaluator(client), gates, current_name, candidate_name,
                on_progress, gold=allow_gold,
            )
        )  # fmt: skip
        gate |= {"current": current and current["version"], "notes": notes}
        store.update_adapter(
            row["version"],
            metrics={"gate": gate, "cycle": {"id": stage.cycle_id, "round": stage.round_no,
                                             "method": method, "gold": allow_gold,
                                             "data": summary}},
        )  # fmt: skip
        detail |= {"decision": gate["decision"], "suites": len(gate["suites"])}
    adapter = store.adapter(row["version"]) or row
    return _Candidate(method, adapter, candidate_name, gate, summary)


def dataset_name(cycle_id: str, suffix: str = "") -> str:
    return f"cycle-{time.strftime('%Y%m%d-%H%M%S')}-{cycle_id[:8]}" + suffix.replace(" ", "-")


def _public(row: dict[str, Any]) -> dict[str, Any]:
    keep = ("version", "name", "path", "status", "method", "examples", "dataset_hash", "parent")
    return {k: row[k] for k in keep}


def _train_in_child(
    settings: Settings, dataset_dir: Path, parent: str | None, method: str, go_on: bool = False
) -> dict[str, Any]:
    """`python -m reflexa.trainers.train` in its own process, given the settings as a file (secrets
    included, so only its owner may read it): its progress goes to our stderr, its JSON
    result to us. A non-zero exit (an error, a kill) fails the stage."""
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=settings.run_dir, suffix=".json") as file:
        file.write(settings_json(settings))  # created 0600 by tempfile
        file.flush()
        command = [sys.executable, "-m", "reflexa.trainers.train", "--settings", file.name,
                   "--dataset", str(dataset_dir), "--method", method]  # fmt: skip
        if parent:
            command += ["--parent", parent] + ["--continue-parent"] * go_on
        child = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
    if child.returncode != 0:
        how = (
            f"killed by signal {-child.returncode}"
            if child.returncode < 0
            else (f"exit status {child.returncode}")
        )
        raise ReflexaError(f"training failed ({how}); nothing was promoted")
    try:
        return json.loads(child.stdout)
    except ValueError:
        raise ReflexaError("training printed no result; nothing was promoted") from None
