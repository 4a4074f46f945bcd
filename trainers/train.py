"""`reflexa train`: a LoRA adapter from a compiled dataset, with TRL and PEFT.

An SFT or DPO adapter is trained afresh on the base model from the whole (cumulative)
dataset, so it never inherits an earlier one's mistakes; `parent` records only which adapter
was the default at the time. A GRPO adapter continues its parent's LoRA: reinforcement needs
a policy that sometimes succeeds (from the base model every sums completion scored 0:
bench/results/grpo-2026-11-24.json), and on-policy means sampling from the current model.
SFT continues its parent too where asked (`continue_parent`): once gold is off while the
parent learnt from it, the parent holds what gold taught, and the rows may no longer say it;
and for the `sft-continue` method (trainers/cycle.py decides).
The folder is written under `adapters/.partial-<pid>-…` (`build_adapter`, in a child
process during a cycle, which knows no store) and renamed to `adapters/<version>/` only when
complete (`register`, by whoever holds the registry), so a killed trainer leaves no adapter
behind.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from reflexa.trainers.config import TrainConfig, train_config
from reflexa.trainers.errors import TrainerError
from reflexa.trainers.ports import AdapterRegistry
from reflexa.trainers.registry import METADATA, Built, parent_folder, register
from reflexa.trainers.rewards import verifier_reward
from reflexa.trainers.workspace import Workspace

# (step, total steps, latest loss or None)
StepFn = Callable[[int, int, float | None], None]


def same_steps(config: TrainConfig, manifest: dict[str, Any], rows: int) -> TrainConfig:
    """Where the dataset repeats its frontier rows (`unique_rows` of `rows` are distinct),
    fewer epochs, so training takes the steps it would take on the distinct rows."""
    if not manifest.get("unique_rows") or config.max_steps > 0 or rows == 0:
        return config
    return dataclasses.replace(config, epochs=config.epochs * manifest["unique_rows"] / rows)


def load_dataset_dir(path: Path, config: TrainConfig) -> tuple[Any, dict[str, Any]]:
    """The dataset and its manifest, checked against the method and the minimum size."""
    from datasets import load_from_disk

    manifest_file = path / "manifest.json"
    if not manifest_file.is_file():
        raise TrainerError(
            f"{path}: not a dataset folder (no manifest.json; "
            "make one with `reflexa failures export`)"
        )
    manifest = json.loads(manifest_file.read_text())
    if manifest["format"] != config.method:
        raise TrainerError(
            f"{path} holds {manifest['format']} data; --method {config.method} "
            f"needs {config.method} data"
        )
    dataset = load_from_disk(str(path))
    if len(dataset) < config.min_examples:
        raise TrainerError(
            f"only {len(dataset)} {config.method} examples; at least {config.min_examples} are "
            "needed (min_examples): collect more corrections first (`reflexa eval run … "
            "--split train`)"
        )
    return dataset, manifest


def build_adapter(
    ws: Workspace,
    dataset_dir: Path,
    config: TrainConfig,
    *,
    start: Path | None = None,
    parent: str | None = None,
    owner: int | None = None,
    out: Path | None = None,
    on_step: StepFn | None = None,
) -> Built:
    """Train on `dataset_dir` (continuing the LoRA in `start`, if given) into
    `adapters/.partial-<owner>-…` (owner: the process that will register it, this one by
    default; a partial folder whose owner is gone is removed), with its metadata written
    last. `parent`: the adapter that is the default now, for the record."""
    if config.lora_r > ws.max_lora_rank:
        raise TrainerError(
            f"lora_r {config.lora_r} exceeds the server's max_lora_rank "
            f"{ws.max_lora_rank}: vLLM could not load it"
        )
    dataset, manifest = load_dataset_dir(dataset_dir, config)
    config = same_steps(config, manifest, len(dataset))
    ws.adapters_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(ws.adapters_dir)
    partial = out or ws.adapters_dir / f".partial-{owner or os.getpid()}-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    try:
        losses, speed = _fit(
            ws.model_dir, dataset, config, partial, on_step, ws.allow_unconfined, start
        )
        metadata = {
            "base_model": ws.model_name,
            "base_model_path": str(ws.model_dir),
            "method": config.method,
            "dataset": str(dataset_dir),
            "dataset_hash": manifest["dataset_hash"],
            "examples": len(dataset),
            "by_source": manifest.get("by_source", {}),
            "config": config.to_dict(),
            "loss": losses,
            "train_runtime_s": round(speed["train_runtime"], 2),
            "samples_per_s": round(speed["train_samples_per_second"], 3),
            "train_s": round(time.perf_counter() - started, 1),
            "parent": parent,
            "continued_from": start and str(start),
            "processes": int(os.environ.get("WORLD_SIZE", "1")),  # under a launcher, several
        }
        if main_process():
            (partial / METADATA).write_text(json.dumps(metadata, indent=2) + "\n")
            _fsync_tree(partial)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return Built(partial, metadata)


def train_adapter(
    ws: Workspace,
    registry: AdapterRegistry,
    dataset_dir: Path,
    config: TrainConfig,
    *,
    parent: str | None = None,
    continue_parent: bool = False,
    on_step: StepFn | None = None,
) -> dict[str, Any]:
    """Train in this process and register the adapter as a candidate. GRPO always continues
    `parent`'s LoRA; SFT and DPO only with `continue_parent`."""
    start = parent_folder(registry, parent, continue_parent or config.method == "grpo")
    built = build_adapter(ws, dataset_dir, config, start=start, parent=parent, on_step=on_step)
    return register(ws, registry, built)


