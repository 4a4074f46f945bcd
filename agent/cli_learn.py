"""The learning commands: `failures export`, `train`, `adapters`, `cycle`, `schedule`.

The trainer's heavy imports (torch, TRL) happen only in the commands that train.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import MofNCompleteColumn, Progress, TaskID
from rich.table import Table

from agent.cli_common import client_for, err, print_json
from agent.errors import ReflexaError
from agent.settings import Settings
from agent.store import Store, open_store
from trainers import registry, schedule
from trainers.config import TrainConfig
from trainers.cycle import run_cycle, train_config
from trainers.dataset import compile_examples, to_records, write_dataset


def _bar() -> Progress:
    return Progress(*Progress.get_default_columns(), MofNCompleteColumn(), console=err)


def precision_line(precision: dict[str, dict[str, Any]]) -> str:
    """`justification: right/scored (share)` for each, as scoring judged the rows."""
    parts = [
        f"{j} {p['right']}/{p['scored']} ({p['precision']:.0%})"
        if p["precision"] is not None
        else f"{j} {p['examples']} (unscored)"
        for j, p in precision.items()
    ]
    return "precision by scoring: " + (", ".join(parts) or "no rows")


@click.command("export")
@click.option("--format", "fmt", type=click.Choice(["sft", "dpo"]), required=True)
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True)
@click.option("--no-gold", is_flag=True, help="Leave out gold answers: the model's own only.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def failures_export(settings: Settings, fmt: str, out: Path, no_gold: bool, as_json: bool) -> None:
    """Write the corrections as a Hugging Face dataset (SFT `messages` or DPO pairs)."""
    if out.exists() and any(out.iterdir()):
        raise ReflexaError(f"{out} exists and is not empty; choose a new folder")
    with open_store(settings) as store:
        compiled = compile_examples(
            store,
            allow_gold=settings.cycle.allow_gold and not no_gold,
            justifications=settings.cycle.justifications,
        )
    records = to_records(compiled.examples, fmt)  # type: ignore[arg-type]
    if not records:
        raise ReflexaError(
            f"no {fmt} examples yet: run `reflexa eval run SUITE --split train` "
            "(or chat with checks) to collect corrections"
        )
    write_dataset(records, out, fmt, suites=compiled.suites())  # type: ignore[arg-type]
    doc = {
        "out": str(out),
        "format": fmt,
        "examples": len(records),
        "by_source": compiled.by_source(),
        "protected_skipped": compiled.protected_skipped,
        "duplicates_merged": compiled.merged,
        "unjustified_skipped": compiled.unjustified,
        "heldout_sharing_entities": compiled.sharing_entities,
        "precision": compiled.precision(),
    }
    if as_json:
        print_json(doc)
        return
    sources = ", ".join(f"{k} {v}" for k, v in doc["by_source"].items())  # type: ignore[attr-defined]
    click.echo(
        f"wrote {len(records)} {fmt} examples to {out} ({sources}); "
        f"{compiled.protected_skipped} held-out/gate prompts left out, "
        f"{compiled.merged} duplicates merged"
    )
    click.echo(precision_line(doc["precision"]))  # type: ignore[arg-type]


@click.command()
@click.option("--method", type=click.Choice(["sft", "dpo"]), default=None, help="Default: sft.")
@click.option(
    "--dataset",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="A folder from `failures export`. Default: compile the store's now.",
)
@click.option(
    "--train-config",
    "train_config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="YAML training config (default: cycle.train_config, else built-in).",
)
@click.option("--max-steps", type=click.IntRange(1), default=None, help="Stop after N steps.")
@click.option("--parent", default=None, hidden=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def train(
    settings: Settings,
    method: str | None,
    dataset: Path | None,
    train_config_file: Path | None,
    max_steps: int | None,
    parent: str | None,
    as_json: bool,
) -> None:
    """Train a LoRA adapter (TRL SFT by default) and register it as a candidate."""
    from trainers.train import train_adapter  # torch, TRL: only now

    config = (
        TrainConfig.from_yaml(train_config_file) if train_config_file else (train_config(settings))
    )
    config = config.replace(method=method, max_steps=max_steps)
    with open_store(settings) as store:
        if dataset is None:
            dataset = _compile_now(settings, store, config)
        with _bar() as bar:
            task = bar.add_task(f"training ({config.method})", total=None)

            def step(done: int, total: int, loss: float | None) -> None:
                label = f"training ({config.method}), loss {loss:.3f}" if loss else None
                bar.update(task, completed=done, total=total, description=label or "training")

            row = train_adapter(settings, store, dataset, config, parent=parent, on_step=step)
    if as_json:
        print_json(row)
        return
    losses = row["metrics"]["train"]["loss"]
    curve = f", loss {losses[0]['loss']:.3f} → {losses[-1]['loss']:.3f}" if losses else ""
    click.echo(
        f"adapter {row['version']} ({row['name']}): {row['examples']} examples, "
        f"{row['metrics']['train']['train_s']:.0f} s{curve}; status candidate"
    )
    click.echo(f"  {row['path']}")


def _compile_now(settings: Settings, store: Store, config: TrainConfig) -> Path:
    compiled = compile_examples(
        store, allow_gold=settings.cycle.allow_gold, justifications=settings.cycle.justifications
    )
    records = to_records(compiled.examples, config.method)
    if len(records) < config.min_examples:
        raise ReflexaError(
            f"{len(records)} {config.method} examples; at least {config.min_examples} are needed "
            "(min_examples): collect more with `reflexa eval run SUITE --split train`"
        )
    out = settings.home_dir / "datasets" / time.strftime("train-%Y%m%d-%H%M%S")
    return write_dataset(records, out, config.method, suites=compiled.suites())


@click.group()
def adapters() -> None:
    """The adapter registry: list, promote, roll back."""


@adapters.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def adapters_list(settings: Settings, as_json: bool) -> None:
    """Every adapter with its status and the gate's figures."""
    with open_store(settings) as store:
        rows = store.adapters()
    if as_json:
        print_json(rows)
        return
    if not rows:
        click.echo("no adapters yet: run `reflexa cycle` (or `reflexa train`)")
        return
    table = Table(
        "version",
        "status",
        "method",
        "examples",
        "held-out (current → candidate)",
        "created",
        "reason",
    )
    for r in rows:
        held = (r["metrics"].get("gate") or {}).get("heldout")
        figure = f"{held['a']:.0%} → {held['b']:.0%} (p {held['p_value']:.2g})" if held else ""
        table.add_row(
            r["version"],
            r["status"],
            r["method"],
            str(r["examples"]),
            figure,
            r["created_at"][:16],
            (r["reason"] or "")[:70],
        )
    Console().print(table)


