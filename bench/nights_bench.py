"""Nights that look like use: each day new traffic arrives, each night the scheduled job runs,
and the test split of every suite is measured after it (never used for a decision).

    .venv/bin/python -m bench.nights_bench --nights 4            # a new run, in .bench-work/
    .venv/bin/python -m bench.nights_bench --resume .bench-work/nights-XXXX   # after a kill
    .venv/bin/python -m bench.nights_bench --report              # redraw nights.html
    .venv/bin/python -m bench.nights_bench --resume .bench-work/nights-XXXX --so-far
                                               # the nights measured so far, as a results file
    .venv/bin/python -m bench.nights_bench --fork .bench-work/nights-XXXX --night 1 --nights 4
                                               # a new run that goes on from that run's night 1

Day n: a fresh batch of training traffic per suite, as a user would send it: `reflexa eval
run FILE --split train` (reflection on, memory on) on a file of new prompts drawn from a
seed of that day, for the generated suites `sums` and `arithmetic` (their gold may be learnt
from, in night 1 only: the user then turns gold off), `json-extract` (label-free: gold never
allowed) and a user's own label-free suite, `orders` (bench/nights_user.py); with `--chat N`,
also N chat exchanges with the model served, imported as a gateway's log (no suite:
bench/chat_traffic.py), which a night's rehearsal draws on. Night n:
`reflexa cycle --json --trigger schedule`, exactly what `reflexa schedule run` starts, with
default settings. After it: each suite's test split and the frozen suite through the
adapter then served (first answers, no memory). Night 0 is the base model before any.

Every step is recorded in the run's folder as it ends (`state.json`); run again with
--resume and the finished steps are skipped, an interrupted eval run resumes where it
stopped, and a night whose cycle was killed is taken up where it stopped (the cycle's own
`resume_hours`: its sampling, trained candidate and finished gate runs kept). When the last
night is measured (or, with --so-far, for the nights measured until now, marked partial),
bench/results/nights-DATE.json (commit, machine, per suite `test_by_night`, per night the
gate's decision and reason, rows by justification with their precision, wall time and the
gate's share) and bench/results/nights.html (a learning curve per suite) are written.
Answers are capped at 128 tokens, as in the demo. Each step records the commit checked out
where it runs when it starts (its processes load that code; a run resumed on newer code says
so), and the one at its end too where they differ. The gate's false-promotion rate from the
nights' real per-item answers: bench/gate_null.py on the run's folder. After each night the
store and adapters are kept (`snapshots/night-N`, about 20 MB): `--fork` starts a run from
one, its earlier nights' steps as that run recorded them, so code changed since can be
measured on the later nights alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import html
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib
import yaml

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench import nights_user
from bench.chat_traffic import chat_log, chat_prompts
from bench.gate_null import gate_of, simulate
from bench.home import ROOT
from bench.record import RESULTS, commit, write_result
from reflexa.agent.demo import DEMO_ENV
from reflexa.evals.builtin import GENERATED
from reflexa.evals.report import compile_stage, figure_png
from reflexa.evals.verify import score

GENERATED_SUITES = ("sums", "arithmetic", "json-extract")
LABEL_FREE = ("json-extract", "orders")  # their gold is never learnt from
SUITES = (*GENERATED_SUITES, "orders")
WORK = ROOT / ".bench-work"


class NotYet(Exception):
    """A step the run has not done yet (--so-far reads only what it has)."""


class Night:
    """One run's folder: its state (steps done, what each measured) and its reflexa home."""

    def __init__(self, folder: Path, args: dict[str, Any] | None = None) -> None:
        self.folder, self.file = folder, folder / "state.json"
        self.so_far = False  # only read the steps done: run none
        if self.file.exists():
            self.state = json.loads(self.file.read_text())
        elif args is None:
            sys.exit(f"nights_bench: {folder} has no state.json to resume")
        else:
            self.state = {"args": args, "done": {}, "started": time.time()}
        port = str(self.state["args"]["port"])
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("REFLEXA_")}
        self.env |= DEMO_ENV | {"REFLEXA_HOME": str(folder / "home"), "REFLEXA_SERVER__PORT": port}

    def step(self, key: str, work: Any) -> Any:
        """`work()`'s result, run once: recorded under `key` as soon as it ends."""
        if key not in self.state["done"] and self.so_far:
            raise NotYet(key)
        if key not in self.state["done"]:
            started, code = time.perf_counter(), commit()  # a step's processes start now
            result = work()
            seconds = round(time.perf_counter() - started, 1)
            self.state["done"][key] = {"result": result, "seconds": seconds, "commit": code}
            if commit() != code:  # the checkout changed under a step: both are said
                self.state["done"][key]["commit_at_end"] = commit()
            self.file.write_text(json.dumps(self.state, indent=1, default=str))
            print(f"nights_bench: {key} done", file=sys.stderr, flush=True)
        return self.state["done"][key]["result"]

    def reflexa(self, *words: str, env: dict[str, str] | None = None) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, "-m", "reflexa.agent", *words, "--json"],
            stdout=subprocess.PIPE, text=True, env=self.env | (env or {}), check=False,
        )  # fmt: skip
        if done.returncode not in (0, 1) or not done.stdout.strip():  # a cycle may exit 1
            sys.exit(f"nights_bench: `reflexa {' '.join(words)}` failed ({done.returncode})")
        return json.loads(done.stdout)


