"""What correction memory buys: held-out first-attempt pass with recall on vs off, paired
(McNemar), after the training split has been run once with reflection; then the same with a
promoted adapter, before and after `reflexa memory retire`. Runs the real CLI in a home of
its own ($REFLEXA_HOME, default a temporary folder) and writes
bench/results/memory-effect-DATE.json.

    python bench/memory_effect.py [--suites json-extract arithmetic] [--no-adapter] [--label-free]

`--label-free`: no gold anywhere (`cycle.allow_gold` false for every command): the memories
are the loop's own verified repairs, none justified by gold, and the cycle trains without
gold. Without it, gold answers of failed training items become memories too (as before
2026-12-05). The result says which (`memories_used`), with the memories by justification.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from typing import Any

from bench.record import write_result
from reflexa.agent.demo import reflexa, step

HELDOUT = ("--split", "test", "--no-reflect", "--concurrency", "16")


def paired(suite: str, adapter: str, label: str) -> dict[str, Any]:
    """Held-out with recall off, then on, through `adapter`; compared item by item."""
    step(f"{suite} held-out through {adapter}: memory off, then on ({label})")
    off = reflexa("eval", "run", suite, *HELDOUT, "--adapter", adapter, "--no-memory")
    on = reflexa("eval", "run", suite, *HELDOUT, "--adapter", adapter)
    compared = reflexa("eval", "compare", off["run_id"], on["run_id"])
    first = compared["first_attempt"]
    return {
        "suite": suite,
        "adapter": adapter,
        "label": label,
        "off": first["a"],
        "on": first["b"],
        "gain_points": round(100 * (first["b"] - first["a"]), 1),
        "p_value": first["p_value"],
        "runs": [off["run_id"], on["run_id"]],
        "latency_p50_s": [r["metrics"]["overall"]["latency_s"]["p50"] for r in (off, on)],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--suites", nargs="+", default=["json-extract", "arithmetic"])
    parser.add_argument("--no-adapter", action="store_true", help="Skip the adapter part.")
    parser.add_argument("--label-free", action="store_true", help="No gold memory, no gold row.")
    args = parser.parse_args()
    started = time.perf_counter()
    if "REFLEXA_HOME" not in os.environ:
        os.environ["REFLEXA_HOME"] = tempfile.mkdtemp(prefix="reflexa-memory-")
    if args.label_free:  # every `reflexa` command below runs in this environment
        os.environ["REFLEXA_CYCLE__ALLOW_GOLD"] = "false"
    try:
        doc = measure(args)
    finally:  # the server this benchmark started does not outlive it
        subprocess.run([sys.executable, "-m", "reflexa.agent", "model", "stop"], check=False)
    doc["minutes"] = round((time.perf_counter() - started) / 60, 1)
    out = write_result("memory-effect", doc)
    for r in doc["results"]:
        head = f"{r['suite']:13s} {r['adapter']:6s} {r['label']:22s}"
        print(f"{head} off {r['off']:6.1%} on {r['on']:6.1%}  {r['gain_points']:+5.1f} points  "
              f"p {r['p_value']:.3g}")  # fmt: skip
    print(f"written to {out} ({doc['minutes']} min)")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """The whole measurement, on a server it starts: the results document."""
    reflexa("model", "prepare")
    reflexa("model", "serve")
    results: list[dict[str, Any]] = []
    collected = {}
    for suite in args.suites:
        step(f"{suite} training split with reflection (corrections become memories)")
        train = reflexa("eval", "run", suite, "--split", "train", "--max-repairs", "1",
                        "--concurrency", "16", "--adapter", "base")  # fmt: skip
        collected[suite] = train["metrics"]["overall"]["first_attempt_pass"]["rate"]
        results.append(paired(suite, "base", "memory alone"))
    memories = reflexa("memory", "list", "--limit", "100000")
    cycle: dict[str, Any] = {}
    if not args.no_adapter:
        step("reflexa cycle: train on the corrections, gate, promote")
        # Memory off for the cycle: it would retire memories as its last stage; here the
        # adapter is measured with every memory first, then after an explicit retire.
        cycle = reflexa("cycle", env={"REFLEXA_CYCLE__SAMPLE_N": "0",
                                      "REFLEXA_MEMORY__ENABLED": "false"})  # fmt: skip
        if cycle["status"] == "promoted":
            version = cycle["adapter"]["version"]
            for suite in args.suites:
                results.append(paired(suite, version, "adapter, all memories"))
            step(f"reflexa memory retire: what {version} passes unaided is no longer recalled")
            retired = reflexa("memory", "retire")
            cycle["retired"] = retired
            for suite in args.suites:
                results.append(paired(suite, version, "adapter, after retire"))
    return {
        "benchmark": "memory-effect",
        "home": os.environ["REFLEXA_HOME"],
        "training_split_first_pass": collected,
        "memories_used": "label-free" if args.label_free else "gold allowed",
        "memories": memories["total"],
        "memories_by_justification": dict(
            Counter(m["justification"] for m in memories["memories"])
        ),
        "cycle": {k: cycle.get(k) for k in ("status", "reason", "adapter", "retired")},
        "results": results,
    }


if __name__ == "__main__":
    main()
