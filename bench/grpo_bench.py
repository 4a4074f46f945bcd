"""GRPO on this machine: step time, peak memory and the reward curve of `reflexa train
--method grpo` on the bundled model.

    .venv/bin/python -m bench.grpo_bench [--steps 10] [--generations 4 8]
    .venv/bin/python -m bench.grpo_bench --after-demo sums --steps 30 --generations 4
    .venv/bin/python -m bench.grpo_bench --after-demo sums --steps 50 --generations 8 --batch 32

In a fresh home, for each group size: 64 two-digit sum prompts ("What is 23 + 45? Reply with
only the number.") rewarded by the loop's verifiers with no label (the strict number check
and the arithmetic tool), `--batch` completions a step (8 by default: 8 / G prompts),
completions of up to 64 tokens, `--steps` optimizer steps, in its own `reflexa train`
process. Reported: seconds per step (the trainer's runtime over its steps), the trainer
process's peak RSS, the mean reward per step. `--after-demo SUITE`: instead, the gold-backed
demo first (one SFT cycle, promoted), then GRPO continuing that adapter on the suite's
training prompts with no label (`failures export --format grpo --no-gold`: the visible
checks and the tools), then both adapters' first-attempt pass on the suite's test split (no
reflection, no memory). Writes bench/results/grpo-DATE.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

from bench.home import fresh_home
from bench.record import write_result
from reflexa.evals.contamination import prompt_hash
from reflexa.trainers.dataset import write_dataset

STRICT = '[{"type": "numeric", "strict": true}]'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--generations", nargs="+", type=int, default=[4, 8])
    parser.add_argument("--batch", type=int, default=8, help="completions per step")
    parser.add_argument("--after-demo", choices=["sums", "arithmetic", "json-extract"])
    args = parser.parse_args()
    home, env = fresh_home("grpo", 8013)
    runs = []
    try:
        run(env, "model", "prepare")  # the model, converted once into this home
        data = write_dataset(rows(), home / "grpo-data", "grpo")
        if args.after_demo:
            demo = [sys.executable, "-m", "reflexa.agent.demo", "--suite", args.after_demo]
            subprocess.run(demo, env=env, check=True, stdout=sys.stderr)
            data = home / "grpo-suite"
            run(env, "failures", "export", "--format", "grpo", "--no-gold", "--out", str(data))
        for g in args.generations:
            config = home / f"grpo-{g}.yaml"
            config.write_text(f"method: grpo\ngrpo_batch_size: {args.batch}\n"
                              f"grpo_generations: {g}\ngrpo_max_completion: 64\n"
                              "min_examples: 8\n")  # fmt: skip
            row, peak = run(env, "train", "--dataset", str(data), "--train-config", str(config),
                            "--max-steps", str(args.steps))  # fmt: skip
            train = row["metrics"]["train"]
            runs.append({
                "generations": g, "steps": args.steps, "batch_size": args.batch,
                "max_completion": 64,
                "seconds_per_step": round(train["train_runtime_s"] / args.steps, 2),
                "train_s": train["train_s"],
                "peak_rss_mib": peak,
                "reward": [p.get("reward") for p in train["loss"]],
            })  # fmt: skip
            if args.after_demo:
                runs[-1] |= compare(env, args.after_demo, row)
            print(json.dumps(runs[-1]), file=sys.stderr)
    finally:
        if args.after_demo:
            subprocess.run([sys.executable, "-m", "reflexa.agent", "model", "stop"], env=env)
        shutil.rmtree(home, ignore_errors=True)
    start = f"the {args.after_demo} demo's SFT adapter" if args.after_demo else "base"
    print(f"written to {write_result('grpo', {'model': start, 'runs': runs})}")


def compare(env: dict[str, str], suite: str, grpo: dict) -> dict:
    """First-attempt pass on the suite's test split: the SFT parent against its GRPO child."""
    rates = {}
    for adapter in (grpo["parent"], grpo["version"]):
        done, _ = run(env, "eval", "run", suite, "--split", "test", "--no-reflect",
                      "--no-memory", "--adapter", adapter)  # fmt: skip
        rates[adapter] = done["metrics"]["overall"]["first_attempt_pass"]["rate"]
    return {"parent": grpo["parent"], "test_first_pass": rates}


def rows() -> list[dict]:
    return [
        {"prompt": [{"role": "user", "content": f"What is {a} + {b}? Reply with only the number."}],
         "checks": STRICT, "scoring": "[]", "source": "prompt", "justification": "checks",
         "prompt_hash": prompt_hash(f"{a}+{b}"), "episode_ids": []}
        for a, b in zip(range(10, 74), range(89, 25, -1), strict=True)
    ]  # fmt: skip


def run(env: dict[str, str], *args: str) -> tuple[dict, int]:
    """The command's JSON, and its peak RSS in MiB (sampled every 0.2 s)."""
    command = [sys.executable, "-m", "reflexa.agent", *args, "--json"]
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    watched, peak = psutil.Process(child.pid), 0
    while child.poll() is None:
        with contextlib.suppress(psutil.Error):
            peak = max(peak, watched.memory_info().rss)
        time.sleep(0.2)
    out = child.stdout.read() if child.stdout else ""
    if child.returncode != 0:
        raise SystemExit(f"`reflexa {' '.join(args)}` failed (exit {child.returncode})")
    return json.loads(out), round(peak / 2**20)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent.parent))
    main()
