"""Net self-correction: what reflection does to answers, by scoring (gold only scores).

    .venv/bin/python -m bench.self_correction [--suites sums json-extract …] [--limit 50]

In a fresh home on the bench's own vLLM server, for each suite's `test` split (the first
`--limit` items), the base model, no memory: one run with reflection off and one with it on
(`--max-repairs 2`, every repair strategy allowed). The first attempt is greedy in both, so
the "on" run's harm ledger is the paired comparison: net self-correction = (wrong → right
minus right → wrong) / n. Also per strategy (repairs, fixes, harm, tokens and seconds per fix) and
wall time per episode with reflection on against off. Writes
bench/results/self-correction-DATE.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from typing import Any

from bench.home import fresh_home
from bench.record import write_result

SUITES = ["sums", "arithmetic", "json-extract", "humaneval"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suites", nargs="+", default=SUITES, choices=SUITES)
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--port", type=int, default=8012, help="The bench's own vLLM port.")
    args = parser.parse_args()
    home, env = fresh_home("self-correction", args.port)
    results: dict[str, Any] = {}
    try:
        reflexa(env, "model", "prepare")
        reflexa(env, "model", "serve")
        for suite in args.suites:
            common = ["eval", "run", suite, "--split", "test", "--limit", str(args.limit),
                      "--no-memory", "--adapter", "base"]  # fmt: skip
            off = reflexa(env, *common, "--no-reflect")
            on = reflexa(env, *common, "--max-repairs", "2")
            results[suite] = summary(off["metrics"]["overall"], on["metrics"])
            print(f"{suite}: {json.dumps(results[suite]['net'])}", file=sys.stderr)
    finally:
        subprocess.run([sys.executable, "-m", "reflexa.agent", "model", "stop"], env=env)
        shutil.rmtree(home, ignore_errors=True)
    doc = {"limit": args.limit, "model": "base", "max_repairs": 2, "suites": results}
    print(f"written to {write_result('self-correction', doc)}")


def reflexa(env: dict[str, str], *args: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "reflexa.agent", *args, "--json"]
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(done.stdout)


def summary(off: dict[str, Any], on: dict[str, Any]) -> dict[str, Any]:
    overall, harm = on["overall"], on["overall"]["harm"]
    p50_off, p50_on = off["latency_s"]["p50"], overall["latency_s"]["p50"]
    latency = {"off": off["latency_s"], "on": overall["latency_s"]}
    latency["p50_ratio"] = round(p50_on / p50_off, 2) if p50_off else None
    return {
        "items": overall["items"],
        "first": overall["first_attempt_pass"]["rate"],
        "final": overall["final_pass"]["rate"],
        "net": {k: harm[k] for k in ("scored", "wrong_to_right", "right_to_wrong", "net")},
        "by_strategy": on["by_strategy"],
        "latency_s": latency,
        "tokens": {"off": off["tokens"], "on": overall["tokens"]},
        "first_off": off["first_attempt_pass"]["rate"],  # the same greedy answers: a check
    }


if __name__ == "__main__":
    main()
