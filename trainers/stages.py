"""A cycle's stages: each timed and recorded as it ends; a cycle a stopped process left
taken up with the stages it finished; and a candidate's first two stages, compile and train
(or, for a taken-up cycle, what they gave before the stop)."""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reflexa.evals.contamination import Guard
from reflexa.trainers.child import dataset_name, train_in_child
from reflexa.trainers.config import TrainConfig
from reflexa.trainers.dataset import TooFewExamples, build_dataset
from reflexa.trainers.errors import CycleBusy
from reflexa.trainers.examples import Example
from reflexa.trainers.history import grpo_steps
from reflexa.trainers.methods import Method, continues
from reflexa.trainers.ports import TrainerStore
from reflexa.trainers.registry import parent_folder, register
from reflexa.trainers.replay import last_trained
from reflexa.trainers.workspace import Workspace


class Skip(Exception):
    """Nothing to train on: a normal, recorded, non-promoting outcome."""


@contextmanager
def cycle_lock(ws: Workspace) -> Iterator[None]:
    """Held for a whole cycle; a second cycle fails at once instead of waiting."""
    ws.run_dir.mkdir(parents=True, exist_ok=True)
    with open(ws.run_dir / "cycle.lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise CycleBusy(f"another cycle is running (pid {f.read().strip() or '?'})") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        yield


class Stages:
    """Times each stage and records it as it ends, success or not."""

    def __init__(self, store: TrainerStore, cycle_id: str, log: Callable[[str], None]) -> None:
        self.store, self.cycle_id, self.log = store, cycle_id, log
        self.round_no = 1
        self.continue_parent = False  # SFT goes on from the promoted adapter (`_run`)
        self.rehearsal: list[Example] = []  # the current model's answers to chat (`_run`)
        self.history: list[dict[str, Any]] = []  # past cycles, newest first
        self.started = time.perf_counter()
        self.done: list[dict[str, Any]] = []
        self.before: dict[str, dict[str, Any]] = {}  # a taken-up cycle's finished stages

    def take_up(self, row: dict[str, Any]) -> None:
        """Go on with a cycle a stopped process left: its stages so far are kept, and those
        that finished need not run again."""
        self.done = list(row["stages"])
        self.before = {
            s["stage"]: s for s in row["stages"] if s.get("ok") and s["stage"] != "resume"
        }
        finished = ", ".join(self.before) or "none"
        began = str(row["started_at"])[:16].replace("T", " ")
        self.log(f"cycle: taking up cycle {row['id'][:8]} (begun {began} UTC), stopped before "
                 f"it ended; stages finished: {finished}")  # fmt: skip
        with self("resume") as detail:
            detail["finished_before"] = list(self.before)

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


def compile_and_train(
    ws: Workspace,
    store: TrainerStore,
    stage: Stages,
    recipe: Method,
    config: TrainConfig,
    suffix: str,
    protected: Guard,
    current: dict[str, Any] | None,
    mixed: set[str] | None,
    allow_gold: bool,
) -> tuple[dict[str, Any], list[str], bool, dict[str, Any]]:
    """Compile one method's dataset and train its candidate: what was compiled, the suites
    its rows came from, whether training went on from the current adapter, and the
    registered adapter."""
    fmt = recipe.format
    parent = current["version"] if current else None
    start = parent_folder(store, parent, continues(recipe, stage.continue_parent))
    since = last_trained(stage.history) if start else None
    with stage("compile" + suffix) as detail:
        detail["began_at"] = datetime.now(UTC).isoformat()  # rows logged after: a later night's
        dataset_dir = ws.home / "datasets" / dataset_name(stage.cycle_id, suffix)
        try:
            compiled, examples = build_dataset(
                store, dataset_dir, fmt, allow_gold=allow_gold,
                justifications=ws.cycle.justifications, protected=protected,
                min_examples=config.min_examples, cycle=stage.cycle_id,
                allow_unconfined=ws.allow_unconfined,
                repair_turns=ws.cycle.repair_turns, mixed=mixed,
                form_precision=ws.cycle.form_precision, frontier_weight=ws.cycle.frontier_weight,
                consistency_precision=ws.cycle.consistency_precision,
                agree=(ws.cycle.agree_greedy, ws.cycle.agree_majority),
                rehearsal=stage.rehearsal, rehearsal_share=recipe.rehearsal(ws.cycle.rehearsal),
                replay=(since, ws.cycle.replay) if since else None,
            )  # fmt: skip
        except TooFewExamples as e:
            detail |= e.summary
            raise Skip(str(e)) from None
        summary = compiled.summary(examples) | {"dataset": str(dataset_dir)}
        detail |= summary

    with stage("train" + suffix) as detail:
        steps = None
        if fmt == "grpo" and config.max_steps <= 0:  # the steps that fit the night
            left = ws.cycle.budget_minutes * 60 - (time.perf_counter() - stage.started)
            steps, detail["steps"] = grpo_steps(
                store.adapters(), stage.history, summary["examples"], config.grpo_generations,
                config.grpo_batch_size, config.grpo_epochs, left,
            )  # fmt: skip
            if steps is None:
                raise Skip(detail["steps"])
        built = train_in_child(ws, dataset_dir, fmt, start, parent, steps, recipe.training())
        row = register(ws, store, built)
        detail |= {
            "adapter": row["version"],
            "train_s": row["metrics"]["train"]["train_s"],
            "continued_from": parent if start else None,
        }
    return summary, compiled.suites(), bool(start), row


def trained_before(
    store: TrainerStore, stage: Stages, suffix: str
) -> tuple[dict[str, Any], list[str], bool, dict[str, Any]] | None:
    """What `compile_and_train` gave before the stop of a taken-up cycle, if its training finished
    and its dataset and adapter are still there; else None (compiled and trained again)."""
    compiled, trained = stage.before.get("compile" + suffix), stage.before.get("train" + suffix)
    if compiled is None or trained is None:
        return None
    row = store.adapter(trained["adapter"])
    manifest = Path(compiled["dataset"]) / "manifest.json"
    if row is None or not manifest.is_file() or not Path(row["path"]).is_dir():
        return None
    summary = {k: v for k, v in compiled.items() if k not in ("stage", "ok", "seconds")}
    suites = json.loads(manifest.read_text()).get("suites", [])
    return summary, suites, trained["continued_from"] is not None, row
