"""What every `reflexa` command module shares: the stderr console, JSON output, the progress
bar and the model connection with a spinner."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.progress import MofNCompleteColumn, Progress

from reflexa.agent.model.client import ModelClient
from reflexa.agent.model.connect import connect
from reflexa.agent.model.promoted import serve_promoted
from reflexa.agent.model.server import is_healthy
from reflexa.agent.settings import Settings
from reflexa.agent.store import open_store
from reflexa.trainers.ports import AdapterRegistry

ADAPTER_HELP = (
    "Answer through this adapter: a version (v3), a served name, or `base`. "
    "Default: the promoted adapter, if any."
)
NO_MEMORY_HELP = "Do not recall past corrections as worked examples (see [memory])."

CONFIG = "reflexa.config"  # click's context meta: the --config file, if one was given

err = Console(stderr=True, highlight=False)


def reflexa_command() -> list[str]:
    """This `reflexa`, as argv for a scheduled run: the installed script (else `python -m
    reflexa.agent`), with the settings file this command read (--config or REFLEXA_CONFIG)."""
    installed = Path(sys.executable).with_name("reflexa")
    argv = [str(installed)] if installed.is_file() else [sys.executable, "-m", "reflexa.agent"]
    config = click.get_current_context().meta.get(CONFIG) or os.environ.get("REFLEXA_CONFIG")
    return argv + (["--config", str(Path(config).resolve())] if config else [])


def progress_bar() -> Progress:
    """The bar long work shows on stderr: description, bar, percent, time left, done/total."""
    return Progress(*Progress.get_default_columns(), MofNCompleteColumn(), console=err)


def print_json(doc: object) -> None:
    click.echo(json.dumps(doc, indent=2, default=str))


def client_for(settings: Settings) -> ModelClient:
    """A client for the model server(s), started if need be; with merging on, the promoted
    adapter's merged server too, where none answers (after a reboot, say)."""
    with err.status("connecting to vLLM") as status:
        client = connect(
            settings,
            log=err.print,
            on_wait=lambda s: status.update(f"starting vLLM: waiting for /health ({s:.0f} s)"),
        )
    to = client.route() if client.route else None
    if client.route and (to is None or not is_healthy(to[1])):
        with open_store(settings) as store:
            serve_merged(settings, store, client)
    return client


def serve_merged(
    settings: Settings, store: AdapterRegistry, client: ModelClient, retry: bool = False
) -> dict:
    """The promoted adapter's merged server in line with the registry (`serve_promoted`)."""
    with err.status("the promoted adapter: serving its merged weights"):
        return serve_promoted(settings, store, client, log=err.print, retry=retry)


def parse_check_option(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> list[dict]:
    """`--check JSON` given any number of times: the check specs (parsed later)."""
    checks = []
    for value in values:
        try:
            check = json.loads(value)
        except ValueError as e:
            raise click.BadParameter(f"not JSON: {e}") from None
        if not isinstance(check, dict):
            raise click.BadParameter('a check is a JSON object, e.g. {"type": "numeric", ...}')
        checks.append(check)
    return checks
