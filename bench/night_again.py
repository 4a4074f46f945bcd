"""One more night on a nights run's last traffic, with other training methods: does a smaller
step keep a night's gain and lose less on the frozen suite?

    .venv/bin/python -m bench.night_again --source .bench-work/nights-XXXX \\
        --methods sft-continue@epochs=1 sft-continue@learning_rate=1e-4
    .venv/bin/python -m bench.night_again --source .bench-work/nights-XXXX \\
        --methods sft@rehearsal=0.25 --chat 200    # with a day of chat to rehearse
    .venv/bin/python -m bench.night_again --resume .bench-work/again-XXXX   # after a kill

The source run's home is copied as it stands after its last night (bench/nights_bench.py),
and a cycle runs on the copy with `[cycle] methods` set to `--methods`, gold off and a
budget that lets every method train: the same traffic, the same served adapter and memory as
the last night had, a fresh sampling and a fresh dev sample. `reflexa cycle` (trigger cli),
since a scheduled night would find nothing new and skip. Then each candidate's test splits
and the frozen suite are measured as the nights run measures the served adapter (first
answers, no memory), and so is the last night's own candidate where it was not promoted
(the nights run measures only what it serves), beside the source's last measurement of
the adapter served. Written to
bench/results/night-again-DATE.json with commit and machine; every step resumes after a kill.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.nights_bench import Night, day_of_chat, from_source, gate_runs, measure, night_summary
from bench.record import write_result


def run_again(run: Night) -> dict[str, Any]:
    args = run.state["args"]
    source = Path(args["source"])
    run.step("copy", lambda: str(shutil.copytree(
        source, run.folder, dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("state.json", "vllm.log", "cycle.lock"))))  # fmt: skip
    before = json.loads((source / "state.json").read_text())["done"]
    last = max(int(k.split()[1]) for k in before if k.startswith("measure "))
    run.reflexa("model", "serve")
    if args.get("chat"):  # a day of chat, as a gateway logs it: what rehearsal draws on
        run.step("chat", lambda: day_of_chat(run, args["chat"], seed=0))
    env = {"REFLEXA_CYCLE__ALLOW_GOLD": "false",
           "REFLEXA_CYCLE__METHODS": json.dumps(args["methods"]),
           "REFLEXA_CYCLE__BUDGET_MINUTES": str(args["budget_minutes"])}  # fmt: skip
    result = run.step("night", lambda: run.reflexa("cycle", env=env))
    tried = {_named(a): a["version"] for a in run.reflexa("adapters", "list")
             if (a["metrics"].get("cycle") or {}).get("id") == result.get("cycle_id")}  # fmt: skip
    night = before[f"night {last}"]["result"]  # its own candidate, if it was not served
    if night.get("status") != "promoted" and (night.get("adapter") or {}).get("version"):
        tried[f"night {last}'s own ({night['adapter'].get('method')})"] = night["adapter"][
            "version"
        ]
    return {
        "source": str(source),
        "source_night": last,  # the adapter it left served: measured after it, as here
        "served_test": before[f"measure {last}"]["result"],
        "night": night_summary(result)
        | {"methods": result.get("methods"), "method_order": result.get("method_order")},
        "gate_runs": gate_runs(run.folder, result.get("cycle_id")),
        "candidate_test": {
            m: run.step(f"measure {v}", lambda v=v: measure(run, v)) for m, v in tried.items()
        },
    }


def _named(adapter: dict[str, Any]) -> str:
    """A night's candidate by its method, or what it blends."""
    if blend := adapter["metrics"].get("blend"):
        return f"blend of {blend['of']} ({blend['weight']:g}) with {blend['with'] or 'the base'}"
    return str((adapter["metrics"].get("cycle") or {}).get("method") or adapter["method"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, help="A nights run's folder (nights_bench).")
    parser.add_argument("--methods", nargs="+", help="[cycle] methods for the night.")
    parser.add_argument("--budget-minutes", type=float, default=240)
    parser.add_argument(
        "--chat", type=int, default=0, metavar="N",
        help="First import N chat exchanges (bench/chat_traffic.py), for rehearsal to draw on.",
    )  # fmt: skip
    parser.add_argument("--port", type=int, default=8017, help="The bench's own vLLM port.")
    parser.add_argument("--resume", type=Path, help="This bench's folder, to continue it.")
    args = parser.parse_args()
    if args.resume:
        run = Night(args.resume)
    elif args.source and args.methods:
        run = from_source("night_again", "again", args)
    else:
        sys.exit("night_again: name --source and --methods, or --resume a run")
    try:
        doc = run_again(run)
    finally:
        subprocess.run([sys.executable, "-m", "reflexa.agent", "model", "stop"], env=run.env,
                       check=False)  # fmt: skip
    doc = {"args": run.state["args"], "folder": str(run.folder)} | doc
    print(json.dumps({"served": doc["served_test"], **doc["candidate_test"]}, indent=1))
    print(f"written to {write_result('night-again', doc)}")


if __name__ == "__main__":
    main()
