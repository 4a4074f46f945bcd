"""The demo as a measurement: `make demo` (or its label-free variant) in a fresh home, its
numbers written to bench/results/demo-SUITE[-label-free]-DATE.json with commit and machine.

    .venv/bin/python -m bench.demo_bench --suite sums
    .venv/bin/python -m bench.demo_bench --suite json-extract --label-free

The prepared model is shared with `make demo` (.demo/models) so it is converted once.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys

from bench.home import fresh_home
from bench.record import write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="sums", choices=["sums", "arithmetic", "json-extract"])
    parser.add_argument("--label-free", action="store_true")
    parser.add_argument("--port", type=int, default=8011, help="The bench's own vLLM port.")
    args = parser.parse_args()
    home, env = fresh_home("demo-bench", args.port)
    command = [sys.executable, "-m", "reflexa.agent.demo", "--suite", args.suite]
    try:
        subprocess.run(command + ["--label-free"] * args.label_free, env=env, check=True)
        summary = json.loads((home / "reports" / "demo.json").read_text())
    finally:
        subprocess.run(
            [sys.executable, "-m", "reflexa.agent", "model", "stop"], env=env, check=False
        )
        shutil.rmtree(home, ignore_errors=True)
    name = f"demo-{args.suite}" + ("-label-free" if args.label_free else "")
    print(f"written to {write_result(name, summary)}")


if __name__ == "__main__":
    main()
