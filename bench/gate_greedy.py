"""A night's gate read two ways: per eval run (a side on a suite), the greedy answers' pass
rate beside the pass fraction over all the answers the gate asked for (greedy plus draws at
`[cycle] gate_temperature`), which is what it judges. Served answers are greedy: where the
two readings part, the gate judges something users do not get.

    .venv/bin/python -m bench.gate_greedy --home .bench-work/again-XXXX/home --cycle CYCLE_ID

An answer passes as the gate counted it: by scoring where the item has it, else by its
visible checks. Written to bench/results/gate-greedy-DATE.json with commit and machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from bench.nights_bench import cycle_runs
from bench.record import write_result


def readings(db: Path, cycle_id: str) -> list[dict[str, Any]]:
    """Each of the cycle's finished eval runs: suite, the adapter it served (its version; the
    model's name where none), items, greedy pass rate and mean pass fraction."""
    out = []
    with contextlib.closing(sqlite3.connect(db)) as conn:
        versions = dict(conn.execute("select name, version from adapters").fetchall())
        for run_id, suite, _, _ in cycle_runs(conn, cycle_id):
            rows = conn.execute(
                "select first_correct, first_passed, draws, coalesce(adapter, model) from episodes "
                "where eval_run_id = ? and status != 'error'", (run_id,)
            ).fetchall()  # fmt: skip
            greedy, fractions = [], []
            for correct, passed, draws, _ in rows:
                first = bool(passed if correct is None else correct)
                answers = [first] + [
                    bool(d["checks_passed"] if d.get("correct") is None else d["correct"])
                    for d in json.loads(draws or "null") or []
                ]
                greedy.append(first)
                fractions.append(sum(answers) / len(answers))
            if rows:
                served = versions.get(rows[0][3], rows[0][3])  # merged weights: the same name
                out.append({"suite": suite, "served": served,
                            "items": len(rows), "answers": len(answers),
                            "greedy": round(sum(greedy) / len(rows), 4),
                            "pass_fraction": round(sum(fractions) / len(rows), 4)})  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True, help="A reflexa home.")
    parser.add_argument("--cycle", required=True, help="The night's cycle id.")
    args = parser.parse_args()
    runs = readings(args.home / "reflexa.db", args.cycle)
    for r in runs:
        print(f"{r['suite']:24s} {r['served'][:28]:28s} {r['items']:4d} items, "
              f"{r['answers']} answers: greedy {r['greedy']:.1%}, "
              f"pass fraction {r['pass_fraction']:.1%}")  # fmt: skip
    doc = {"home": str(args.home), "cycle": args.cycle, "runs": runs}
    print(f"written to {write_result('gate-greedy', doc)}")


if __name__ == "__main__":
    main()
