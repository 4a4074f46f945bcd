"""Training benchmark: `reflexa train` vs a plain TRL script, same data and config.

    .venv/bin/python bench/train_bench.py [--steps 16] [--rounds 3]

Both sides train a LoRA (r=16, q/k/v/o, batch 8, lr 2e-4, float32 on the CPU) for the same
number of steps on the same 64 prompt/completion rows (two-digit sums), each in a fresh
process, alternating A, B, A, B… so drift hits both. Samples/s is the trainer's own
`train_samples_per_second` (the `trainer.train()` call only, model loading excluded) on both
sides. Reported: the median per side and reflexa / plain (target >= 0.95).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))
from bench.record import write_result
from reflexa.trainers.dataset import Example, to_records, write_dataset

# The plain side: what a user would write with TRL and PEFT directly.
PLAIN = """
import json, sys, torch
from datasets import load_from_disk
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

model_dir, data_dir, out, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
rows = load_from_disk(data_dir)
rows = rows.map(lambda r: {"prompt": r["messages"][:-1], "completion": r["messages"][-1:]},
                remove_columns=rows.column_names)
trainer = SFTTrainer(
    model=AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
    args=SFTConfig(output_dir=out, per_device_train_batch_size=8, max_steps=steps,
                   learning_rate=2e-4, max_length=512, logging_steps=1, save_strategy="no",
                   report_to="none", use_cpu=True, bf16=False, gradient_checkpointing=False,
                   completion_only_loss=True, disable_tqdm=True, seed=0),
    train_dataset=rows,
    processing_class=AutoTokenizer.from_pretrained(model_dir),
    peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05,
                           target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                           task_type="CAUSAL_LM"),
)
metrics = trainer.train().metrics
print(json.dumps({"samples_per_s": metrics["train_samples_per_second"]}))
"""


def dataset(out: Path) -> Path:
    examples = [
        Example(f"h{a}", f"What is {a} + {a + 7}? Reply with only the number.", str(2 * a + 7),
                "gold")
        for a in range(10, 74)
    ]  # fmt: skip
    return write_dataset(to_records(examples, "sft"), out, "sft")


def run_reflexa(env: dict[str, str], data: Path, config: Path) -> float:
    out = subprocess.run(
        [sys.executable, "-m", "reflexa.agent", "train", "--dataset", str(data), "--train-config",
         str(config), "--json"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return float(json.loads(out)["metrics"]["train"]["samples_per_s"])


def run_plain(env: dict[str, str], model_dir: Path, data: Path, work: Path, steps: int) -> float:
    out = subprocess.run(
        [sys.executable, "-c", PLAIN, str(model_dir), str(data), str(work), str(steps)],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return float(json.loads(out.strip().splitlines()[-1])["samples_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="reflexa-train-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFLEXA_")}
    env["REFLEXA_HOME"] = str(home)
    prepared = subprocess.run([sys.executable, "-m", "reflexa.agent", "model", "prepare", "--json"],
                              env=env, capture_output=True, text=True, check=True)  # fmt: skip
    model_dir = Path(json.loads(prepared.stdout)["path"])
    data = dataset(home / "data")
    config = home / "train.yaml"
    config.write_text(f"max_steps: {args.steps}\nmin_examples: 8\n")
    reflexa, plain = [], []
    for r in range(args.rounds):
        reflexa.append(run_reflexa(env, data, config))
        plain.append(run_plain(env, model_dir, data, home / f"plain-{r}", args.steps))
        print(f"round {r + 1}: reflexa {reflexa[-1]:.2f} samples/s, plain TRL {plain[-1]:.2f}")
    result = {
        "benchmark": "train",
        "steps": args.steps,
        "batch_size": 8,
        "reflexa_samples_per_s": reflexa,
        "plain_samples_per_s": plain,
        "reflexa_median": statistics.median(reflexa),
        "plain_median": statistics.median(plain),
        "ratio": round(statistics.median(reflexa) / statistics.median(plain), 3),
    }
    out = write_result("train", result)
    print(json.dumps({k: result[k] for k in ("reflexa_median", "plain_median", "ratio")}))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