def remove_stale_partials(adapters: Path) -> None:
    """Delete half-written folders whose trainer process is gone."""
    for path in adapters.glob(".partial-*"):
        pid = int(path.name.split("-")[1])
        if not _alive(pid):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_tree(path: Path) -> None:
    for file in path.iterdir():
        with open(file, "rb") as f:
            os.fsync(f.fileno())


def _fit(
    model_dir: Path,
    dataset: Any,
    config: TrainConfig,
    out: Path,
    on_step: StepFn | None,
    allow_unconfined: bool = False,
    start: Path | None = None,
) -> tuple[list[dict[str, float]], dict[str, float]]:
    """Run the TRL trainer; save the adapter weights to `out`. Returns the loss curve and
    the trainer's speed metrics (train_runtime, train_samples_per_second)."""
    import torch
    from datasets import disable_progress_bars
    from peft import LoraConfig, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
    from transformers.utils import logging as hf_logging
    from trl import (
        DPOConfig,
        DPOTrainer,
        GRPOConfig,
        GRPOTrainer,
        KTOConfig,
        KTOTrainer,
        SFTConfig,
        SFTTrainer,
    )

    disable_progress_bars()  # our own bar shows the steps; stdout stays for --json
    hf_logging.disable_progress_bar()
    gpu = torch.cuda.is_available()
    if not gpu:
        torch.set_num_threads(config.threads or os.cpu_count() or 1)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.bfloat16 if gpu else torch.float32
    )
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules),
        task_type="CAUSAL_LM",
    )
    common: dict[str, Any] = {
        "output_dir": str(out.with_name(out.name + "-work")),
        "per_device_train_batch_size": config.batch_size,
        "num_train_epochs": config.epochs,
        "max_steps": config.max_steps,
        "learning_rate": config.learning_rate,
        "max_length": config.max_length,
        "seed": config.seed,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "use_cpu": not gpu,
        "bf16": gpu,
        "gradient_checkpointing": False,  # 10x slower on the CPU (FINDINGS)
    } | config.extra
    progress = _Progress(on_step)
    callbacks: list[TrainerCallback] = [progress]
    policy: Any = model
    if start is not None:  # continue the parent's LoRA (its rank and modules)
        policy = PeftModel.from_pretrained(model, str(start), is_trainable=True)
    peft_config = None if start is not None else lora
    if config.method == "sft":
        # Prompt/completion rows: the loss is on the answer only, not on the prompt.
        rows = dataset.map(
            lambda r: {"prompt": r["messages"][:-1], "completion": r["messages"][-1:]},
            remove_columns=dataset.column_names,
        )
        trainer: Any = SFTTrainer(
            model=policy,
            args=SFTConfig(completion_only_loss=True, **common),
            train_dataset=rows,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=callbacks,
        )
    elif config.method == "grpo":
        # The verifiers are the reward; GRPO samples its own completions (no max_length).
        grpo = {k: v for k, v in common.items() if k != "max_length"}
        grpo |= {"num_train_epochs": config.grpo_epochs,
                 "per_device_train_batch_size": config.grpo_batch_size} | config.extra  # fmt: skip
        trainer = GRPOTrainer(
            model=policy,
            reward_funcs=verifier_reward(allow_unconfined),
            args=GRPOConfig(
                num_generations=config.grpo_generations,
                max_completion_length=config.grpo_max_completion,
                temperature=config.grpo_temperature,
                beta=config.grpo_beta,
                **grpo,
            ),
            train_dataset=dataset.select_columns(["prompt", "checks", "scoring"]),
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=callbacks,
        )
    elif config.method == "kto":
        # KTO compares each answer with the others in its batch (its KL term): at least 2.
        kto = common | {"per_device_train_batch_size": max(2, config.batch_size)}
        trainer = KTOTrainer(
            model=policy,
            args=KTOConfig(beta=config.kto_beta, **kto),
            train_dataset=dataset.select_columns(["prompt", "completion", "label"]),
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=callbacks,
        )
    else:
        rows = dataset.select_columns(["prompt", "chosen", "rejected"])
        trainer = DPOTrainer(
            model=policy,
            args=DPOConfig(beta=config.dpo_beta, **common),
            train_dataset=rows,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=callbacks,
        )
    trainer.remove_callback(PrinterCallback)  # it prints every log line to stdout
    try:
        speed = trainer.train().metrics
        if main_process():
            trainer.model.save_pretrained(str(out))
    finally:
        shutil.rmtree(common["output_dir"], ignore_errors=True)
    return progress.losses, speed


