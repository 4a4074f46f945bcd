"""`reflexa ask`: one prompt, answered, checked and repaired."""

from __future__ import annotations

import asyncio
from typing import Any

import click

from reflexa.agent.app.agent import EpisodeRequest, EpisodeResult, open_agent, refuse_bad_input
from reflexa.agent.chat import verdict_line
from reflexa.agent.cli.common import (
    ADAPTER_HELP,
    NO_MEMORY_HELP,
    client_for,
    err,
    parse_check_option,
    print_json,
)
from reflexa.agent.errors import ReflexaError
from reflexa.agent.settings import Settings
from reflexa.agent.store import open_store
from reflexa.trainers.registry import resolve_adapter


@click.command()
@click.argument("prompt")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--max-repairs", type=click.IntRange(0, 10), default=None, help="Repair budget.")
@click.option("--adapter", default=None, help=ADAPTER_HELP)
@click.option(
    "--check",
    "checks",
    multiple=True,
    callback=parse_check_option,
    help='A check the answer must pass, as JSON: \'{"type": "regex", "pattern": "^\\\\d+$"}\'. '
    "Repeatable. An `expected` value in one only scores the answer (the model never sees "
    "it). Without checks, the model reviews its own answer.",
)
@click.option(
    "--score",
    "scoring",
    multiple=True,
    callback=parse_check_option,
    help='A check that only scores the answer (gold), e.g. \'{"type": "numeric", "expected": '
    "42}'. Repeatable.",
)
@click.option("--thread", "thread_id", default=None, help="Continue this chat thread.")
@click.option("--no-memory", is_flag=True, help=NO_MEMORY_HELP)
@click.pass_obj
def ask(
    settings: Settings,
    prompt: str,
    as_json: bool,
    max_repairs: int | None,
    adapter: str | None,
    checks: list[dict[str, Any]],
    scoring: list[dict[str, Any]],
    thread_id: str | None,
    no_memory: bool,
) -> None:
    """Answer one prompt: generate, check, and repair if a check fails."""
    request = EpisodeRequest(
        prompt, checks, scoring, thread_id=thread_id, max_repairs=max_repairs,
        memory=not no_memory,
    )  # fmt: skip
    with open_store(settings) as store:
        # Bad input is refused (and recorded) before any model starts.
        refused = refuse_bad_input(store, request, adapter or settings.model.name, settings.reflect)
        if refused:
            raise ReflexaError(f"{refused.error} (recorded as episode {refused.episode_id})")
        client = client_for(settings)
        adapter = resolve_adapter(settings.workspace(), store, client, adapter)

        async def run() -> EpisodeResult:
            async with open_agent(settings, client, store, adapter) as agent:
                with err.status("answering"):
                    return await agent.run(request)

        result = asyncio.run(run())
    if as_json:
        print_json(result.to_dict())
        if result.error:
            raise SystemExit(1)
        return
    if result.error:
        raise ReflexaError(f"{result.error} (episode {result.episode_id})")
    click.echo(result.answer)
    err.print(f"[dim]{_status_note(result)} · episode {result.episode_id}[/]", soft_wrap=True)


def _status_note(result: EpisodeResult) -> str:
    repairs = len(result.attempts) - 1
    used = result.attempts[0].get("memory", {}).get("used") if result.attempts else None
    recalled = f" · recalled {len(used)} past correction{'s' * (len(used) != 1)}" if used else ""
    note = {
        "passed": verdict_line(result.attempts[-1]),
        "repaired": f"✓ repaired after {repairs} repair{'s' * (repairs != 1)}",
        "unresolved": f"✗ no attempt passed its checks after {repairs} repairs; best shown",
        "verifier_error": verdict_line(result.attempts[-1]),
        "unchecked": verdict_line(result.attempts[-1]),
    }.get(result.status, result.status)
    return note + recalled
