"""`reflexa failures`: the failed episodes, and the corrections as a dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from reflexa.agent.cli.common import print_json
from reflexa.agent.errors import ReflexaError
from reflexa.agent.settings import Settings
from reflexa.agent.store import open_store
from reflexa.trainers.dataset import build_dataset


@click.group()
def failures() -> None:
    """Episodes whose first answer failed its checks."""


@failures.command("list")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def failures_list(settings: Settings, limit: int, as_json: bool) -> None:
    """The newest failures, with how they ended."""
    with open_store(settings) as store:
        rows = store.failures(limit)
    if as_json:
        print_json(rows)
        return
    if not rows:
        click.echo("no failures recorded")
        return
    table = Table("episode", "when", "status", "attempts", "prompt", "error")
    for r in rows:
        table.add_row(
            r["id"][:12], r["created_at"][:19], r["status"], str(r["n_attempts"]),
            r["prompt"][:60], (r["error"] or "")[:60],
        )  # fmt: skip
    Console().print(table)


def precision_line(precision: dict[str, dict[str, Any]]) -> str:
    """`justification: right/scored (share)` for each, as scoring judged the rows."""
    parts = [
        f"{j} {p['right']}/{p['scored']} ({p['precision']:.0%})"
        if p["precision"] is not None
        else f"{j} {p['examples']} (unscored)"
        for j, p in precision.items()
    ]
    return "precision by scoring: " + (", ".join(parts) or "no rows")


@failures.command("export")
@click.option("--format", "fmt", type=click.Choice(["sft", "dpo", "grpo", "kto"]), required=True)
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True)
@click.option("--no-gold", is_flag=True, help="Leave out gold answers: the model's own only.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def failures_export(settings: Settings, fmt: str, out: Path, no_gold: bool, as_json: bool) -> None:
    """Write the corrections as a Hugging Face dataset (SFT `messages` or DPO pairs)."""
    if out.exists() and any(out.iterdir()):
        raise ReflexaError(f"{out} exists and is not empty; choose a new folder")
    with open_store(settings) as store:
        compiled, examples = build_dataset(
            store, out, fmt,  # type: ignore[arg-type]
            allow_gold=settings.cycle.allow_gold and not no_gold,
            justifications=settings.cycle.justifications,
            allow_unconfined=settings.sandbox.allow_unconfined,
            repair_turns=settings.cycle.repair_turns,
        )  # fmt: skip
    doc = {"out": str(out), "format": fmt} | compiled.summary(examples)
    if as_json:
        print_json(doc)
        return
    sources = ", ".join(f"{k} {v}" for k, v in compiled.by_source().items())
    click.echo(
        f"wrote {examples} {fmt} examples to {out} ({sources}); "
        f"{compiled.protected_skipped} held-out/gate prompts left out, "
        f"{compiled.merged} duplicates merged"
    )
    click.echo(precision_line(compiled.precision()))
