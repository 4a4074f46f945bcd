"""API benchmark: `reflexa serve` (reflection off) vs straight to vLLM, same prompts.

    .venv/bin/python bench/api_bench.py [--requests 64] [--concurrency 16] [--rounds 2]

A fresh REFLEXA_HOME under /tmp, the managed vLLM server, and `reflexa serve` in front of it
with repairs off (`reflexa.max_repairs` 0) and no judge, so each request is one model call
plus Reflexa's checks, recording and checkpointing. Both sides get the same two-digit-sum
prompts (temperature 0, max_tokens 32; the direct side adds the system prompt Reflexa adds,
so the model sees the same input) from 16 concurrent OpenAI SDK clients; the sides
alternate for `--rounds` rounds. Reported per side: p50/p95 latency and requests/s, and the
overhead (1 - reflexa req/s / vLLM req/s; target <= 10 %).
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

import httpx
from openai import AsyncOpenAI

sys.path.insert(0, str(Path(__file__).parent.parent))
from bench.record import write_result
from reflexa.graphs.prompts import SYSTEM
from tests.helpers import free_port

MODEL = "smollm2-135m-instruct"


def prompts(n: int) -> list[str]:
    rng = random.Random(0)
    return [f"What is {rng.randint(10, 99)} + {rng.randint(10, 99)}? Reply with only the number."
            for _ in range(n)]  # fmt: skip


def messages(text: str, reflexa: bool) -> list[dict[str, str]]:
    """What the model sees: Reflexa adds its system prompt, so the direct side sends it too."""
    user = [{"role": "user", "content": text}]
    return user if reflexa else [{"role": "system", "content": SYSTEM}, *user]


async def race(base_url: str, texts: list[str], concurrency: int, reflexa: bool) -> dict:
    limit = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    extra = {"reflexa": {"max_repairs": 0, "memory": False}} if reflexa else {}

    async def one(text: str) -> None:
        async with limit:
            started = time.perf_counter()
            await client.chat.completions.create(
                model=MODEL, messages=messages(text, reflexa), max_tokens=32,
                temperature=0, extra_body=extra,
            )  # fmt: skip
            latencies.append(time.perf_counter() - started)

    async with AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=300) as client:
        started = time.perf_counter()
        await asyncio.gather(*(one(t) for t in texts))
        wall = time.perf_counter() - started
    latencies.sort()
    return {
        "requests_per_s": round(len(texts) / wall, 3),
        "p50_s": round(statistics.median(latencies), 3),
        "p95_s": round(latencies[int(0.95 * (len(latencies) - 1))], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="reflexa-api-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFLEXA_")}
    env |= {"REFLEXA_HOME": str(home), "REFLEXA_SERVER__PORT": str(free_port()),
            "REFLEXA_REFLECT__JUDGE": "false"}  # fmt: skip
    cli = [sys.executable, "-m", "reflexa.agent"]
    vllm = json.loads(subprocess.run([*cli, "model", "serve", "--json"], env=env, check=True,
                                     capture_output=True, text=True).stdout)["url"]  # fmt: skip
    port = free_port()
    serve = subprocess.Popen([*cli, "serve", "--port", str(port)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    reflexa = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if httpx.get(f"{reflexa}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        texts = prompts(args.requests)
        asyncio.run(race(f"{vllm}/v1", texts[:8], 8, False))  # warm-up, both paths
        asyncio.run(race(f"{reflexa}/v1", texts[:8], 8, True))
        rounds = []
        for r in range(args.rounds):
            direct = asyncio.run(race(f"{vllm}/v1", texts, args.concurrency, False))
            through = asyncio.run(race(f"{reflexa}/v1", texts, args.concurrency, True))
            rounds.append({"vllm": direct, "reflexa": through})
            print(f"round {r + 1}: vLLM {direct}, reflexa serve {through}")
    finally:
        serve.terminate()
        serve.wait(timeout=30)
        subprocess.run([*cli, "model", "stop"], env=env, check=False, capture_output=True)
    rps = {side: statistics.median(r[side]["requests_per_s"] for r in rounds)
           for side in ("vllm", "reflexa")}  # fmt: skip
    result = {
        "benchmark": "api",
        "requests": args.requests,
        "concurrency": args.concurrency,
        "rounds": rounds,
        "overhead": round(1 - rps["reflexa"] / rps["vllm"], 4),
    }
    out = write_result("api", result)
    print(json.dumps({"requests_per_s": rps, "overhead": result["overhead"]}))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