def traffic_file(folder: Path, suite: str, night: int, count: int) -> Path:
    """The day's new training prompts of `suite`, as a suite file a user would run: a
    label-free suite's carry no scoring (the user has none). What the bench knows is right
    for each prompt goes to `key.json` beside it, to measure the night's rows with."""
    if suite == "orders":
        doc, key = nights_user.suite(night, count)
    else:
        drawn = [i for i in GENERATED[suite](1000 + night).items if i.split == "train"][:count]
        rows: list[dict[str, Any]] = [
            {"id": i.id, "prompt": i.user_prompt, "checks": i.check_specs(),
             "scoring": i.scoring_specs(), "tags": i.tags} for i in drawn
        ]  # fmt: skip
        key = {r["prompt"]: r.get("scoring", []) for r in rows}
        if suite in LABEL_FREE:
            rows = [{k: v for k, v in r.items() if k != "scoring"} for r in rows]
        doc = {"name": suite, "allow_gold": suite not in LABEL_FREE,
               "items": [r | {"split": "train"} for r in rows]}  # fmt: skip
    path = folder / "traffic" / f"{suite}-night{night}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    keys = folder / "traffic" / "key.json"
    known = json.loads(keys.read_text()) if keys.exists() else {}
    keys.write_text(json.dumps(known | key))
    return path


def row_precision(folder: Path, dataset: str | None) -> dict[str, dict[str, int]]:
    """The night's SFT rows by justification, scored against the bench's own key (the loop
    never saw it): rows, how many the key covers, how many of those are right."""
    if not dataset or not Path(dataset).is_dir():
        return {}
    from datasets import load_from_disk

    key = json.loads((folder / "traffic" / "key.json").read_text())
    out: dict[str, dict[str, int]] = {}
    for row in load_from_disk(dataset):
        if row.get("source") == "repair_turn" or "messages" not in row:
            continue
        prompt, answer = row["messages"][0]["content"], row["messages"][-1]["content"]
        count = out.setdefault(row["justification"], {"rows": 0, "scored": 0, "right": 0})
        count["rows"] += 1
        if key.get(prompt):
            count["scored"] += 1
            count["right"] += bool(asyncio.run(score(key[prompt], prompt, [answer]))[0])
    return out


def measure(run: Night, adapter: str) -> dict[str, Any]:
    """Each suite's test split and the frozen suite, first answers through `adapter`."""
    out = {}
    for suite in (*SUITES, "capabilities"):
        name = str(run.folder / "traffic" / "orders-night0.yaml") if suite == "orders" else suite
        split = [] if suite == "capabilities" else ["--split", "test"]
        report = run.reflexa("eval", "run", name, *split, "--no-reflect", "--no-memory",
                             "--adapter", adapter)  # fmt: skip
        out[suite] = report["metrics"]["overall"]["first_attempt_pass"]["rate"]
    return out


