"""Choosing GRPO's defaults on dev: from one gold SFT adapter on a suite's training split,
label-free GRPO (reward: the strict number check and the arithmetic tool) with each candidate
group size, completions per step and step count, each scored on the dev split (the gate's
split: `test` never decides anything) by greedy decoding in transformers, with the product's
trainer (`train_adapter`). Runs on a GPU when there is one, else the CPU; resumes after a
kill: each finished part (the SFT adapter, each configuration's score) is kept in --work.

    python -m bench.grpo_defaults_bench [--suite sums] [--configs 4x8:240 8x32:60]
        [--work .bench-work/grpo-defaults]

A configuration `GxB:S` is groups of G completions, B completions a step, S steps; the
defaults compared at equal completions (1,920 each) are the two the GPU runs tried. Writes
bench/results/grpo-defaults-DATE.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

import torch

from bench.gpu_train_bench import _gold, _prompt, _train
from bench.record import write_result
from reflexa.agent.model.prepare import prepare_model
from reflexa.agent.settings import Settings
from reflexa.agent.store import Store
from reflexa.evals.builtin import BUILTIN
from reflexa.evals.suite import SuiteItem
from reflexa.evals.verify import passes
from reflexa.trainers.config import TrainConfig
from reflexa.trainers.dataset import to_records, write_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="sums", choices=["sums", "arithmetic"])
    parser.add_argument("--configs", nargs="+", default=["4x8:240", "8x32:60"])
    parser.add_argument("--work", type=Path, default=Path(".bench-work/grpo-defaults"))
    args = parser.parse_args()
    work = args.work.resolve()
    settings = Settings(home=work / "home")  # the bundled model, prepared into it
    prepare_model(settings.model_dir)  # converted once, then verified
    progress = work / "progress.json"  # what finished, so a rerun goes on from there
    done: dict[str, Any] = json.loads(progress.read_text()) if progress.is_file() else {}
    items = BUILTIN[args.suite]().items
    train = [i for i in items if i.split == "train"]
    dev = [i for i in items if i.split == "dev"]

    def keep(key: str, value: Any) -> None:
        done[key] = value
        progress.write_text(json.dumps(done, indent=2))

    with Store.open(settings.database) as store:
        if "base" not in done:
            keep("base", score(settings.model_dir, None, dev))
        if "sft" not in done:
            data = write_dataset(to_records([_gold(i) for i in train], "sft"), work / "sft", "sft")
            sft = _train(settings, store, data, TrainConfig(method="sft"), None)
            keep("sft", sft | {"dev": score(settings.model_dir, sft["path"], dev)})
        print(f"dev: base {done['base']:.0%}, sft {done['sft']['dev']:.0%}", flush=True)
        grpo_data = work / "grpo"
        if not grpo_data.is_dir():
            write_dataset([_prompt(i) for i in train], grpo_data, "grpo")
        for spec in args.configs:
            if spec in done:
                continue
            group, batch, steps = parse(spec)
            config = TrainConfig(method="grpo", grpo_generations=group, grpo_batch_size=batch,
                                 max_steps=steps, min_examples=8)  # fmt: skip
            run = _train(settings, store, grpo_data, config, done["sft"]["version"])
            keep(spec, run | {"dev": score(settings.model_dir, run["path"], dev)})
            print(f"{spec}: dev {done[spec]['dev']:.0%}, {run['s_per_step']} s a step", flush=True)
    doc = {"suite": args.suite, "split": "dev", "dev_items": len(dev),
           "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
           "torch": torch.__version__, "base": done["base"], "sft": done["sft"],
           "grpo": {spec: done[spec] for spec in args.configs}}  # fmt: skip
    best = max(args.configs, key=lambda spec: done[spec]["dev"])
    print(f"best on dev: {best}; written to {write_result('grpo-defaults', doc)}")


def parse(spec: str) -> tuple[int, int, int]:
    """`GxB:S` → (group, completions a step, steps)."""
    shape, steps = spec.split(":")
    group, batch = shape.split("x")
    return int(group), int(batch), int(steps)


def score(model_dir: Path, adapter: str | None, items: list[SuiteItem]) -> float:
    """First-attempt pass by greedy decoding, by the items' scoring (no repairs, no memory)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gpu = torch.cuda.is_available()
    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token  # batches need one
    model: Any = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.bfloat16 if gpu else torch.float32
    ).to("cuda" if gpu else "cpu")
    if adapter:
        model = PeftModel.from_pretrained(model, adapter)
    chats = [[{"role": "user", "content": i.user_prompt}] for i in items]
    batch: Any = tokenizer.apply_chat_template(
        chats, add_generation_prompt=True, return_tensors="pt", padding=True, return_dict=True
    )
    batch = batch.to(model.device)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=32, do_sample=False)
    answers = tokenizer.batch_decode(
        out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True
    )

    async def right() -> list[bool]:
        checks = [
            passes(i.scoring_specs(), i.user_prompt, a) for i, a in zip(items, answers, strict=True)
        ]
        return await asyncio.gather(*checks)

    return sum(asyncio.run(right())) / len(items)


if __name__ == "__main__":
    main()
