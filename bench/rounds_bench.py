"""The learning curve: test-split first-attempt pass over rounds 0..K of `reflexa cycle
--rounds K` on the bundled model, for one suite and one set of candidate methods.

    .venv/bin/python -m bench.rounds_bench --suite sums --rounds 3
    .venv/bin/python -m bench.rounds_bench --suite json-extract --rounds 3 --label-free
    .venv/bin/python -m bench.rounds_bench --suite sums --methods sft sft-label-free grpo

In a fresh home, as the demo does: the test split through the base model (round 0), the
training split with reflection (failures and repairs recorded), then one chain of
`reflexa cycle --rounds K` (gold, where allowed, in the first round only; each later round
samples the adapter the last one promoted, keeps what the visible and tool checks pass,
trains, gates on dev), then the test split through each round's adapter (no reflection,
no memory; the test split never decides anything). A chain stops at its first rejection:
later rounds then keep the last promoted adapter, marked `stopped` (a rejected candidate's
test pass is recorded too, as `rejected_test`, never used). Wall time per round is
the cycle's own. Answers and samples are capped at 128 tokens, as in the demo. Writes
bench/results/rounds-SUITE[-label-free]-DATE.json.

Then, and with `--report` alone, bench/results/rounds.html: every rounds-*.json result as a
learning curve (test pass by round, one line per suite and method) and a table.
"""

from __future__ import annotations

import argparse
import html
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from bench.home import fresh_home
from bench.record import RESULTS, write_result
from reflexa.agent.demo import DEMO_ENV, LABEL_FREE_ENV
from reflexa.evals.report import compile_stage, figure_png


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="sums", choices=["sums", "arithmetic", "json-extract"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--methods", nargs="+", default=["sft"], choices=["sft", "sft-label-free", "dpo", "grpo"]
    )
    parser.add_argument("--label-free", action="store_true", help="No gold in any round.")
    parser.add_argument("--port", type=int, default=8014, help="The bench's own vLLM port.")
    parser.add_argument("--report", action="store_true", help="Only redraw rounds.html.")
    args = parser.parse_args()
    if args.report:
        print(f"written to {write_page(RESULTS)}")
        return
    home, env = fresh_home("rounds", args.port)
    env |= DEMO_ENV | (LABEL_FREE_ENV if args.label_free else {})
    env["REFLEXA_CYCLE__SAMPLE_MAX_TOKENS"] = "128"  # as the demo caps answers: short suites
    env["REFLEXA_CYCLE__METHODS"] = json.dumps(args.methods)

    def reflexa(*words: str) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, "-m", "reflexa.agent", *words, "--json"],
            stdout=subprocess.PIPE, text=True, env=env, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            sys.exit(f"rounds_bench: `reflexa {' '.join(words)}` failed ({done.returncode})")
        return json.loads(done.stdout)

    def test_pass(adapter: str) -> float:
        run = reflexa("eval", "run", args.suite, "--split", "test", "--no-reflect",
                      "--no-memory", "--adapter", adapter)  # fmt: skip
        return float(run["metrics"]["overall"]["first_attempt_pass"]["rate"])

    try:
        reflexa("model", "prepare")
        reflexa("model", "serve")
        curve: list[dict[str, Any]] = [
            {"round": 0, "adapter": "base", "test": test_pass("base"), "seconds": 0}
        ]
        reflexa("eval", "run", args.suite, "--split", "train", "--max-repairs", "1",
                "--concurrency", "16", "--adapter", "base")  # fmt: skip
        chain = reflexa("cycle", "--rounds", str(args.rounds))
        rounds = chain.get("rounds") or [chain]
        adapter, score = "base", float(curve[0]["test"])
        for r in rounds:
            point = {}
            if r["status"] == "promoted":
                adapter = r["adapter"]["version"]
                score = test_pass(adapter)
            elif r["adapter"]:  # for the record only: did the gate reject a better one?
                point["rejected_test"] = test_pass(r["adapter"]["version"])
            curve.append(_point(r, adapter, score) | point)
        for n in range(len(rounds) + 1, args.rounds + 1):
            curve.append({"round": n, "adapter": adapter, "test": score, "status": "stopped"})
        adapters: list[dict[str, Any]] = reflexa("adapters", "list")  # type: ignore[assignment]
    finally:
        subprocess.run(
            [sys.executable, "-m", "reflexa.agent", "model", "stop"], env=env, check=False
        )
        shutil.rmtree(home, ignore_errors=True)
    for p in curve:
        print(f"round {p['round']}: test {p['test']:.1%} ({p['adapter']}, {p.get('status', '')})")
    name = f"rounds-{args.suite}" + ("-label-free" if args.label_free else "")
    doc = {"suite": args.suite, "methods": args.methods, "label_free": args.label_free,
           "curve": curve, "chain": rounds,
           "adapters": [_adapter(a) for a in adapters]}  # fmt: skip
    print(f"written to {write_result(name, doc)}")
    print(f"learning curves: {write_page(RESULTS)}")


