"""Reflection-loop benchmark: what the orchestration costs on top of the model.

    .venv/bin/python bench/reflect_bench.py [--episodes 32] [--max-tokens 64]

On the managed vLLM server (fresh REFLEXA_HOME under /tmp), with the real store and SQLite
checkpointer, all measured in one run on the same prompts (32 two-digit sums, each with a
grounded numeric check, no repairs, so every episode is one model call plus its checks):
  1. orchestrator overhead per episode: (wall - time waiting on the model) / wall, episodes
     run one after another;
  2. the same 32 episodes concurrently vs one after another (wall-clock speed-up);
  3. Reflexa's generated tokens/s vs the same requests sent straight to vLLM, both at
     concurrency 32, measured twice with the order of the sides swapped.
Equal work: memory is off (recalled examples would change the prompts and shorten the
answers), and the report counts how many answers the two sides share.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from openai import AsyncOpenAI

sys.path.insert(0, str(Path(__file__).parent.parent))
from bench.record import write_result
from reflexa.agent.app.agent import EpisodeRequest, EpisodeResult, open_agent
from reflexa.agent.model.connect import connect
from reflexa.agent.settings import load_settings
from reflexa.agent.store import open_store
from reflexa.graphs.prompts import SYSTEM

REFLEXA = str(Path(sys.executable).parent / "reflexa")


def requests(n: int) -> list[EpisodeRequest]:
    rng = random.Random(0)
    out = []
    for _ in range(n):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        check = {"type": "numeric", "expected": a + b}
        prompt = f"What is {a} + {b}? Reply with only the number."
        out.append(EpisodeRequest(prompt, [check], memory=False))
    return out


async def run_reflexa(
    settings, client, reqs, concurrent: bool
) -> tuple[float, list[EpisodeResult]]:  # type: ignore[no-untyped-def]
    with open_store(settings) as store:
        async with open_agent(settings, client, store) as agent:
            started = time.perf_counter()
            if concurrent:
                results = list(await asyncio.gather(*(agent.run(r) for r in reqs)))
            else:
                results = [await agent.run(r) for r in reqs]
            return time.perf_counter() - started, results


async def run_raw(
    url: str, model: str, reqs: list[EpisodeRequest], max_tokens: int
) -> tuple[float, list[tuple[str, int]]]:
    # Closed before its event loop ends (else "Event loop is closed" when it is collected).
    async with AsyncOpenAI(base_url=f"{url}/v1", api_key="EMPTY", timeout=600) as client:
        return await _raw(client, model, reqs, max_tokens)


async def _raw(
    client: AsyncOpenAI, model: str, reqs: list[EpisodeRequest], max_tokens: int
) -> tuple[float, list[tuple[str, int]]]:
    async def one(r: EpisodeRequest) -> tuple[str, int]:
        reply = await client.chat.completions.create(
            model=model,
            messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": r.prompt}],
            temperature=0,
            max_tokens=max_tokens,
        )
        return reply.choices[0].message.content or "", reply.usage.completion_tokens  # type: ignore[union-attr]

    started = time.perf_counter()
    answers = await asyncio.gather(*(one(r) for r in reqs))
    return time.perf_counter() - started, answers


def tokens(results: list[EpisodeResult]) -> int:
    return sum(a["completion_tokens"] for r in results for a in r.attempts)


def main(args: argparse.Namespace) -> None:
    home = Path(tempfile.mkdtemp(prefix="reflexa-bench-"))
    os.environ |= {
        "REFLEXA_HOME": str(home),
        "REFLEXA_SERVER__PORT": str(args.port),
        "REFLEXA_REFLECT__MAX_REPAIRS": "0",
        "REFLEXA_REFLECT__MAX_TOKENS": str(args.max_tokens),
    }
    settings = load_settings()
    client = connect(settings, log=lambda m: print(m, file=sys.stderr))
    reqs = requests(args.episodes)
    try:
        asyncio.run(run_reflexa(settings, client, reqs[:2], concurrent=False))  # warm-up
        seq_wall, seq = asyncio.run(run_reflexa(settings, client, reqs, concurrent=False))
        raw = lambda: asyncio.run(run_raw(client.url, client.model, reqs, args.max_tokens))  # noqa: E731
        con_wall_a, con = asyncio.run(run_reflexa(settings, client, reqs, concurrent=True))
        raw_wall_a, raw_answers = raw()
        raw_wall_b, _ = raw()  # the other order
        con_wall_b, _ = asyncio.run(run_reflexa(settings, client, reqs, concurrent=True))
    finally:
        subprocess.run([REFLEXA, "model", "stop"], check=False, capture_output=True)
    # An episode that errored never waited on the model; it is counted, not averaged.
    overheads = [(r.latency_s - r.model_s) / r.latency_s for r in seq if r.ok]
    con_wall, raw_wall = (con_wall_a + con_wall_b) / 2, (raw_wall_a + raw_wall_b) / 2
    raw_tokens = sum(n for _, n in raw_answers)
    same = sum(r.answer == a for r, (a, _) in zip(con, raw_answers, strict=True))
    report = {
        "bench": "reflect",
        "episodes": len(reqs),
        "statuses": {s: sum(r.status == s for r in con) for s in {r.status for r in con}},
        "errors": [r.error for r in seq + con if r.error],
        "overhead_sequential": {
            "mean_pct": round(100 * statistics.mean(overheads), 2),
            "p50_pct": round(100 * statistics.median(overheads), 2),
            "max_pct": round(100 * max(overheads), 2),
            "mean_episode_s": round(statistics.mean(r.latency_s for r in seq), 3),
        },
        "same_answers": f"{same}/{len(reqs)}",
        "walls_s": {
            "reflexa": [round(con_wall_a, 2), round(con_wall_b, 2)],
            "raw": [round(raw_wall_a, 2), round(raw_wall_b, 2)],
        },
        "sequential_wall_s": round(seq_wall, 2),
        "concurrent_wall_s": round(con_wall, 2),
        "concurrency_speedup": round(seq_wall / con_wall, 2),
        "reflexa_tok_s": round(tokens(con) / con_wall, 1),
        "raw_vllm_tok_s": round(raw_tokens / raw_wall, 1),
        "tok_s_ratio": round((tokens(con) / con_wall) / (raw_tokens / raw_wall), 3),
        "reflexa_tokens": tokens(con),
        "raw_tokens": raw_tokens,
    }
    print(f"written to {write_result('reflect', report)}")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--port", type=int, default=8078)
    main(parser.parse_args())
