"""A nights run's refused candidates, blended back toward their parents and measured.

Measured as the nights run measures the served adapter: does part of a candidate's update
keep the gain it was refused with and give back what the frozen suite lost?

    .venv/bin/python -m bench.blend_again --source .bench-work/nights-XXXX --nights 4
    .venv/bin/python -m bench.blend_again --resume .bench-work/blend-XXXX   # after a kill

The source run's home is copied as it stands; for each named night whose candidate was
refused (all such nights, unnamed), that candidate and its blend at each `--weights` with
its parent, the adapter served when it was trained (`trainers/blend.py`, as a night blends),
answer every suite's test split and the frozen suite (first answers, greedy, no memory),
beside the source's measurement of the parent after that night. Test splits measure; they
decide nothing (a night's gate does). Written to bench/results/blend-again-DATE.json with
commit and machine; every step resumes after a kill.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.nights_bench import Night, from_source, measure
from bench.record import write_result
from reflexa.agent.settings import Settings, load_settings
from reflexa.agent.store import Store
from reflexa.trainers.blend import blend_adapter


def settings_of(run: Night) -> Settings:
    """The copied home's settings, as `reflexa` reads them there."""
    saved = dict(os.environ)
    os.environ.update({k: v for k, v in run.env.items() if k.startswith("REFLEXA_")})
    try:
        return load_settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def blended(run: Night, candidate: str, weight: float) -> str:
    """`candidate` blended with its parent at `weight`, registered in the copy: its version."""
    settings = settings_of(run)
    with Store.open(settings.database) as store:
        row, parent = store.adapter(candidate), None
        assert row is not None, candidate
        if row["parent"]:
            parent = store.adapter(row["parent"])
        return str(blend_adapter(settings.workspace(), store, row, parent, weight)["version"])


def run_again(run: Night) -> dict[str, Any]:
    args = run.state["args"]
    source = Path(args["source"])
    run.step("copy", lambda: str(shutil.copytree(
        source, run.folder, dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("state.json", "vllm.log", "cycle.lock"))))  # fmt: skip
    before = json.loads((source / "state.json").read_text())["done"]
    run.reflexa("model", "serve")
    out: dict[str, Any] = {}
    for n in args["nights"] or sorted(int(k.split()[1]) for k in before if k.startswith("night ")):
        night = before[f"night {n}"]["result"]
        candidate = (night.get("adapter") or {}).get("version")
        if night.get("status") != "rejected" or not candidate:
            continue
        measured = {
            candidate: run.step(f"measure {candidate}", lambda c=candidate: measure(run, c))
        }
        blends = {}
        for weight in args["weights"]:
            key = f"blend {candidate} {weight}"
            version = run.step(key, lambda c=candidate, w=weight: blended(run, c, w))
            blends[str(weight)] = version
            measured[version] = run.step(f"measure {version}", lambda v=version: measure(run, v))
        out[str(n)] = {
            "candidate": candidate,
            "reason": night.get("reason"),
            "dev": night.get("dev"),
            "frozen_in_gate": (night.get("suites") or {}).get("capabilities"),
            "parent_test": before[f"measure {n}"]["result"],  # served after the night
            "blends": blends,
            "test": measured,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, help="A nights run's folder (nights_bench).")
    parser.add_argument("--nights", type=int, nargs="*", default=[],
                        help="Its refused nights to blend (default: all).")  # fmt: skip
    parser.add_argument("--weights", type=float, nargs="+", default=[0.5],
                        help="Shares of the candidate's update kept ([cycle] blend).")  # fmt: skip
    parser.add_argument("--port", type=int, default=8018, help="The bench's own vLLM port.")
    parser.add_argument("--resume", type=Path, help="This bench's folder, to continue it.")
    args = parser.parse_args()
    if args.resume:
        run = Night(args.resume)
    elif args.source:
        if not all(0 < w < 1 for w in args.weights):
            sys.exit("blend_again: each weight is a share of the update, between 0 and 1")
        run = from_source("blend_again", "blend", args)
    else:
        sys.exit("blend_again: name --source, or --resume a run")
    try:
        doc = run_again(run)
    finally:
        subprocess.run([sys.executable, "-m", "reflexa.agent", "model", "stop"], env=run.env,
                       check=False)  # fmt: skip
    doc = {"args": run.state["args"], "folder": str(run.folder), "nights": doc}
    table = {n: d["test"] | {"parent": d["parent_test"]} for n, d in doc["nights"].items()}
    print(json.dumps(table, indent=1))
    print(f"written to {write_result('blend-again', doc)}")


if __name__ == "__main__":
    main()
