"""Serving benchmark for the bundled model on the managed vLLM server.

    .venv/bin/python bench/serve_bench.py [--requests 6] [--max-tokens 128] [--out bench/results]
        [--streams 1 8] [--cpu-bind auto all] [--gate-like] [--merged [--clients 16]]

Measures: seconds from `reflexa model serve` to healthy, resident memory of the server's
process group (RSS and PSS), and output tokens/s single-stream and with 8 concurrent
requests, on the base model and through a rank-8 LoRA adapter. Each request generates
exactly --max-tokens tokens (ignore_eos), so tokens/s do not depend on what the model says.
Uses a fresh REFLEXA_HOME under /tmp with the model prepared in it (about 30 s, not timed).
With `--gate-like` the requests look like a gate's: a long prompt (about 1,050 tokens, as
recalled memories make it), a short answer (16 tokens) and 5 answers a request (`n`), through
a rank-16 adapter on q/k/v/o as the trainer makes; prompt tokens/s are reported beside output
tokens/s. With several `--cpu-bind` values (`[server] cpu_bind`), the server is measured
under each in turn, side by side in one run (`by_cpu_bind`).

With `--merged` the adapter is also promoted (`[server] merge_promoted`: a server of its
merged weights takes the default's requests) and measured there, beside base and LoRA in the
same run; then `--clients` (16) clients stream through `reflexa serve` while the default is
switched three times (promote the adapter, promote a second one, roll back): failed requests
and the seconds each switch took are reported (`switch`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from openai import OpenAI

sys.path.insert(0, str(Path(__file__).parent.parent))  # run as a file: bench/ and tests/
from bench.home import register
from bench.record import write_result

REFLEXA = str(Path(sys.executable).parent / "reflexa")
PROMPT = "Write a short story about a lighthouse keeper who learns from his mistakes."
QKVO = ("q_proj", "k_proj", "v_proj", "o_proj")
# A gate-like prompt: worked examples before the question, as recall puts memories there.
GATE_PROMPT = (
    "Earlier answers that passed their checks:\n"
    + "".join(f"- What is {i} + {2 * i + 7}? {3 * i + 7}. The sum is found digit by digit.\n"
              for i in range(11, 51))
    + "Now: What is 48 + 37 + 112? Reply with only the number."
)  # fmt: skip


def reflexa(*args: str, env: dict[str, str]) -> str:
    return subprocess.run(
        [REFLEXA, *args], env=env, check=True, capture_output=True, text=True
    ).stdout


def group_memory_mib(pgid: int) -> dict[str, float]:
    rss = pss = 0
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            rollup = (proc / "smaps_rollup").read_text().splitlines()
        except (OSError, IndexError, ValueError):
            continue
        fields = {line.split(":")[0]: int(line.split()[1]) for line in rollup[1:]}
        rss += fields.get("Rss", 0)
        pss += fields.get("Pss", 0)
    return {"rss_mib": round(rss / 1024), "pss_mib": round(pss / 1024)}


def tokens_per_s(
    client: OpenAI, model: str, concurrency: int, requests: int, max_tokens: int, gate: bool
) -> dict:
    def one(_: int) -> tuple[int, float, int]:
        started = time.perf_counter()
        reply = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": GATE_PROMPT if gate else PROMPT}],
            max_tokens=max_tokens,
            temperature=0.7,
            n=5 if gate else 1,
            extra_body={"ignore_eos": True},
        )
        usage = reply.usage
        assert usage is not None
        return usage.completion_tokens, time.perf_counter() - started, usage.prompt_tokens

    one(0)  # warm-up
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, range(requests * concurrency)))
    wall = time.perf_counter() - started
    tokens = sum(t for t, _, _ in results)
    prompt_tokens = sum(p for _, _, p in results)
    per_stream = [t / s for t, s, _ in results]
    return {
        "concurrency": concurrency,
        "requests": len(results),
        "output_tokens": tokens,
        "aggregate_tok_s": round(tokens / wall, 1),
        "per_request_tok_s_median": round(statistics.median(per_stream), 1),
        "prompt_tokens": prompt_tokens,
        "prompt_tok_s": round(prompt_tokens / wall, 1),
        "requests_per_s": round(len(results) / wall, 2),
    }


def serve_once(env: dict[str, str], home: Path, args: argparse.Namespace) -> dict:
    """Start the server as `env` says, measure it, stop it."""
    try:
        started = time.perf_counter()
        reflexa("model", "serve", env=env)
        startup_s = time.perf_counter() - started
        status = json.loads(reflexa("model", "status", "--json", env=env))
        idle_memory = group_memory_mib(status["pid"])
        client = OpenAI(base_url=f"{status['url']}/v1", api_key="EMPTY", timeout=600)

        from reflexa.agent.model.client import ModelClient
        from tests.helpers import make_lora

        shape = {"rank": 16, "modules": QKVO} if args.gate_like else {}
        adapter_dir = make_lora(home / "models" / "SmolLM2-135M-Instruct", home / "lora", **shape)
        adapter = ModelClient(status["url"], status["model"]).load_adapter(adapter_dir)

        runs = []
        lora = "lora-r16-qkvo" if args.gate_like else "lora-r8"
        served = [(client, status["model"], "base"), (client, adapter, lora)]
        if args.merged:
            register(home, adapter_dir, "v1")
            reflexa("adapters", "promote", "v1", env=env)
            merged = json.loads(reflexa("model", "status", "--json", env=env))["merged"]
            assert merged["model"] == adapter, merged
            at = OpenAI(base_url=f"{merged['url']}/v1", api_key="EMPTY", timeout=600)
            served.append((at, adapter, "merged"))
        for at, model, label in served:
            for concurrency in args.streams:
                result = tokens_per_s(
                    at, model, concurrency, args.requests, args.max_tokens, args.gate_like
                )
                runs.append({"model": label, **result})
                print(json.dumps(runs[-1]), file=sys.stderr)
        loaded_memory = group_memory_mib(status["pid"])
        merged_memory = group_memory_mib(merged["pid"]) if args.merged else None
        switch = switches(env, home, args) if args.merged and args.clients else None
    finally:
        reflexa("model", "stop", env=env)
    return {
        "startup_to_healthy_s": round(startup_s, 1),
        "memory_idle": idle_memory,
        "memory_after_load": loaded_memory,
        "runs": runs,
    } | ({"memory_merged_server": merged_memory, "switch": switch} if args.merged else {})


def switches(env: dict[str, str], home: Path, args: argparse.Namespace) -> dict:
    """Clients streaming through `reflexa serve` while the default switches: v1 is promoted
    (merged) already; promote v2, roll back to v1, roll back to the base model."""
    from tests.helpers import make_lora, streaming

    model_dir = home / "models" / "SmolLM2-135M-Instruct"
    register(home, make_lora(model_dir, home / "lora-2", seed=1), "v2")
    port = args.port + 100
    api = subprocess.Popen([REFLEXA, "serve", "--port", str(port)], env=env | {
        "REFLEXA_REFLECT__MAX_TOKENS": "16"}, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    while not _healthy(url):
        time.sleep(0.5)
    failures: list[str] = []
    done = threading.Event()

    seconds = {}
    try:
        with ThreadPoolExecutor(args.clients) as pool:
            streams = [pool.submit(streaming, url, done, failures) for _ in range(args.clients)]
            for move in (("promote", "v2"), ("rollback",), ("rollback",)):
                started = time.perf_counter()
                reflexa("adapters", *move, env=env)
                seconds[" ".join(move) + f" ({len(seconds) + 1})"] = round(
                    time.perf_counter() - started, 1
                )
                print(f"switch {move}: {seconds}", file=sys.stderr)
            done.set()
            sent = sum(s.result() for s in streams)
    finally:
        done.set()
        api.terminate()
        api.wait(timeout=60)
    return {"clients": args.clients, "requests": sent, "failed": len(failures),
            "failures": failures[:3], "seconds": seconds}  # fmt: skip


def _healthy(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def main(args: argparse.Namespace) -> None:
    home = Path(tempfile.mkdtemp(prefix="reflexa-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFLEXA_")}
    env |= {"REFLEXA_HOME": str(home), "REFLEXA_SERVER__PORT": str(args.port)}
    reflexa("model", "prepare", env=env)
    by_bind = {}
    for bind in args.cpu_bind:  # side by side, one server at a time
        print(f"cpu_bind = {bind}", file=sys.stderr)
        by_bind[bind] = serve_once(env | {"REFLEXA_SERVER__CPU_BIND": bind}, home, args)
    first = by_bind[args.cpu_bind[0]]
    report = {"bench": "serve", "max_tokens": args.max_tokens, "gate_like": args.gate_like,
              "merged": args.merged} | first  # fmt: skip
    if len(by_bind) > 1:
        report["by_cpu_bind"] = by_bind
    args.out.mkdir(parents=True, exist_ok=True)
    kind = "serve-gate" if args.gate_like else "serve-merged" if args.merged else "serve"
    path = write_result(kind, report, args.out)
    print(json.dumps(report, indent=2))
    print(f"written to {path}", file=sys.stderr)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=4, help="Requests per stream.")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--port", type=int, default=8077)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 8])
    parser.add_argument(
        "--cpu-bind", nargs="+", default=["auto"], help="[server] cpu_bind values to compare."
    )
    parser.add_argument(
        "--gate-like", action="store_true", help="Long prompts, short answers, n=5, rank 16."
    )
    parser.add_argument(
        "--merged", action="store_true", help="Also the promoted adapter merged, and switches."
    )
    parser.add_argument(
        "--clients", type=int, default=16, help="Streaming through switches (0: no switches)."
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parsed = parser.parse_args()
    if parsed.merged and len(parsed.cpu_bind) > 1:
        parser.error("--merged measures one cpu_bind")
    if parsed.gate_like and parsed.max_tokens == 128:
        parsed.max_tokens = 16
    main(parsed)
