"""`reflexa eval run` vs inspect_ai: items/s on the same server and the same items.

    make bench-inspect          # or: .venv/bin/python bench/inspect_bench.py

Both as their CLIs run them, end to end (start-up included), one after the other on one
managed vLLM server: 100 held-out `arithmetic` items, reflection off, the same system prompt,
temperature 0, at most 64 new tokens, 8 requests at a time. inspect_ai is pinned in its own
environment (`.venv-bench`, made by `make bench-inspect`), since its dependencies are not
Reflexa's. Target: Reflexa's items/s >= inspect_ai's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(ROOT))
from bench.record import write_result  # noqa: E402
from reflexa.agent.model.connect import connect  # noqa: E402
from reflexa.agent.settings import load_settings  # noqa: E402
from reflexa.evals.builtin import BUILTIN  # noqa: E402
from reflexa.graphs.prompts import SYSTEM  # noqa: E402

REFLEXA = str(Path(sys.executable).parent / "reflexa")
INSPECT = str(ROOT / ".venv-bench" / "bin" / "inspect")


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return wall, result.stdout


def main(args: argparse.Namespace) -> None:
    home = Path(tempfile.mkdtemp(prefix="reflexa-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFLEXA_")}
    env |= {
        "REFLEXA_HOME": str(home),
        "REFLEXA_SERVER__PORT": str(args.port),
        "REFLEXA_REFLECT__MAX_TOKENS": str(args.max_tokens),
    }
    os.environ |= env
    client = connect(load_settings(), log=lambda m: print(m, file=sys.stderr))
    items = BUILTIN["arithmetic"]().select("test", args.items)
    spec = {
        "system": SYSTEM,
        "items": [
            {
                "id": i.id,
                "prompt": i.user_prompt,
                "target": str(int(i.scoring_specs()[0]["expected"])),
            }
            for i in items
        ],
    }
    spec_file = home / "items.json"
    spec_file.write_text(json.dumps(spec))
    inspect_env = env | {
        "REFLEXA_BENCH_ITEMS": str(spec_file),
        "LOCAL_BASE_URL": f"{client.url}/v1",
        "LOCAL_API_KEY": "EMPTY",
    }
    reflexa_cmd = [
        REFLEXA,
        "eval",
        "run",
        "arithmetic",
        "--split",
        "test",
        "--limit",
        str(args.items),
        "--no-reflect",
        "--no-memory",
        "--concurrency",
        str(args.concurrency),
        "--json",
    ]
    # A relative task path: inspect_ai's loader globs it, which refuses absolute patterns.
    inspect_cmd = [INSPECT, "eval", "bench/inspect_task.py",
                   "--model", f"openai-api/local/{client.model}",
                   "--max-connections", str(args.concurrency), "--temperature", "0",
                   "--max-tokens", str(args.max_tokens),
                   "--log-dir", str(home / "inspect-logs"), "--display", "plain"]  # fmt: skip
    try:
        timed([REFLEXA, "ask", "warm-up: say hi"], env)  # first requests compile kernels
        reflexa_s, out = timed(reflexa_cmd, env)
        inspect_s, _ = timed(inspect_cmd, inspect_env)
    finally:
        subprocess.run([REFLEXA, "model", "stop"], env=env, capture_output=True)
    reflexa_pass = json.loads(out)["metrics"]["overall"]["first_attempt_pass"]["rate"]
    report = {
        "bench": "inspect",
        "items": len(items),
        "concurrency": args.concurrency,
        "max_tokens": args.max_tokens,
        "inspect_ai": subprocess.run(
            [INSPECT, "--version"], capture_output=True, text=True
        ).stdout.strip(),
        "reflexa_s": round(reflexa_s, 2),
        "inspect_s": round(inspect_s, 2),
        "reflexa_items_per_s": round(len(items) / reflexa_s, 3),
        "inspect_items_per_s": round(len(items) / inspect_s, 3),
        "ratio": round(inspect_s / reflexa_s, 3),
        "reflexa_first_attempt_pass": reflexa_pass,
    }
    print(f"written to {write_result('inspect', report)}")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--port", type=int, default=8079)
    main(parser.parse_args())
