"""`reflexa adapters`: the registry: list, promote, roll back."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from reflexa.agent.cli.common import client_for, print_json, serve_merged
from reflexa.agent.settings import Settings
from reflexa.agent.store import open_store
from reflexa.evals.report import dev_result, rows_line
from reflexa.trainers import registry


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
        "round",
        "rows by justification",
        "gate split (current → candidate)",
        "created",
        "reason",
    )
    for r in rows:
        dev = dev_result(r["metrics"].get("gate") or {})
        figure = f"{dev['a']:.0%} → {dev['b']:.0%} (p {dev['p_value']:.2g})" if dev else ""
        cycle = r["metrics"].get("cycle") or {}
        by_kind = rows_line((cycle.get("data") or {}).get("precision") or {})
        table.add_row(
            r["version"],
            r["status"],
            cycle.get("method", r["method"])
            + (" (no gold)" if cycle.get("gold") is False else "")
            + (f", on from {r['parent']}" if cycle.get("continued") else ""),
            str(cycle.get("round", "")),
            by_kind or str(r["examples"]),
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
        row = registry.promote(settings.workspace(), store, client, version, "promoted by hand")
        serve_merged(settings, store, client)
    click.echo(f"promoted {row['version']} ({row['name']})")


@adapters.command("rollback")
@click.pass_obj
def adapters_rollback(settings: Settings) -> None:
    """Reject the promoted adapter and go back to the one before it (or the base model)."""
    client = client_for(settings)
    with open_store(settings) as store:
        row = registry.rollback(settings.workspace(), store, client)
        serve_merged(settings, store, client)
    click.echo(f"rolled back: the default is now {row['version'] if row else 'the base model'}")