def _point(r: dict[str, Any], adapter: str, score: float) -> dict[str, Any]:
    """One round of the curve: the adapter serving after it, and what the round did."""
    stages = {s["stage"]: s["seconds"] for s in r["stages"]}
    compiled = compile_stage(r["stages"])
    gate = r.get("dev") or {}
    return {"round": r["round"], "adapter": adapter, "test": score, "status": r["status"],
            "gold": r["gold"], "seconds": r["seconds"], "stages": stages,
            "rows": {j: p["examples"] for j, p in (compiled.get("precision") or {}).items()},
            "precision": compiled.get("precision"), "dev": [gate.get("a"), gate.get("b")],
            "reason": r["reason"], "methods": r.get("methods")}  # fmt: skip


def _adapter(row: dict[str, Any]) -> dict[str, Any]:
    keep = ("version", "status", "method", "examples", "parent", "reason")
    train = row["metrics"].get("train", {})
    return {k: row[k] for k in keep} | {"train_s": train.get("train_s"),
                                        "cycle": row["metrics"].get("cycle")}  # fmt: skip


def _label(doc: dict[str, Any]) -> str:
    gold = "no gold" if doc["label_free"] else "gold in round 1"
    return f"{doc['suite']}, {'+'.join(doc['methods'])}, {gold} ({doc['commit']['sha'][:7]})"


def write_page(results: Path) -> Path:
    """rounds.html: each result's test-split curve, plotted and tabled, with its commit."""
    docs = [(f, json.loads(f.read_text())) for f in sorted(results.glob("rounds-*.json"))]
    fig, ax = plt.subplots(figsize=(7, 4))
    rows = []
    for file, doc in docs:
        curve = doc["curve"]
        (line,) = ax.plot([p["round"] for p in curve], [p["test"] for p in curve], marker="o",
                          label=_label(doc))  # fmt: skip
        rejected = [(p["round"], p["rejected_test"]) for p in curve if "rejected_test" in p]
        if rejected:  # what the gate turned down, for the record
            ax.plot(*zip(*rejected, strict=True), "x", color=line.get_color(), markersize=9)
        for p in curve:
            minutes = f"{p['seconds'] / 60:.1f}" if p.get("seconds") else ""
            cells = [file.name, doc["commit"]["sha"][:7], _label(doc), str(p["round"]),
                     f"{p['test']:.0%}", p.get("status", ""), minutes,
                     ", ".join(f"{j} {n}" for j, n in (p.get("rows") or {}).items())]  # fmt: skip
            rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    ax.set_xticks(range(1 + max((p["round"] for _, d in docs for p in d["curve"]), default=0)))
    ax.set_xlabel("round (0: the base model; x: a candidate the gate rejected)")
    ax.set_ylabel("test split, first-attempt pass")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    head = ["result", "commit", "run", "round", "test", "round's outcome", "minutes", "rows"]
    page = results / "rounds.html"
    page.write_text(f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Reflexa: learning curves over rounds</title><style>body{{font-family:system-ui,
sans-serif;max-width:1000px;margin:2em auto}}td,th{{border:1px solid #ddd;padding:.3em .6em}}
table{{border-collapse:collapse}}</style></head><body>
<h1>Learning curves over self-training rounds</h1>
<p>Written by bench/rounds_bench.py from bench/results/rounds-*.json.</p>
<img alt="test pass by round" src="data:image/png;base64,{figure_png(fig)}">
<table><tr>{"".join(f"<th>{h}</th>" for h in head)}</tr>{"".join(rows)}</table>
</body></html>
""")
    return page


if __name__ == "__main__":
    main()