def night_summary(result: dict[str, Any]) -> dict[str, Any]:
    """What a night's cycle did: decision, reason, rows and precision, time and gate share."""
    stages = result.get("stages") or []
    seconds = sum(s.get("seconds", 0) for s in stages)
    gate = sum(s.get("seconds", 0) for s in stages if s["stage"].startswith("gate"))
    compiled = compile_stage(stages)
    return {
        "status": result.get("status"),
        "reason": result.get("reason"),
        "adapter": (result.get("adapter") or {}).get("version"),
        "dev": result.get("dev"),
        "frozen": (result.get("suites") or {}).get("capabilities"),
        "notes": result.get("notes"),
        "blend": result.get("blend"),  # a candidate only the frozen suite refused, blended back
        "rows": {j: p["examples"] for j, p in (compiled.get("precision") or {}).items()},
        "examples": compiled.get("examples"),  # unique rows trained on
        "replay": compiled.get("replay"),  # earlier nights' rows: how many there were and kept
        "precision": compiled.get("precision"),  # by the store's scoring, where it has some
        "form_admission": compiled.get("form_admission"),
        "consistency_admission": compiled.get("consistency_admission"),
        "stages": {
            name: round(sum(s.get("seconds", 0) for s in stages if s["stage"] == name), 1)
            for name in dict.fromkeys(s["stage"] for s in stages)
        },
        "seconds": round(seconds, 1),  # of every try's recorded stages (a SIGKILL's is lost)
        "tries": 1 + sum(s["stage"] == "resume" for s in stages),  # taken up after a stop
        "gate_share": round(gate / seconds, 3) if seconds else None,
    }


def gate_runs(folder: Path, cycle_id: str | None) -> list[dict[str, Any]]:
    """Where the night's gate time went: each of its eval runs (side, suite, recall or not,
    answers an item), its items, how many were reused from another night (copied answers
    keep their first time, before the run began) and seconds from its first episode to its
    last."""
    db = folder / "home" / "reflexa.db"
    if not cycle_id or not db.exists():
        return []
    out = []
    with contextlib.closing(sqlite3.connect(db)) as conn:
        for run_id, suite, c, created in cycle_runs(conn, cycle_id):
            times = conn.execute(
                "select created_at, finished_at from episodes "
                "where eval_run_id = ? and status != 'error'", (run_id,)
            ).fetchall()  # fmt: skip
            asked = [(a, b) for a, b in times if a >= created and b]
            out.append({"adapter": c.get("adapter"), "suite": suite, "split": c.get("split"),
                        "memory": c.get("memory"), "answers": 1 + (c.get("draws") or 0),
                        "items": len(times), "reused": len(times) - len(asked),
                        "seconds": busy(asked)})  # fmt: skip
    return out


def cycle_runs(conn: sqlite3.Connection, cycle_id: str) -> list[tuple[str, str, dict, str]]:
    """The cycle's finished eval runs, oldest first: id, suite, config, when it began."""
    runs = conn.execute("select id, suite, config, created_at from eval_runs "
                        "where status = 'done' order by created_at").fetchall()  # fmt: skip
    configs = [(r, json.loads(r[2])) for r in runs]
    return [(r[0], r[1], c, r[3]) for r, c in configs if c.get("cycle") == cycle_id]


def busy(spans: list[tuple[str, str]]) -> float:
    """Seconds when at least one of the spans (ISO start, end) was under way: a run measured
    in two parts (futility's half, then the rest) is not charged the time between."""
    total, end = 0.0, None
    for a, b in sorted((datetime.fromisoformat(a), datetime.fromisoformat(b)) for a, b in spans):
        if end is None or a > end:
            total += (b - a).total_seconds()
            end = b
        elif b > end:
            total += (b - end).total_seconds()
            end = b
    return round(total, 1)


