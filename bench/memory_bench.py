"""Recall latency at 10k stored corrections, alone and as a share of real episodes.

1. A store with N verified corrections (json-extract-like and arithmetic-like prompts that
   are not held-out items), written through the store's own correction path.
2. Recall alone: `Memory.recall` on the held-out prompts of both suites (p50/p95).
3. In episodes: `reflexa eval run` on held-out items with memory on, against the real vLLM
   server; each episode's trace has the recall time, compared with its wall time.

    python bench/memory_bench.py [--memories 10000] [--episodes 100]

Writes bench/results/memory-DATE.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.record import write_result
from reflexa.agent.app.memory import Memory, token_counter
from reflexa.agent.settings import load_settings
from reflexa.agent.store import Store, prompt_hash
from reflexa.evals.builtin import BUILTIN
from reflexa.evals.builtin.arithmetic import OPS
from reflexa.evals.builtin.arithmetic import PROMPT as SUM_PROMPT
from reflexa.evals.builtin.json_extract import CITIES, FIRST, LAST, SENTENCES
from reflexa.evals.builtin.json_extract import PROMPT as JSON_PROMPT


def corrections(n: int, protected: set[str]) -> list[tuple[str, str]]:
    """`n` distinct (prompt, answer) pairs, none of them a held-out item."""
    rng = random.Random(7)
    out: dict[str, str] = {}
    while len(out) < n:
        if rng.random() < 0.5:
            name, age = f"{rng.choice(FIRST)} {rng.choice(LAST)}", rng.randint(18, 90)
            sentence = rng.choice(SENTENCES).format(name=name, age=age, city=rng.choice(CITIES))
            prompt = JSON_PROMPT.format(sentence=sentence)
            answer = json.dumps({"name": name, "age": age})
        else:
            a, b, op = rng.randint(10, 99), rng.randint(10, 99), rng.choice("+-*")
            prompt, answer = SUM_PROMPT.format(a=a, op=op, b=b), str(OPS[op](a, b))
        if prompt_hash(prompt) not in protected:
            out[prompt] = answer
    return list(out.items())


def percentiles(values: list[float]) -> dict[str, float]:
    q = statistics.quantiles(values, n=20)
    return {"p50": round(statistics.median(values), 5), "p95": round(q[18], 5)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--memories", type=int, default=10_000)
    parser.add_argument("--episodes", type=int, default=100)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="reflexa-memory-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFLEXA_")}
    env |= {"REFLEXA_HOME": str(home), "REFLEXA_REFLECT__MAX_TOKENS": "128"}
    os.environ.update(env)
    settings = load_settings()
    reflexa = [sys.executable, "-m", "reflexa.agent"]
    subprocess.run([*reflexa, "model", "prepare"], env=env, check=True)

    suites = [BUILTIN["json-extract"](), BUILTIN["arithmetic"]()]
    heldout = [i.user_prompt for s in suites for i in s.items if i.split == "test"]
    started = time.perf_counter()
    with Store.open(settings.database, memory_limit=args.memories) as store:
        protected = {prompt_hash(p) for p in heldout}
        for prompt, answer in corrections(args.memories, protected):
            store.add_correction(None, prompt=prompt, rejected="?", chosen=answer,
                                 source="user", verified=True)  # fmt: skip
        stored = len(store.memories())
        fill_s = time.perf_counter() - started
        memory = Memory(store, settings.memory, token_counter(settings.model_dir))
        memory.recall(heldout[0])  # warm the page cache
        alone = [memory.recall(p).seconds for p in heldout]
    print(f"{stored} memories stored in {fill_s:.0f} s; recall alone p50 "
          f"{statistics.median(alone) * 1000:.1f} ms")  # fmt: skip

    subprocess.run([*reflexa, "model", "serve"], env=env, check=True)
    try:
        run = subprocess.run(
            [*reflexa, "eval", "run", "json-extract", "--split", "test", "--no-reflect",
             "--limit", str(args.episodes), "--json"],
            env=env, check=True, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
    finally:
        subprocess.run([*reflexa, "model", "stop"], env=env, check=False)
    run_id = json.loads(run.stdout)["run_id"]
    with sqlite3.connect(home / "reflexa.db") as db:
        rows = db.execute(
            "select e.latency_s, a.memory from episodes e join attempts a on a.episode_id = e.id"
            " where e.eval_run_id = ? and a.\"index\" = 0", (run_id,),
        ).fetchall()  # fmt: skip
    recall_s = [json.loads(m)["seconds"] for _, m in rows]
    share = [json.loads(m)["seconds"] / latency for latency, m in rows]
    recalled = sum(bool(json.loads(m)["used"]) for _, m in rows)
    result = {
        "benchmark": "memory-recall",
        "memories": stored,
        "fill_s": round(fill_s, 1),
        "recall_alone_s": percentiles(alone) | {"queries": len(alone)},
        "episodes": len(rows),
        "episodes_with_recall": recalled,
        "recall_in_episode_s": percentiles(recall_s),
        "episode_latency_s": percentiles([latency for latency, _ in rows]),
        "recall_share_of_episode": percentiles(share),
    }
    out = write_result("memory", result)
    print(json.dumps({k: result[k] for k in ("recall_alone_s", "recall_in_episode_s",
                                             "recall_share_of_episode")}))  # fmt: skip
    print(f"written to {out}")


if __name__ == "__main__":
    main()
