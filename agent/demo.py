"""`make demo`: the whole self-repair story on the bundled model, through the real CLI.

  1. baseline: the test split, first answers only
  2. the training split with reflection: failures and repairs are recorded
  3. `reflexa cycle`: compile → train → gate (on the dev split) → promote (or reject)
  4. the test split again, now through the promoted adapter (never used for a decision)
Then a before/after table (McNemar's test on the paired items, the frozen suite from the
gate, the precision of the training rows by justification) and an HTML page beside the
per-run reports; `reports/demo.json` keeps the numbers (`bench/demo_bench.py` stamps them
into bench/results/).

    python -m reflexa.agent.demo [--suite sums|arithmetic|json-extract] [--label-free]

Label-free: no gold answer anywhere in the loop (not in training rows, not in memories); a
training row needs a user's answer or self-consistency among samples of the model. Scoring
still measures the result, and how precise each justification was.

Runs in $REFLEXA_HOME (the Makefile gives it a fresh folder of its own).
"""

from __future__ import annotations

import argparse
import html
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from reflexa.agent.cli.failures import precision_line
from reflexa.evals.report import figure_png

REFLEXA = [sys.executable, "-m", "reflexa.agent"]
# Short answers suffice for these suites; the cap keeps a rambling base model from
# dominating the run time.
DEMO_ENV = {"REFLEXA_REFLECT__MAX_TOKENS": "128"}
# Gold-backed: sampling is left out (gold covers every failure).
GOLD_ENV = {"REFLEXA_CYCLE__SAMPLE_N": "0"}
# Label-free, for every step (no gold memory either): rows only from agreement or a user.
LABEL_FREE_ENV = {
    "REFLEXA_CYCLE__ALLOW_GOLD": "false",
    "REFLEXA_CYCLE__JUSTIFICATIONS": '["user", "consistency"]',
    "REFLEXA_CYCLE__SAMPLE_N": "8",
    "REFLEXA_CYCLE__SAMPLE_LIMIT": "200",
}


def step(title: str) -> None:
    print(f"\n=== {title} ===", file=sys.stderr, flush=True)


def reflexa(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a reflexa command with `--json`; its progress shows on stderr."""
    result = subprocess.run(
        [*REFLEXA, *args, "--json"],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ | DEMO_ENV | (env or {}),
        check=False,
    )
    if result.returncode != 0:
        sys.exit(f"demo: `reflexa {' '.join(args)}` failed (exit {result.returncode})")
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="sums", choices=["sums", "arithmetic", "json-extract"])
    parser.add_argument(
        "--label-free", "--no-gold", action="store_true", help="No gold answer in the loop."
    )
    args = parser.parse_args()
    started = time.perf_counter()
    home = Path(os.environ.get("REFLEXA_HOME", "~/.reflexa")).expanduser()
    if args.label_free:
        DEMO_ENV.update(LABEL_FREE_ENV)
    cycle_env = {} if args.label_free else GOLD_ENV

    step("model: prepare and serve")
    reflexa("model", "prepare")
    reflexa("model", "serve")
    step(f"1/4 baseline: {args.suite} test split, first answers")
    before = reflexa("eval", "run", args.suite, "--split", "test", "--no-reflect",
                     "--no-memory", "--adapter", "base")  # fmt: skip
    step(f"2/4 {args.suite} training split with reflection (failures and repairs recorded)")
    train = reflexa("eval", "run", args.suite, "--split", "train", "--max-repairs", "1",
                    "--concurrency", "16", "--adapter", "base")  # fmt: skip
    step("3/4 reflexa cycle: compile, train, gate, promote")
    cycle = reflexa("cycle", env=cycle_env)
    step(f"4/4 {args.suite} test split again, through the default adapter")
    after = reflexa("eval", "run", args.suite, "--split", "test", "--no-reflect", "--no-memory")
    compared = reflexa("eval", "compare", before["run_id"], after["run_id"])

    rows = _rows(args.suite, before, train, cycle, compared)
    print(_table(rows))
    page = home / "reports" / "demo.html"
    page.write_text(_page(args, rows, cycle))
    minutes = round((time.perf_counter() - started) / 60, 1)
    summary = {
        "suite": args.suite, "label_free": args.label_free, "minutes": minutes,
        "test_split": compared["first_attempt"], "training_split": train["metrics"]["overall"],
        "cycle": cycle, "table": rows,
    }  # fmt: skip
    (home / "reports" / "demo.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\n{cycle['status']}: {cycle['reason']}")
    if cycle.get("precision"):
        print(precision_line(cycle["precision"]))
    print(f"report: {page}\ndemo took {minutes} min")
    print("The server keeps running; `reflexa chat` now answers through the promoted adapter.")


def _rows(suite: str, before: dict, train: dict, cycle: dict, compared: dict) -> list[list[str]]:
    first = compared["first_attempt"]
    rows = [
        ["training split, first / final pass",
         f"{_rate(train, 'first_attempt_pass')} / {_rate(train, 'final_pass')}", "", ""],
        [f"{suite} test split, first-attempt pass", f"{first['a']:.1%}", f"{first['b']:.1%}",
         f"{first['p_value']:.2g}"],
    ]  # fmt: skip
    for name, s in cycle.get("suites", {}).items():
        if name == "capabilities":
            rows.append(["capabilities (frozen), pass over the gate's answers",
                         f"{s['current']:.1%}", f"{s['candidate']:.1%}",
                         f"{s['p_value']:.2g}"])  # fmt: skip
    return rows


def _rate(run: dict[str, Any], key: str) -> str:
    return f"{run['metrics']['overall'][key]['rate']:.1%}"


def _table(rows: list[list[str]]) -> str:
    header = ["", "before", "after", "paired p"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [header, *rows]]
    return "\n" + "\n".join(lines)


def _page(args: argparse.Namespace, rows: list[list[str]], cycle: dict[str, Any]) -> str:
    fig, ax = plt.subplots(figsize=(6, 3.2))
    labels = [r[0].split(",")[0] for r in rows[1:]]
    values = [[float(r[i].rstrip("%")) / 100 for r in rows[1:]] for i in (1, 2)]
    x = range(len(labels))
    ax.bar([i - 0.2 for i in x], values[0], width=0.4, label="before", color="#c44e52")
    ax.bar([i + 0.2 for i in x], values[1], width=0.4, label="after one cycle", color="#55a868")
    ax.set_xticks(list(x), labels)
    ax.set_ylim(0, 1)
    ax.set_ylabel("first-attempt pass")
    ax.legend()
    table = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows
    )
    stages = "".join(
        f"<tr><td>{s['stage']}</td><td>{s['seconds']} s</td><td>{'ok' if s['ok'] else 'failed'}"
        f"</td></tr>"
        for s in cycle["stages"]
    )
    source = "label-free: agreement among samples, no gold" if args.label_free else "gold allowed"
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Reflexa demo: {args.suite}</title><style>body{{font-family:system-ui,sans-serif;
max-width:900px;margin:2em auto}}td,th{{border:1px solid #ddd;padding:.3em .7em}}
table{{border-collapse:collapse;margin:1em 0}}</style></head><body>
<h1>One self-repair cycle on {args.suite} ({source})</h1>
<p>{html.escape(cycle["status"])}: {html.escape(cycle["reason"] or "")}</p>
<table><tr><th></th><th>before</th><th>after</th><th>paired p</th></tr>{table}</table>
<img alt="before and after" src="data:image/png;base64,{figure_png(fig)}">
<h2>Cycle stages</h2><table>{stages}</table></body></html>
"""


if __name__ == "__main__":
    main()