class _Progress(TrainerCallback):
    """Reports each step and keeps the loss curve."""

    def __init__(self, on_step: StepFn | None) -> None:
        self.on_step = on_step
        self.losses: list[dict[str, float]] = []

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict | None = None, **_: Any
    ) -> None:
        if logs and "loss" in logs:
            entry = {"step": state.global_step, "loss": round(float(logs["loss"]), 4)}
            if "reward" in logs:  # GRPO: the mean verifier reward of the step's completions
                entry["reward"] = round(float(logs["reward"]), 4)
            self.losses.append(entry)

    def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        if self.on_step:
            last = self.losses[-1]["loss"] if self.losses else None
            self.on_step(state.global_step, state.max_steps, last)


def main(argv: list[str] | None = None) -> int:
    """`python -m reflexa.trainers.train --workspace FILE --dataset DIR [--method M]
    [--start DIR] [--parent VERSION] [--owner PID] [--max-steps N] [--settings JSON]`: train
    one adapter (what a cycle runs in a child process) into a partial folder that the owner
    registers. The workspace comes as a JSON file (`Workspace.to_json`); the built folder and
    its metadata are printed as JSON on stdout, progress goes to stderr."""
    parser = argparse.ArgumentParser(
        prog="python -m reflexa.trainers.train", description=main.__doc__
    )
    parser.add_argument("--workspace", type=Path, required=True, help="the workspace as JSON")
    parser.add_argument("--dataset", type=Path, required=True, help="a compiled dataset")
    parser.add_argument(
        "--method", choices=["sft", "dpo", "grpo", "kto"], help="instead of the training config's"
    )
    parser.add_argument("--start", type=Path, help="an adapter folder whose LoRA to go on from")
    parser.add_argument("--parent", default=None, help="the adapter that is the default now")
    parser.add_argument("--owner", type=int, help="the process that registers the result")
    parser.add_argument("--max-steps", type=int, help="instead of the training config's")
    parser.add_argument("--out", type=Path, help="the partial folder to build (all processes)")
    parser.add_argument("--settings", type=json.loads, default={},
                        help="training config fields as JSON, instead of the config's")  # fmt: skip
    args = parser.parse_args(argv)

    def step(done: int, total: int, loss: float | None) -> None:
        tail = f", loss {loss:.3f}" if loss is not None else ""
        print(f"training: step {done}/{total}{tail}", file=sys.stderr, flush=True)

    try:
        ws = Workspace.from_json(args.workspace.read_text())
        config = train_config(ws.cycle).replace(
            method=args.method, max_steps=args.max_steps, **args.settings
        )
        built = build_adapter(ws, args.dataset, config, start=args.start, parent=args.parent,
                              owner=args.owner, out=args.out, on_step=step)  # fmt: skip
    except (TrainerError, OSError) as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    if main_process():  # under a launcher, one result from the process that saved it
        print(json.dumps({"path": str(built.path), "metadata": built.metadata}))
    return 0


def main_process() -> bool:
    """This process saves and reports: the only one, or rank 0 under a launcher (torchrun,
    accelerate and Ray's torch jobs set RANK)."""
    return int(os.environ.get("RANK", "0")) == 0


if __name__ == "__main__":
    sys.exit(main())
