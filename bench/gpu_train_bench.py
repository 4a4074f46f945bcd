"""Training on a GPU: the product's trainer (`train_adapter`, TRL + PEFT, bf16) on the
bundled model, SFT with gold on a suite's training split (sums, or arithmetic: sums,
differences and products), then label-free GRPO continuing that
adapter (reward: the strict number check and the arithmetic tool, no gold), each scored on
the test split by greedy decoding in transformers (vLLM is not on the GPU machine; the gold
only scores). Reports seconds per step, peak GPU memory and the reward curve.

    python -m bench.gpu_train_bench --model DIR --out DIR --commit SHA [--suite arithmetic]
        [--grpo-steps 200] [--generations 8] [--batch 32]

It runs where no git history is (the device machine): the commit comes as an argument, and
the result is written to --out, to be copied unchanged into bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.record import machine
from reflexa.agent.settings import ModelSettings, Settings
from reflexa.agent.store import Store
from reflexa.evals.builtin import BUILTIN
from reflexa.evals.contamination import prompt_hash
from reflexa.evals.suite import SuiteItem
from reflexa.evals.verify import gold_answer, passes
from reflexa.trainers.config import TrainConfig
from reflexa.trainers.dataset import Example, to_records, write_dataset
from reflexa.trainers.train import train_adapter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="the prepared HF folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--commit", required=True)
    parser.add_argument("--suite", default="sums", choices=["sums", "arithmetic"])
    parser.add_argument("--grpo-steps", type=int, default=200)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="reflexa-gpu-"))
    settings = Settings(home=home, model=ModelSettings(path=args.model))
    items = BUILTIN[args.suite]().items
    train = [i for i in items if i.split == "train"]
    test = [i for i in items if i.split == "test"]
    sft_data = write_dataset(to_records([_gold(i) for i in train], "sft"), home / "sft", "sft")
    grpo_data = write_dataset([_prompt(i) for i in train], home / "grpo", "grpo")
    base = _score(args.model, None, test)
    doc: dict[str, Any] = {"suite": args.suite, "gpu": torch.cuda.get_device_name(),
                           "torch": torch.__version__,
                           "test_items": len(test), "test": {"base": base}}  # fmt: skip
    with Store.open(settings.database) as store:
        sft = _train(settings, store, sft_data, TrainConfig(method="sft"), None)
        doc["sft"] = sft
        doc["test"]["sft"] = _score(args.model, sft["path"], test)
        grpo_config = TrainConfig(
            method="grpo", batch_size=args.batch, grpo_generations=args.generations,
            max_steps=args.grpo_steps, min_examples=8,
        )  # fmt: skip
        grpo = _train(settings, store, grpo_data, grpo_config, sft["version"])
        doc["grpo"] = grpo
        doc["test"]["grpo"] = _score(args.model, grpo["path"], test)
    stamped = {"date": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
               "commit": {"sha": args.commit, "dirty": False},
               "machine": machine()} | doc  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.suite == "sums" else f"-{args.suite}"
    out = args.out / f"gpu-train{suffix}-{time.strftime('%Y-%m-%d')}.json"
    out.write_text(json.dumps(stamped, indent=2) + "\n")
    print(json.dumps(stamped["test"]), f"written to {out}")


def _gold(item: SuiteItem) -> Example:
    answer = gold_answer(item.scoring_specs()) or ""
    return Example(prompt_hash(item.user_prompt), item.user_prompt, answer, "gold",
                   justification="gold", correct=True)  # fmt: skip


def _prompt(item: SuiteItem) -> dict[str, Any]:
    """A label-free GRPO row: the visible check only (the arithmetic tool adds itself)."""
    return {"prompt": [{"role": "user", "content": item.user_prompt}],
            "checks": json.dumps(item.check_specs()), "scoring": "[]", "source": "prompt",
            "justification": "checks", "prompt_hash": prompt_hash(item.user_prompt),
            "episode_ids": []}  # fmt: skip


def _train(
    settings: Settings, store: Store, data: Path, config: TrainConfig, parent: str | None
) -> dict[str, Any]:
    gpu = torch.cuda.is_available()  # grpo_defaults_bench also trains on the CPU with it
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    row = train_adapter(settings.workspace(), store, data, config, parent=parent)
    train = row["metrics"]["train"]
    steps = train["loss"][-1]["step"] if train["loss"] else 0
    rewards = [e["reward"] for e in train["loss"] if "reward" in e]
    tenth = max(1, len(rewards) // 10)
    return {"version": row["version"], "path": row["path"], "steps": steps,
            "train_s": train["train_s"], "train_runtime_s": train["train_runtime_s"],
            "s_per_step": round(train["train_runtime_s"] / max(steps, 1), 3),
            "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if gpu else None,
            "loss_last": train["loss"][-1]["loss"] if train["loss"] else None,
            "reward_by_tenth": [round(sum(rewards[i:i + tenth]) / len(rewards[i:i + tenth]), 3)
                                for i in range(0, len(rewards), tenth)],
            "config": train["config"]}  # fmt: skip


def _score(model_dir: Path, adapter: str | None, items: list[SuiteItem]) -> float:
    """Test-split first-attempt pass by greedy decoding (scoring decides; no repairs)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token  # batches need one
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).cuda()
    if adapter:
        model = PeftModel.from_pretrained(model, adapter)
    chats = [[{"role": "user", "content": i.user_prompt}] for i in items]
    batch: Any = tokenizer.apply_chat_template(
        chats, add_generation_prompt=True, return_tensors="pt", padding=True, return_dict=True
    )
    batch = batch.to("cuda")
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=32, do_sample=False)
    answers = tokenizer.batch_decode(
        out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True
    )

    async def right() -> list[bool]:
        return await asyncio.gather(
            *(
                passes(i.scoring_specs(), i.user_prompt, a)
                for i, a in zip(items, answers, strict=True)
            )
        )

    return sum(asyncio.run(right())) / len(items)


if __name__ == "__main__":
    main()