def run_nights(run: Night) -> dict[str, Any]:
    args = run.state["args"]
    home = run.folder / "home"
    demo_models = ROOT / ".demo" / "models"
    if demo_models.is_dir() and not (home / "models").exists():
        shutil.copytree(demo_models, home / "models")
    if not run.so_far:
        run.reflexa("model", "prepare")
        run.reflexa("model", "serve")
    traffic_file(run.folder, "orders", 0, 0)  # the user's dev and test, for measuring
    served = "base"
    curve = [run.step("measure 0", lambda: measure(run, "base"))]
    nights: list[dict[str, Any]] = []
    try:
        for n in range(1, args["nights"] + 1):
            served = _night(run, n, served, curve, nights)
    except NotYet as e:
        print(f"nights_bench: {len(nights)} nights measured so far ({e}: not yet)", file=sys.stderr)
    return {
        "complete": len(nights) == args["nights"],
        "nights": nights,
        "test_by_night": {s: [point[s] for point in curve] for s in SUITES},
        "frozen_by_night": [point["capabilities"] for point in curve],
        "commits": {k: v.get("commit") for k, v in run.state["done"].items()},
        "traffic_seconds": {
            k: v["seconds"] for k, v in run.state["done"].items() if k.startswith("traffic")
        },
    }


def _night(
    run: Night, n: int, served: str, curve: list[dict[str, Any]], nights: list[dict[str, Any]]
) -> str:
    """Day `n`'s traffic, night `n`'s cycle and the measurement after it (appended to
    `curve` and `nights` once all are done); returns the adapter served after the night."""
    args = run.state["args"]
    for suite in SUITES:
        path = traffic_file(run.folder, suite, n, args["traffic"])
        run.step(f"traffic {n} {suite}", lambda path=path: _summary(
            run.reflexa("eval", "run", str(path), "--split", "train")))  # fmt: skip
    if args.get("chat"):
        run.step(f"traffic {n} chat", lambda: day_of_chat(run, args["chat"], seed=n))
    gold = {} if n <= args["gold_nights"] else {"REFLEXA_CYCLE__ALLOW_GOLD": "false"}
    result = run.step(f"night {n}", lambda: run.reflexa(
        "cycle", "--trigger", "schedule", env=gold))  # fmt: skip
    summary = night_summary(result) | {"night": n, "gold": not gold}
    summary["gate_runs"] = gate_runs(run.folder, result.get("cycle_id"))
    dataset = compile_stage(result.get("stages") or []).get("dataset")
    summary["rows_by_key"] = run.step(f"rows {n}", lambda: row_precision(run.folder, dataset))
    if result.get("status") == "promoted":
        served = summary["adapter"]
    curve.append(run.step(f"measure {n}", lambda: measured(run, served, n)))
    nights.append(summary | {"served": served})
    return served


def measured(run: Night, served: str, n: int) -> dict[str, Any]:
    """The test splits through `served` after night `n`, its snapshot taken beside them: in
    one step, so a run made before snapshots and resumed takes none of a night long past."""
    result = measure(run, served)
    snapshot(run.folder, n)
    return result


def snapshot(folder: Path, n: int) -> str:
    """The store and the adapters as night `n` left them, for `--fork`."""
    out = folder / "snapshots" / f"night-{n}"
    shutil.copytree(folder / "home" / "adapters", out / "adapters", dirs_exist_ok=True)
    with contextlib.closing(sqlite3.connect(folder / "home" / "reflexa.db")) as db, \
            contextlib.closing(sqlite3.connect(out / "reflexa.db")) as copy:  # fmt: skip
        db.backup(copy)  # consistent, whatever the journal holds
    return str(out)


