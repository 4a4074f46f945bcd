"""Two managed vLLM replicas against one, on this machine (issue 27's throughput ratio).

    .venv/bin/python bench/replica_bench.py [--clients 16] [--requests 64] [--max-tokens 64]

One server (`reflexa model serve`), then two (`--replicas 2`, each computing on its own
core), on the bundled model in a fresh REFLEXA_HOME (`bench/home.py`). Each side gets the same
`--requests` chat requests from `--clients` concurrent clients through Reflexa's client
(with two, its spreading transport), each generating exactly `--max-tokens` tokens
(ignore_eos). Reports output tokens/s, the ratio two/one, and each replica's share of the
requests. Run it on an idle machine: anything else running shares the cores.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))  # run as a file: bench/ and tests/
from bench.home import fresh_home
from bench.record import write_result
from reflexa.agent.model.client import ModelClient
from reflexa.agent.settings import ModelSettings

REFLEXA = str(Path(sys.executable).parent / "reflexa")
PORT = 8230  # replica i on PORT + i


def reflexa(*args: str, env: dict[str, str]) -> None:
    subprocess.run([REFLEXA, *args], env=env, check=True, capture_output=True, text=True)


async def load(client: ModelClient, clients: int, requests: int, max_tokens: int) -> float:
    """Output tokens/s for `requests` requests from `clients` at once."""
    limit = asyncio.Semaphore(clients)
    body = {"model": client.model, "max_tokens": max_tokens, "ignore_eos": True,
            "messages": [{"role": "user", "content": "Tell me a long story."}]}  # fmt: skip

    async def one(http: object, i: int) -> int:
        async with limit:
            r = await http.post(f"{client.url}/v1/chat/completions",  # type: ignore[attr-defined]
                                json=body | {"seed": i})  # fmt: skip
        r.raise_for_status()
        return int(r.json()["usage"]["completion_tokens"])

    async with client.async_http(timeout=600) as http:
        started = time.perf_counter()
        tokens = await asyncio.gather(*(one(http, i) for i in range(requests)))
        return sum(tokens) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    _, env = fresh_home("replicas", PORT)
    reflexa("model", "prepare", env=env)  # a no-op where `make demo` prepared it
    sides = {}
    for n in (1, 2):
        print(f"replica_bench: {n} replica(s)", file=sys.stderr, flush=True)
        reflexa("model", "serve", "--replicas", str(n), env=env)
        try:
            urls = [f"http://127.0.0.1:{PORT + i}" for i in range(n)]
            client = ModelClient.over(urls, ModelSettings().name, "EMPTY", 600)
            asyncio.run(load(client, 2, 4, 8))  # warm-up
            if client.replicas:
                client.replicas.sent = dict.fromkeys(urls, 0)
            tps = asyncio.run(load(client, args.clients, args.requests, args.max_tokens))
            share = (
                {u: c / args.requests for u, c in client.replicas.sent.items()}
                if client.replicas
                else {urls[0]: 1.0}
            )
            sides[n] = {"tokens_per_s": round(tps, 1), "share": share}
            print(f"replica_bench: {n}: {tps:.1f} tok/s, share {share}", file=sys.stderr)
        finally:
            reflexa("model", "stop", env=env)
    path = write_result(
        "replicas",
        {
            "args": vars(args),
            "one": sides[1],
            "two": sides[2],
            "ratio_two_over_one": round(sides[2]["tokens_per_s"] / sides[1]["tokens_per_s"], 2),
        },
    )
    print(path)


if __name__ == "__main__":
    main()
