"""`reflexa chat`: the terminal chat."""

from __future__ import annotations

import asyncio
import sys

import click
from rich.console import Console

from reflexa.agent.app.agent import open_agent
from reflexa.agent.chat import chat_loop
from reflexa.agent.cli.common import ADAPTER_HELP, NO_MEMORY_HELP, client_for
from reflexa.agent.settings import Settings
from reflexa.agent.store import Store, open_store
from reflexa.trainers.registry import resolve_adapter


@click.command()
@click.option("--thread", "thread_id", default=None, help="Resume this thread.")
@click.option("--adapter", default=None, help=ADAPTER_HELP)
@click.option("--no-memory", is_flag=True, help=NO_MEMORY_HELP)
@click.pass_obj
def chat(settings: Settings, thread_id: str | None, adapter: str | None, no_memory: bool) -> None:
    """Chat in the terminal (works with piped input too). /help lists the commands."""
    client = client_for(settings)
    console = Console(highlight=False)
    interactive = sys.stdin.isatty()

    def read_line() -> str | None:
        try:
            return console.input("[bold cyan]you>[/] ") if interactive else _stdin_line()
        except EOFError:
            return None

    async def run(store: Store, adapter: str | None) -> None:
        async with open_agent(settings, client, store, adapter) as agent:
            await chat_loop(agent, console, read_line, thread_id, memory=not no_memory)

    with open_store(settings) as store:
        adapter = resolve_adapter(settings.workspace(), store, client, adapter)
        try:
            asyncio.run(run(store, adapter))
        except KeyboardInterrupt:
            console.print("\n[dim]bye[/]")


def _stdin_line() -> str | None:
    line = sys.stdin.readline()
    return line if line else None