def fork(source: Path, night: int, nights: int) -> Night:
    """A new run that goes on from `source`'s night `night`: its home is that night's
    snapshot, its steps up to that night are the source's."""
    snap = source / "snapshots" / f"night-{night}"
    if not snap.is_dir():
        sys.exit(f"nights_bench: {source} has no snapshot of night {night} to fork from")
    state = json.loads((source / "state.json").read_text())
    folder = WORK / f"nights-{time.strftime('%Y%m%d-%H%M%S')}"  # made by the copy
    shutil.copytree(snap, folder / "home")
    shutil.copytree(source / "traffic", folder / "traffic")
    with contextlib.closing(sqlite3.connect(folder / "home" / "reflexa.db")) as db, db:
        db.execute("update adapters set path = replace(path, ?, ?)",  # its own copies
                   (str(source / "home"), str(folder / "home")))  # fmt: skip
    args = state["args"] | {"nights": nights, "forked_from": {"run": str(source), "night": night}}
    run = Night(folder, args)
    run.state["done"] = {k: v for k, v in state["done"].items() if int(k.split()[1]) <= night}
    run.file.write_text(json.dumps(run.state, indent=1, default=str))
    print(f"nights_bench: run folder {folder}, from {source} night {night}", file=sys.stderr)
    return run


def day_of_chat(run: Night, count: int, seed: int) -> dict[str, Any]:
    """`count` chat exchanges with the model served (bench/chat_traffic.py), imported as a
    gateway's log: what a night's rehearsal draws on."""
    served = run.reflexa("model", "serve")
    where = served.get("merged") or served  # the promoted adapter, merged where it is so
    log = run.folder / "traffic" / f"chat-{seed}.jsonl"
    chat_log(where["url"], where["model"], chat_prompts(count, seed), log)
    return run.reflexa("traffic", "import", str(log))


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    overall = report["metrics"]["overall"]
    return {"run_id": report["run_id"], "items": overall["items"],
            "first": overall["first_attempt_pass"]["rate"],
            "final": overall["final_pass"]["rate"]}  # fmt: skip