@adapters.command("promote")
@click.argument("version")
@click.pass_obj
def adapters_promote(settings: Settings, version: str) -> None:
    """Make VERSION the default for ask, chat, serve and eval (loads it into vLLM)."""
    client = client_for(settings)
    with open_store(settings) as store:
        row = registry.promote(settings, store, client, version, "promoted by hand")
    click.echo(f"promoted {row['version']} ({row['name']})")


@adapters.command("rollback")
@click.pass_obj
def adapters_rollback(settings: Settings) -> None:
    """Reject the promoted adapter and go back to the one before it (or the base model)."""
    client = client_for(settings)
    with open_store(settings) as store:
        row = registry.rollback(settings, store, client)
    click.echo(f"rolled back: the default is now {row['version'] if row else 'the base model'}")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--trigger", type=click.Choice(["cli", "schedule"]), default="cli", hidden=True)
@click.pass_obj
def cycle(settings: Settings, as_json: bool, trigger: str) -> None:
    """One self-repair cycle: sample, compile, train, gate, promote or reject.

    Exit status 0 when promoted, rejected or skipped (too little data), 1 when it failed."""
    with _bar() as bar:
        tasks: dict[str, TaskID] = {}

        def progress(what: str, done: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = bar.add_task(what, total=total)
            bar.update(tasks[what], completed=done, total=total)

        result = run_cycle(
            settings,
            lambda: client_for(settings),
            trigger=trigger,
            log=err.print,
            on_progress=progress,
        )
    if as_json:
        print_json(_cycle_summary(result))
    else:
        _print_cycle(result)
    if result["status"] == "failed":
        raise SystemExit(1)


def _cycle_summary(result: dict[str, Any]) -> dict[str, Any]:
    gate = result["gate"] or {}
    suites = {
        name: {k: s[k] for k in ("current", "candidate", "difference", "p_value", "items")}
        for name, s in gate.get("suites", {}).items()
    }
    compiled: dict[str, Any] = next((s for s in result["stages"] if s["stage"] == "compile"), {})
    return {k: result[k] for k in ("cycle_id", "status", "decision", "reason", "stages")} | {
        "adapter": result["adapter"],
        "heldout": gate.get("heldout"),
        "suites": suites,
        "precision": compiled.get("precision"),
        "memory": gate.get("memory"),
    }


def _print_cycle(result: dict[str, Any]) -> None:
    adapter = result["adapter"]
    click.echo(
        f"cycle {result['cycle_id'][:12]}: {result['status']}"
        + (f" {adapter['version']}" if adapter else "")
        + f": {result['reason']}"
    )
    for s in result["stages"]:
        click.echo(f"  {s['stage']:8s} {s['seconds']:7.1f} s" + ("" if s["ok"] else " FAILED"))
        if s.get("precision"):
            click.echo(f"    {precision_line(s['precision'])}")
    if result["gate"]:
        click.echo("  gate suite                       current  candidate  p")
        for name, s in result["gate"]["suites"].items():
            click.echo(
                f"  {name:32s} {s['current']:6.1%}  {s['candidate']:8.1%}  {s['p_value']:.3g}"
            )
        for side, effects in (result["gate"].get("memory") or {}).items():
            for name, e in effects.items():
                if isinstance(e, dict):
                    click.echo(f"  recall, {side} on {name}: {e['reason']}")


@click.group("schedule")
def schedule_group() -> None:
    """Nightly cycles: a persisted cron schedule and the scheduler that runs it."""


@schedule_group.command("add")
@click.option("--cron", "expr", required=True, help="Crontab expression, e.g. '0 2 * * *'.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def schedule_add(settings: Settings, expr: str, as_json: bool) -> None:
    """Add a cycle on a cron schedule (run by `reflexa schedule run`)."""
    job = schedule.add(settings, expr)
    installed = Path(sys.executable).with_name("reflexa")
    reflexa = [str(installed)] if installed.is_file() else [sys.executable, "-m", "agent"]
    (settings.home_dir / "logs").mkdir(parents=True, exist_ok=True)  # the crontab line's log
    env = {"REFLEXA_HOME": str(settings.home_dir)} | (
        {"REFLEXA_CONFIG": os.environ["REFLEXA_CONFIG"]} if "REFLEXA_CONFIG" in os.environ else {}
    )
    job |= {
        "crontab": schedule.crontab_line(expr, reflexa, env),
        "systemd": schedule.systemd_units(expr, reflexa, env),
    }
    if as_json:
        print_json(job)
        return
    click.echo(f"scheduled {job['id']}: '{expr}', next run {job['next_run']}")
    click.echo("runs while `reflexa schedule run` is running. Or, instead, this crontab line:")
    click.echo(f"  {job['crontab']}")
    click.echo("or these systemd units:\n" + job["systemd"])


@schedule_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def schedule_list(settings: Settings, as_json: bool) -> None:
    """The scheduled cycles and when each runs next."""
    rows = schedule.jobs(settings)
    if as_json:
        print_json(rows)
    elif not rows:
        click.echo("nothing scheduled: `reflexa schedule add --cron '0 2 * * *'`")
    for r in [] if as_json else rows:
        click.echo(f"{r['id']}  '{r['cron']}'  next run {r['next_run']}")


@schedule_group.command("remove")
@click.argument("job_id")
@click.pass_obj
def schedule_remove(settings: Settings, job_id: str) -> None:
    """Remove a scheduled cycle."""
    schedule.remove(settings, job_id)
    click.echo(f"removed {job_id}")


@schedule_group.command("run")
@click.pass_obj
def schedule_run(settings: Settings) -> None:
    """Run the scheduler in the foreground until stopped (SIGINT/SIGTERM)."""
    schedule.run(settings, log=err.print)


def register(cli: click.Group, failures: click.Group) -> None:
    failures.add_command(failures_export)
    for command in (train, adapters, cycle, schedule_group):
        cli.add_command(command)
