"""How many rows a night would train on under each `[cycle] replay` share, compiled again from
a nights run's store as it stands (bench/nights_bench.py): a dry count, nothing trained.

    .venv/bin/python -m bench.replay_rows --source .bench-work/nights-XXXX --shares 1 0.5 0

The night counted is the run's last, compiled again with gold off (the store also holds its
own sampled rows, as its compile did; the test splits measured after it are not training
rows): replay from the cycle that trained before it. Rehearsal rows (asked of the model at
night) are not counted. The store is copied first, so the run is never touched. Written to
bench/results/replay-rows-DATE.json.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from bench.record import write_result
from reflexa.agent.store import Store
from reflexa.agent.store.db import sqlite_url
from reflexa.trainers.dataset import build_dataset
from reflexa.trainers.replay import last_trained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="A nights run's folder.")
    parser.add_argument("--shares", type=float, nargs="+", default=[1.0, 0.5, 0.0])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(shutil.copy(args.source / "home" / "reflexa.db", tmp))
        with Store.open(sqlite_url(db)) as store:
            since = last_trained(store.cycles()[1:])  # before the last night
            counts = {}
            for share in [None, *args.shares]:
                out = Path(tmp) / f"sft-{share}"
                replay = None if share is None else (since, share)
                compiled, rows = build_dataset(store, out, "sft", allow_gold=False, replay=replay)
                counts["all" if share is None else str(share)] = {
                    "rows": rows,
                    "examples": len(compiled.examples),
                    **compiled.replay,
                }
    doc = {"source": str(args.source), "since": since and since.isoformat(), "by_share": counts}
    for share, c in counts.items():
        print(f"replay {share:>4}: {c['rows']} rows ({c['examples']} examples)")
    print(f"written to {write_result('replay-rows', doc)}")


if __name__ == "__main__":
    main()
