"""Which cores vLLM computes on, measured as a user feels it: an eval run's wall time.

    .venv/bin/python -m bench.cpu_bind_bench [--binds auto all] [--suite sums] [--limit 60]

For each `[server] cpu_bind` in turn (side by side in one run, one server at a time, in a
fresh home): start the managed server, then `reflexa eval run SUITE --split dev --limit N`
with reflection on and memory off (the agent's own Python, the checks and the sandbox share
the cores with vLLM, as in a night), timed from the command's start to its end; also the
first-attempt pass rate, which should not depend on the binding (greedy answers). Writes
bench/results/cpu-bind-DATE.json with the commit and machine. bench/serve_bench.py
--cpu-bind measures raw tokens per second instead.
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


def reflexa(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "reflexa.agent", *args]
    return subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binds", nargs="+", default=["auto", "all"])
    parser.add_argument("--suite", default="sums")
    parser.add_argument("--limit", type=int, default=60)
    parser.add_argument("--port", type=int, default=8019)
    args = parser.parse_args()
    home, env = fresh_home("cpu-bind", args.port)
    runs: dict[str, Any] = {}
    try:
        reflexa(env, "model", "prepare")
        for bind in args.binds:
            bound = env | {"REFLEXA_SERVER__CPU_BIND": bind}
            reflexa(bound, "model", "serve")
            started = time.perf_counter()
            done = reflexa(bound, "eval", "run", args.suite, "--split", "dev", "--limit",
                           str(args.limit), "--no-memory", "--json")  # fmt: skip
            wall = time.perf_counter() - started
            overall = json.loads(done.stdout)["metrics"]["overall"]
            runs[bind] = {"wall_s": round(wall, 1), "items": overall["items"],
                          "first_attempt_pass": overall["first_attempt_pass"]["rate"],
                          "final_pass": overall["final_pass"]["rate"],
                          "latency_s": overall["latency_s"]}  # fmt: skip
            print(f"cpu_bind = {bind}: {json.dumps(runs[bind])}", file=sys.stderr)
            reflexa(bound, "model", "stop")
    finally:
        subprocess.run([sys.executable, "-m", "reflexa.agent", "model", "stop"], env=env,
                       check=False, capture_output=True)  # fmt: skip
        shutil.rmtree(home, ignore_errors=True)
    doc = {"suite": args.suite, "split": "dev", "limit": args.limit, "reflect": True,
           "memory": False, "by_cpu_bind": runs}  # fmt: skip
    print(f"written to {write_result('cpu-bind', doc)}")


if __name__ == "__main__":
    main()
