"""`reflexa eval`: list, run and compare eval suites."""

from __future__ import annotations

import asyncio
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from reflexa.agent.app.agent import open_agent
from reflexa.agent.app.eval_run import EvalOptions, compare_eval_runs, run_eval
from reflexa.agent.cli.common import (
    ADAPTER_HELP,
    NO_MEMORY_HELP,
    client_for,
    err,
    print_json,
    progress_bar,
)
from reflexa.agent.errors import ReflexaError
from reflexa.agent.settings import Settings
from reflexa.agent.store import open_store
from reflexa.evals.builtin import BUILTIN
from reflexa.evals.report import write_report
from reflexa.evals.suite import SuiteError, resolve_suite
from reflexa.trainers.registry import resolve_adapter


@click.group("eval")
def eval_group() -> None:
    """Run eval suites: built-in ones or your own YAML/JSONL files."""


@eval_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def eval_list(as_json: bool) -> None:
    """The built-in suites."""
    suites = [factory() for factory in BUILTIN.values()]
    doc = [{"name": s.name, "items": len(s.items), "splits": s.splits(),
            "description": s.description} for s in suites]  # fmt: skip
    if as_json:
        print_json(doc)
        return
    table = Table("suite", "items", "splits", "description")
    for d in doc:
        splits = ", ".join(f"{k} {v}" for k, v in d["splits"].items())  # type: ignore[attr-defined]
        table.add_row(str(d["name"]), str(d["items"]), splits, str(d["description"]))
    Console().print(table)


@eval_group.command("run")
@click.argument("suite_name", metavar="SUITE|FILE")
@click.option("--split", default=None, help="Only this split (e.g. heldout).")
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N items.")
@click.option("--no-reflect", is_flag=True, help="First answers only: no diagnosis or repair.")
@click.option("--max-repairs", type=click.IntRange(0, 10), default=None, help="Repair budget.")
@click.option("--adapter", default=None, help=ADAPTER_HELP)
@click.option("--concurrency", type=click.IntRange(1, 256), default=8, show_default=True)
@click.option("--no-memory", is_flag=True, help=NO_MEMORY_HELP)
@click.option(
    "--draws", type=click.IntRange(0, 16), default=0,
    help="Answer each item this many more times (one request, [cycle] gate_temperature) and "
    "report the mean share of its answers that pass, as the gate judges.",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def eval_run(
    settings: Settings,
    suite_name: str,
    split: str | None,
    limit: int | None,
    no_reflect: bool,
    max_repairs: int | None,
    adapter: str | None,
    concurrency: int,
    no_memory: bool,
    draws: int,
    as_json: bool,
) -> None:
    """Run a suite; every item is a recorded episode. Re-running resumes an interrupted run."""
    try:
        suite = resolve_suite(suite_name)
    except SuiteError as e:
        raise ReflexaError(str(e)) from None
    if split is not None and split not in suite.splits():
        raise ReflexaError(f"{suite.name} has no split {split!r} (it has {sorted(suite.splits())})")
    if suite.note:
        err.print(f"[yellow]{suite.note}[/]", soft_wrap=True)
    client = client_for(settings)
    with open_store(settings) as store, progress_bar() as bar:
        adapter = resolve_adapter(settings.workspace(), store, client, adapter)
        options = EvalOptions(
            split, limit, not no_reflect, max_repairs, adapter, concurrency,
            memory=not no_memory, allow_gold=settings.cycle.allow_gold,
            draws=draws, draw_temperature=settings.cycle.gate_temperature,
        )  # fmt: skip
        task = bar.add_task(suite.name, total=None)

        async def run() -> dict[str, Any]:
            async with open_agent(settings, client, store, adapter) as agent:
                return await run_eval(
                    agent, suite, options,
                    lambda done, total: bar.update(task, completed=done, total=total),
                )  # fmt: skip

        report = asyncio.run(run())
    paths = write_report(report, settings.home_dir / "reports" / report["run_id"])
    if as_json:
        print_json({k: v for k, v in report.items() if k != "items"} | {"report": paths})
        return
    overall = report["metrics"]["overall"]
    if report["resumed"]:
        err.print(f"[dim]resumed run {report['run_id']}[/]")
    click.echo(f"{suite.name}: {overall['items']} items, run {report['run_id']}")
    for label, key in (("first-attempt pass", "first_attempt_pass"), ("final pass", "final_pass")):
        m = overall[key]
        click.echo(
            f"  {label:20s} {m['rate']:6.1%}  (95% CI {m['ci95'][0]:.1%}-{m['ci95'][1]:.1%})"
        )
    if "pass_fraction" in overall:
        f = overall["pass_fraction"]
        click.echo(f"  {'pass fraction':20s} {f['mean']:6.1%}  (over {f['answers']} answers)")
    gain, harm = overall["repair_gain"], overall["harm"]
    click.echo(
        f"  {'repair gain':20s} {gain['gain']:+6.1%}  harm {overall['harm_rate']['rate']:.1%}"
    )
    if harm["scored"]:
        click.echo(f"  {'harm ledger':20s} {harm['right_to_wrong']} right→wrong, "
                   f"{harm['wrong_to_right']} wrong→right of {harm['scored']} scored")  # fmt: skip
    if report["note"]:
        err.print(f"[yellow]{report['note']}[/]", soft_wrap=True)
    latency = overall["latency_s"]
    click.echo(f"  latency p50 {latency['p50']:.2f} s, p95 {latency['p95']:.2f} s; "
               f"tokens {overall['tokens']}; errors {overall['errors']}")  # fmt: skip
    click.echo(f"  report: {paths['html']}")


@eval_group.command("compare")
@click.argument("run_a")
@click.argument("run_b")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def eval_compare(settings: Settings, run_a: str, run_b: str, as_json: bool) -> None:
    """Compare two runs item by item (McNemar's exact test on the pairs that differ)."""
    with open_store(settings) as store:
        doc = compare_eval_runs(store, run_a, run_b)
    if as_json:
        print_json(doc)
        return
    click.echo(
        f"{doc['suite']}: {doc['items']} items in both runs (A {run_a[:12]}, B {run_b[:12]})"
    )
    for metric in ("first_attempt", "final"):
        m = doc[metric]
        click.echo(
            f"  {metric + ' pass':20s} A {m['a']:6.1%}  B {m['b']:6.1%}"
            f"  B-A {m['difference']:+6.1%}  (only A {m['only_a_passed']},"
            f" only B {m['only_b_passed']}, p = {m['p_value']:.3g})"
        )
