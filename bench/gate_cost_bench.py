"""What the gate's evidence costs: one side's pass over a gate suite (first answers, no
memory) with and without draws (more answers per item in the same request, vLLM's `n`),
and with the answer cap the demo uses or the default one. Each configuration is a `reflexa
eval run ... --draws D` in a fresh home on the bench's own server; its wall time, first
pass and pass fraction are recorded. Writes bench/results/gate-cost-DATE.json.

    .venv/bin/python -m bench.gate_cost_bench [--runs capabilities:0:512 capabilities:4:512 ...]

A run spec is SUITE[:SPLIT]:DRAWS:MAX_TOKENS (SPLIT for suites with one, e.g. sums:dev:4:128).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from typing import Any

from bench.home import fresh_home
from bench.record import write_result

RUNS = ["capabilities:0:512", "capabilities:4:512", "capabilities:0:128", "capabilities:4:128",
        "sums:dev:0:128", "sums:dev:4:128"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", default=RUNS)
    parser.add_argument("--port", type=int, default=8017)
    args = parser.parse_args()
    home, env = fresh_home("gate-cost", args.port)

    def reflexa(*words: str, extra: dict[str, str] | None = None) -> dict[str, Any]:
        done = subprocess.run([sys.executable, "-m", "reflexa.agent", *words, "--json"],
                              stdout=subprocess.PIPE, text=True, env=env | (extra or {}),
                              check=False)  # fmt: skip
        if done.returncode != 0:
            sys.exit(f"gate_cost_bench: `reflexa {' '.join(words)}` failed")
        return json.loads(done.stdout)

    measured = []
    try:
        reflexa("model", "prepare")
        reflexa("model", "serve")
        for spec in args.runs:
            *where, draws, cap = spec.split(":")
            split = ["--split", where[1]] if len(where) > 1 else []
            started = time.perf_counter()
            run = reflexa("eval", "run", where[0], *split, "--no-reflect", "--no-memory",
                          "--draws", draws, "--adapter", "base",
                          extra={"REFLEXA_REFLECT__MAX_TOKENS": cap})  # fmt: skip
            overall = run["metrics"]["overall"]
            point = {"run": spec, "items": overall["items"],
                     "seconds": round(time.perf_counter() - started, 1),
                     "first_pass": overall["first_attempt_pass"]["rate"],
                     "pass_fraction": (overall.get("pass_fraction") or {}).get("mean"),
                     "tokens": overall["tokens"]}  # fmt: skip
            print(json.dumps(point), file=sys.stderr, flush=True)
            measured.append(point)
    finally:
        subprocess.run([sys.executable, "-m", "reflexa.agent", "model", "stop"], env=env,
                       check=False)  # fmt: skip
        shutil.rmtree(home, ignore_errors=True)
    print(f"written to {write_result('gate-cost', {'runs': measured})}")


if __name__ == "__main__":
    main()