def write_page(results: Path) -> Path:
    """nights.html: per suite, test pass by night for every nights-*.json, and a table."""
    docs = [(f, json.loads(f.read_text())) for f in sorted(results.glob("nights-*.json"))]
    suites = sorted({s for _, d in docs for s in d["test_by_night"]} | {"capabilities"})
    fig, axes = plt.subplots(1, len(suites), figsize=(3.2 * len(suites), 3.2), squeeze=False)
    for ax, suite in zip(axes[0], suites, strict=True):
        for file, doc in docs:
            frozen = suite == "capabilities"
            curve = doc["frozen_by_night"] if frozen else doc["test_by_night"].get(suite)
            if curve:
                ax.plot(range(len(curve)), curve, marker="o", label=file.stem[7:])
        ax.set_title(suite + (" (frozen)" if suite == "capabilities" else " (test)"))
        ax.set_xlabel("night (0: base model)")
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel("first-attempt pass")
    axes[0][-1].legend(fontsize=7)
    rows = []
    for file, doc in docs:
        for night in doc["nights"]:
            cells = [file.name, doc["commit"]["sha"][:7], str(night["night"]), str(night["gold"]),
                     str(night["status"]), str(night["served"]),
                     ", ".join(f"{j} {k}" for j, k in (night["rows"] or {}).items()),
                     f"{night['seconds'] / 60:.1f}",
                     f"{sum(v for k, v in night['stages'].items() if k.startswith('train')):.0f}",
                     f"{night['gate_share'] or 0:.0%}",
                     " / ".join(f"{r:.1%}" for r in
                                (night.get("false_promotion") or {}).get("smoothed", [])),
                     _blend_cell(night.get("blend")), str(night["reason"])]  # fmt: skip
            rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    head = ["result", "commit", "night", "gold", "outcome", "served after", "rows", "minutes",
            "training s", "gate share", "false promotion, 1 / 2 candidates (simulated)",
            "blend", "the gate's reason"]  # fmt: skip
    page = results / "nights.html"
    page.write_text(f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Reflexa: nights</title><style>body{{font-family:system-ui,sans-serif;max-width:1200px;
margin:2em auto}}td,th{{border:1px solid #ddd;padding:.3em .6em;vertical-align:top}}
table{{border-collapse:collapse;font-size:90%}}</style></head><body>
<h1>Learning over nights</h1>
<p>Written by bench/nights_bench.py from bench/results/nights-*.json: each day new traffic,
each night the scheduled job, then every suite's test split (never a decision).</p>
<img alt="test pass by night, per suite" src="data:image/png;base64,{figure_png(fig)}">
<table><tr>{"".join(f"<th>{h}</th>" for h in head)}</tr>{"".join(rows)}</table>
</body></html>
""")
    return page


def _blend_cell(blend: dict[str, Any] | None) -> str:
    """What a night's blend did: none tried, skipped and why, or its adapter's decision."""
    if not blend:
        return ""
    if "adapter" not in blend:
        return f"skipped: {blend.get('skipped')}"
    return f"{blend['adapter']} (of {blend.get('of', '?')}): {blend['decision']}"


def from_source(tool: str, prefix: str, args: argparse.Namespace) -> Night:
    """A new run folder of `tool` (night_again, blend_again) on the nights run `args.source`,
    its arguments recorded; or exit saying why not."""
    if not (args.source / "state.json").exists():
        sys.exit(f"{tool}: {args.source} is not a nights_bench run")
    settings = vars(args) | {"source": str(args.source.resolve())}
    return Night(new_folder(tool, prefix), {k: v for k, v in settings.items() if k != "resume"})


def new_folder(tool: str, prefix: str) -> Path:
    """A new run folder in .bench-work, named by the time, said on stderr."""
    folder = WORK / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder.mkdir(parents=True)
    print(f"{tool}: run folder {folder} (--resume it after a kill)", file=sys.stderr)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nights", type=int, default=4)
    parser.add_argument("--traffic", type=int, default=100, help="New prompts a suite a day.")
    parser.add_argument("--gold-nights", type=int, default=1, help="Nights gold is allowed.")
    parser.add_argument("--chat", type=int, default=0, help="Chat exchanges a day (rehearsal).")
    parser.add_argument("--port", type=int, default=8016, help="The bench's own vLLM port.")
    parser.add_argument("--resume", type=Path, help="A run's folder, to continue it.")
    parser.add_argument("--fork", type=Path, help="A run's folder, to go on from --night.")
    parser.add_argument("--night", type=int, help="With --fork: the night to go on from.")
    parser.add_argument("--report", action="store_true", help="Only redraw nights.html.")
    parser.add_argument("--so-far", action="store_true",
                        help="With --resume: write the results of the nights measured so far "
                        "(marked partial), running nothing.")  # fmt: skip
    args = parser.parse_args()
    if args.report:
        print(f"written to {write_page(RESULTS)}")
        return
    if args.so_far and not args.resume:
        sys.exit("nights_bench: --so-far reads a run: name it with --resume")
    if args.resume:
        run = Night(args.resume)
        run.so_far = args.so_far
    elif args.fork:
        if args.night is None or not 1 <= args.night < args.nights:
            sys.exit("nights_bench: --fork needs --night, from 1 to fewer than --nights")
        run = fork(args.fork, args.night, args.nights)
    else:
        settings = {k: v for k, v in vars(args).items() if k not in ("resume", "report")}
        run = Night(new_folder("nights_bench", "nights"), settings)
    try:
        doc = run_nights(run)
    finally:
        if not run.so_far:
            subprocess.run([sys.executable, "-m", "reflexa.agent", "model", "stop"], env=run.env,
                           check=False)  # fmt: skip
    doc = {"args": run.state["args"], "folder": str(run.folder)} | doc
    for night in doc["nights"]:  # the gate's false-promotion rate on the night's real items
        gate = gate_of(run.folder / "home", run.state["done"][f"night {night['night']}"]["result"])
        if gate is not None:
            sim = simulate(run.folder / "home", gate, [1, 2], 1000, 0)["false_promotion"]
            night["false_promotion"] = {way: [r["rate"] for r in rows] for way, rows in sim.items()}
    for suite, curve in doc["test_by_night"].items():
        print(f"{suite}: " + " → ".join(f"{p:.0%}" for p in curve))
    print(f"written to {write_result('nights', doc)}")
    print(f"learning curves: {write_page(RESULTS)}")


if __name__ == "__main__":
    main()
