"""`reflexa cycle`: one self-repair cycle now."""

from __future__ import annotations

import signal
import time
from typing import Any

import click
from rich.progress import TaskID

from reflexa.agent.app.eval_run import gate_evaluator
from reflexa.agent.cli.common import client_for, err, print_json, progress_bar
from reflexa.agent.cli.failures import precision_line
from reflexa.agent.model.connect import connect
from reflexa.agent.model.merged import gate_server
from reflexa.agent.model.promoted import serve_promoted
from reflexa.agent.settings import Settings
from reflexa.agent.store import open_store
from reflexa.evals.report import compile_stage, cycles_page, dev_result
from reflexa.trainers.cycle import run_cycle
from reflexa.trainers.errors import CycleBusy


@click.command()
@click.option(
    "--rounds", type=click.IntRange(1, 10), default=None,
    help="Cycles in a row (default: cycle.rounds), each sampling from the adapter the last "
    "promoted; the chain stops at the first that does not promote.",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--trigger", type=click.Choice(["cli", "schedule"]), default="cli", hidden=True)
@click.pass_obj
def cycle(settings: Settings, rounds: int | None, as_json: bool, trigger: str) -> None:
    """A self-repair cycle: sample, compile, train, gate, promote or reject; with
    --rounds, several in a row.

    Exit status 0 when the last is promoted, rejected or skipped (too little data, or
    another cycle is running here or on a host that shares the database), 1 when it
    failed."""
    # A stop (systemd, a Job's deadline, `kill`) ends the stage under way as a failed stage
    # with its time, and leaves the cycle running for the next to take up.
    signal.signal(signal.SIGTERM, _stopped)
    try:
        _cycles(settings, rounds, as_json, trigger)
    except CycleBusy as e:  # not a failure: the night is another host's (nothing recorded)
        if as_json:
            print_json({"status": "skipped", "decision": "skip", "reason": str(e)})
        else:
            click.echo(f"skipped: {e}")


def _stopped(signum: int, _: object) -> None:
    raise SystemExit(f"stopped by signal {signum} (SIGTERM): the next cycle takes this one up")


def _cycles(settings: Settings, rounds: int | None, as_json: bool, trigger: str) -> None:
    results: list[dict[str, Any]] = []
    with open_store(settings) as store, progress_bar() as bar:
        tasks: dict[str, TaskID] = {}

        def progress(what: str, done: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = bar.add_task(what, total=total)
            bar.update(tasks[what], completed=done, total=total)

        side = gate_server(settings)
        for n in range(1, (rounds or settings.cycle.rounds) + 1):
            started = time.perf_counter()
            try:
                result = run_cycle(
                    settings.workspace(),
                    store,
                    lambda: client_for(settings),
                    gate_evaluator(settings, store),
                    trigger=trigger,
                    round_no=n,
                    log=err.print,
                    on_progress=progress,
                    side=side,
                    # connect, not client_for: that would serve it merged itself, unrecorded
                    serve_promoted=lambda: serve_promoted(
                        settings, store, connect(settings), err.print
                    ),
                )
            finally:
                if side is not None:  # its memory back before the next round samples
                    side.close()
            results.append(result | {"round": n, "seconds": round(time.perf_counter() - started)})
            if result["status"] != "promoted":
                break
        page = settings.home_dir / "reports" / "cycles.html"
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(cycles_page(store.cycles(limit=500)[::-1]))
    if as_json:
        chain = [_cycle_summary(r) | {"seconds": r["seconds"]} for r in results]
        chained = {"rounds": chain} if len(chain) > 1 else {}
        print_json(chain[-1] | chained | {"report": str(page)})
    else:
        for r in results:
            _print_cycle(r, len(results) > 1)
        click.echo(f"learning curve over cycles: {page}")
    if results[-1]["status"] == "failed":
        raise SystemExit(1)


def _cycle_summary(result: dict[str, Any]) -> dict[str, Any]:
    gate = result["gate"] or {}
    keys = ("current", "candidate", "difference", "p_value", "lower_95", "answers", "items")
    suites = {
        name: {k: s[k] for k in keys if k in s}  # cycles before pass fractions: no lower_95
        for name, s in gate.get("suites", {}).items()
    }
    compiled = compile_stage(result["stages"])
    keep = ("cycle_id", "round", "gold", "status", "decision", "reason", "stages")
    return {k: result[k] for k in keep} | {
        "method": result.get("method"),
        "methods": result.get("methods"),
        "method_order": result.get("method_order"),
        "blend": result.get("blend"),  # a candidate only the frozen suite refused, blended back
        "adapter": result["adapter"],
        "dev": dev_result(gate),
        "suites": suites,
        "precision": compiled.get("precision"),
        "memory": gate.get("memory"),
        "notes": gate.get("notes"),
    }


def _print_cycle(result: dict[str, Any], numbered: bool = False) -> None:
    adapter = result["adapter"]
    gold = "gold allowed" if result["gold"] else "no gold"
    click.echo(
        (f"round {result['round']} ({result['seconds']} s, {gold}), " if numbered else "")
        + f"cycle {result['cycle_id'][:12]}: {result['status']}"
        + (f" {adapter['version']}" if adapter else "")
        + f": {result['reason']}"
    )
    for s in result["stages"]:
        click.echo(f"  {s['stage']:8s} {s['seconds']:7.1f} s" + ("" if s["ok"] else " FAILED"))
        if s.get("precision"):
            click.echo(f"    {precision_line(s['precision'])}")
    for method, m in (result.get("methods") or {}).items():
        if "skipped" in m:
            click.echo(f"  method {method:15s} skipped: {m['skipped']}")
            continue
        split = "none" if m["gate_split"] is None else f"{m['gate_split']:.1%}"
        click.echo(
            f"  method {method:15s} {m['adapter']} {m['decision']}, gate split {split}, "
            f"{m['examples']} rows, trained in {m['train_s']:.0f} s"
        )
    if blend := result.get("blend"):
        click.echo(f"  blend of {blend['of']} back toward the current adapter: "
                   + (f"{blend['adapter']} {blend['decision']}" if "adapter" in blend
                      else f"skipped: {blend.get('skipped')}"))  # fmt: skip
    if result["gate"]:
        click.echo("  gate suite (pass fraction)       current  candidate  p       lower bound")
        for name, s in result["gate"]["suites"].items():
            click.echo(
                f"  {name:32s} {s['current']:6.1%}  {s['candidate']:8.1%}  {s['p_value']:<7.3g}"
                f" {s.get('lower_95', float('nan')):+.1%}"
            )
        for note in result["gate"].get("notes") or []:
            click.echo(f"  gate: {note}")
        for side, effects in (result["gate"].get("memory") or {}).items():
            for name, e in effects.items():
                if isinstance(e, dict):
                    click.echo(f"  recall, {side} on {name}: {e['reason']}")
