"""`reflexa memory`: list, retire and repair the correction memory."""

from __future__ import annotations

import asyncio

import click
from rich.console import Console
from rich.table import Table

from reflexa.agent.cli.common import client_for, err, print_json, progress_bar
from reflexa.agent.errors import ReflexaError
from reflexa.agent.settings import Settings
from reflexa.agent.store import open_store
from reflexa.trainers.registry import resolve_adapter
from reflexa.trainers.retire import retire_passed


@click.group()
def memory() -> None:
    """The correction memory: what the agent recalls as worked examples."""


@memory.command("list")
@click.option("--status", type=click.Choice(["active", "retired"]), default=None)
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def memory_list(settings: Settings, status: str | None, limit: int, as_json: bool) -> None:
    """The stored memories, newest first, with how often each was recalled."""
    with open_store(settings) as store:
        rows = store.memories(status)
    if as_json:
        print_json({"total": len(rows), "memories": rows[::-1][:limit]})
        return
    if not rows:
        click.echo("no memories yet: verified corrections (repairs, gold answers of training "
                   "items, /bad corrections in chat) become memories")  # fmt: skip
        return
    table = Table("id", "source", "status", "uses", "prompt", "answer")
    for r in rows[::-1][:limit]:
        status_text = r["status"] + (f" ({r['retired_by']})" if r["retired_by"] else "")
        table.add_row(str(r["id"]), r["source"], status_text, str(r["uses"]),
                      r["prompt"][:60], r["answer"][:40])  # fmt: skip
    Console().print(table)
    err.print(f"[dim]{len(rows)} memories[/]")


@memory.command("retire")
@click.option("--adapter", default=None, help="Default: the promoted adapter.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def memory_retire(settings: Settings, adapter: str | None, as_json: bool) -> None:
    """Stop recalling what the adapter now gets right unaided: each memory's prompt is asked
    once, without recall; those its checks pass are retired for that adapter."""
    client = client_for(settings)
    with open_store(settings) as store:
        adapter = resolve_adapter(settings.workspace(), store, client, adapter)
        if adapter is None:
            raise ReflexaError("no adapter to retire memories for (promote one, or give --adapter)")
        with progress_bar() as bar:
            task = bar.add_task(f"asking {adapter}", total=None)
            counts = asyncio.run(
                retire_passed(
                    settings.workspace(), store, client, adapter,
                    lambda done, total: bar.update(task, completed=done, total=total),
                )
            )  # fmt: skip
    if as_json:
        print_json(counts | {"adapter": adapter})
        return
    click.echo(f"{adapter} passed {counts['retired']} of {counts['tested']} memories unaided: "
               "retired for it")  # fmt: skip


@memory.command("recall")
@click.option("--model", default=None, help="One model's policies: its served name, or `base`.")
@click.option(
    "--reset",
    "suite",
    default=None,
    metavar="SUITE",
    help="Forget the policy for SUITE: the next night measures recall there again.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def memory_recall(settings: Settings, model: str | None, suite: str | None, as_json: bool) -> None:
    """Where the gate turned recall on or off, per model and suite, and why. A suite turned
    off stays off for the adapters that follow until reset here."""
    model = "" if model == "base" else model  # as the table shows it; stored as ''
    with open_store(settings) as store:
        if suite is not None:
            removed = store.reset_recall_policy(suite, model)
            if as_json:
                print_json({"suite": suite, "model": model, "removed": removed})
            else:
                noun = "policy" if removed == 1 else "policies"
                click.echo(f"{suite}: {removed} recall {noun} forgotten; the next night "
                           "measures recall there again")  # fmt: skip
            return
        rows = store.recall_policies(model)
    if as_json:
        print_json({"policies": rows})
        return
    if not rows:
        click.echo("no recall policy yet: the nightly gate sets one per model and suite")
        return
    table = Table("model", "suite", "recall", "why", "updated")
    for r in rows:
        table.add_row(r["model"] or "base", r["suite"], "on" if r["recall"] else "off",
                      r["reason"], str(r["updated_at"])[:16])  # fmt: skip
    Console().print(table)


@memory.command("rebuild")
@click.pass_obj
def memory_rebuild(settings: Settings) -> None:
    """Rebuild the full-text index from the memories table (after a crash or corruption)."""
    with open_store(settings) as store:
        store.rebuild_memory_index()
    click.echo("memory index rebuilt")
