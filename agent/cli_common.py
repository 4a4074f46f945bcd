"""What every `reflexa` command module shares: the stderr console, JSON output, the model
connection with a spinner, and `--adapter` resolution."""

from __future__ import annotations

import json

import click
from rich.console import Console

from agent.model_client import ModelClient
from agent.runtime import connect
from agent.settings import Settings
from agent.store import open_store

err = Console(stderr=True, highlight=False)


def print_json(doc: object) -> None:
    click.echo(json.dumps(doc, indent=2, default=str))


def client_for(settings: Settings) -> ModelClient:
    with err.status("connecting to vLLM") as status:
        return connect(
            settings,
            log=err.print,
            on_wait=lambda s: status.update(f"starting vLLM: waiting for /health ({s:.0f} s)"),
        )


def adapter_for(settings: Settings, client: ModelClient, adapter: str | None) -> str | None:
    """`--adapter` as given (a served name, a version like v3, `base`), or the promoted one."""
    from trainers.registry import resolve_adapter

    with open_store(settings) as store:
        return resolve_adapter(settings, store, client, adapter)
