"""What isolation costs per sandboxed run: bwrap against the same launcher unconfined.

    python bench/sandbox_bench.py [--runs 40]

Two programs, each run `--runs` times one after another, alternating the two modes so drift
hits both alike: an empty answer (the fixed cost) and a HumanEval-sized answer with its tests.
Also the first call's isolation probe. Writes bench/results/sandbox-DATE.json.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.record import write_result
from reflexa.evals.isolation import Isolation, find_isolation
from reflexa.evals.sandbox import run_python

PROGRAMS = {
    "empty": ("pass", ""),
    "humaneval-sized": (
        "def has_close_elements(numbers, threshold):\n"
        "    return any(abs(a - b) < threshold\n"
        "               for i, a in enumerate(numbers) for b in numbers[i + 1:])\n",
        "assert has_close_elements([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3)\n"
        "assert not has_close_elements([1.0, 2.0, 5.9, 4.0, 5.0], 0.5)\n",
    ),
}


async def timed(code: str, tests: str, isolation: Isolation) -> float:
    started = time.perf_counter()
    result = await run_python(code, tests=tests, isolation=isolation, allow_unconfined=True)
    elapsed = time.perf_counter() - started
    if not result.ok:
        raise SystemExit(f"the benchmark's program failed under {isolation.kind}: {result}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    started = time.perf_counter()
    bwrap = find_isolation()
    probe_s = time.perf_counter() - started
    if bwrap.kind != "bwrap":
        raise SystemExit(f"no isolation to measure: {bwrap.detail}")
    modes = {"bwrap": bwrap, "unconfined": Isolation("none", "benchmark")}
    doc: dict[str, object] = {
        "runs": args.runs,
        "probe_s": round(probe_s, 4),
        "bwrap": bwrap.detail,
    }
    for name, (code, tests) in PROGRAMS.items():
        times: dict[str, list[float]] = {mode: [] for mode in modes}
        for i in range(args.runs):
            for mode, isolation in modes.items():
                times[mode].append(asyncio.run(timed(code, tests, isolation)))
            print(f"\r{name}: {i + 1}/{args.runs}", end="", file=sys.stderr)
        print(file=sys.stderr)
        medians = {mode: statistics.median(t) for mode, t in times.items()}
        doc[name] = {
            f"{mode}_ms": {"median": round(m * 1000, 1), "p95": round(_p95(times[mode]) * 1000, 1)}
            for mode, m in medians.items()
        } | {"overhead_ms": round((medians["bwrap"] - medians["unconfined"]) * 1000, 1)}
    path = write_result("sandbox", doc)
    print(path.read_text())


def _p95(values: list[float]) -> float:
    return sorted(values)[max(0, round(0.95 * len(values)) - 1)]


if __name__ == "__main__":
    main()
