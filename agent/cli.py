"""The `reflexa` command. Each command parses, calls one library function and prints.

Results go to stdout (`--json`: one JSON document and nothing else); progress and notes go
to stderr. A `ReflexaError` anywhere becomes one `Error: …` line and exit status 1.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import MofNCompleteColumn, Progress, TaskID
from rich.table import Table

from agent.chat import chat_loop, verdict_line
from agent.cli_common import adapter_for, client_for, err, print_json
from agent.cli_learn import register
from agent.cli_memory import memory
from agent.episodes import EpisodeRequest, EpisodeResult, open_agent, refuse_bad_input
from agent.errors import ReflexaError
from agent.evaluation import EvalOptions, compare_eval_runs, run_eval
from agent.model_prepare import prepare_model, validate_model_dir
from agent.runtime import describe
from agent.settings import Settings, load_settings
from agent.store import open_store
from agent.vllm_server import port_in_use, stop_server
from evals.builtin import BUILTIN
from evals.report import write_report
from evals.suite import SuiteError, resolve_suite

ADAPTER_HELP = (
    "Answer through this adapter: a version (v3), a served name, or `base`. "
    "Default: the promoted adapter, if any."
)
NO_MEMORY_HELP = "Do not recall past corrections as worked examples (see [memory])."


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ReflexaError as e:
            raise click.ClickException(str(e)) from None


@click.group(cls=_Group)
@click.option(
    "--config",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Settings file (default: $REFLEXA_CONFIG, else ./reflexa.toml if present).",
)
@click.pass_context
def cli(ctx: click.Context, config: Path | None) -> None:
    """Reflexa: a model that checks its own answers and learns from its mistakes."""
    ctx.obj = load_settings(config)
    if config is not None:  # child processes (training, scheduled cycles) read the same file
        os.environ["REFLEXA_CONFIG"] = str(config.resolve())


@cli.group()
def model() -> None:
    """Prepare, serve, inspect and stop the model server."""


@model.command("prepare")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def model_prepare(settings: Settings, as_json: bool) -> None:
    """Convert the bundled SmolLM2 GGUF into a verified HF folder (once)."""
    if settings.model.path is not None:
        validate_model_dir(settings.model_dir)
        doc: dict[str, object] = {"path": str(settings.model_dir), "configured": True}
        message = f"using the configured model folder {settings.model_dir}"
    else:
        prepared = prepare_model(settings.model_dir, log=err.print)
        doc = {
            "path": str(prepared.path),
            "reused": prepared.reused,
            "max_logit_diff": prepared.max_logit_diff,
            "seconds": prepared.seconds,
        }
        message = (
            f"already prepared: {prepared.path}"
            if prepared.reused
            else f"prepared {prepared.path} in {prepared.seconds:.0f} s "
            f"(logits match the GGUF load, max diff {prepared.max_logit_diff:.2g})"
        )
    if as_json:
        print_json(doc)
    else:
        click.echo(message)


@model.command("serve")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Override the port.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def model_serve(settings: Settings, port: int | None, as_json: bool) -> None:
    """Start the managed vLLM server (or reuse the running one) and wait until healthy."""
    if port is not None:
        server = settings.server.model_copy(update={"port": port})
        settings = settings.model_copy(update={"server": server})
    client = client_for(settings)
    if as_json:
        print_json(describe(settings))
    else:
        click.echo(f"serving {client.model} at {client.url}")


@model.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def model_status(settings: Settings, as_json: bool) -> None:
    """Show the server's url, model, pid, health and loaded adapters (exit 1 if not healthy)."""
    doc = describe(settings)
    if as_json:
        print_json(doc)
    elif doc["url"] is None:
        click.echo("no managed vLLM server is running")
    else:
        adapters = ", ".join(doc["adapters"]) or "none"  # type: ignore[arg-type]
        health = "healthy" if doc["healthy"] else "NOT healthy"
        pid = f" (pid {doc['pid']})" if doc["pid"] else " (external)"
        click.echo(f"{doc['url']}{pid}: {health}; model {doc['model']}; adapters: {adapters}")
    if not doc["healthy"]:
        raise SystemExit(1)


@model.command("stop")
@click.pass_obj
def model_stop(settings: Settings) -> None:
    """Stop the managed server and every process it started."""
    record = stop_server(settings)
    click.echo(
        f"stopped vLLM (pid {record.pid})" if record else "no managed vLLM server was running"
    )


def _parse_check(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list:
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


@cli.command()
@click.argument("prompt")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--max-repairs", type=click.IntRange(0, 10), default=None, help="Repair budget.")
@click.option("--adapter", default=None, help=ADAPTER_HELP)
@click.option(
    "--check",
    "checks",
    multiple=True,
    callback=_parse_check,
    help='A check the answer must pass, as JSON: \'{"type": "regex", "pattern": "^\\\\d+$"}\'. '
    "Repeatable. An `expected` value in one only scores the answer (the model never sees "
    "it). Without checks, the model reviews its own answer.",
)
@click.option(
    "--score",
    "scoring",
    multiple=True,
    callback=_parse_check,
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
    with open_store(settings) as store:  # bad input: refused before any model starts
        refused = refuse_bad_input(store, request, adapter or settings.model.name, settings.reflect)
    if refused:
        raise ReflexaError(f"{refused.error} (recorded as episode {refused.episode_id})")
    client = client_for(settings)
    adapter = adapter_for(settings, client, adapter)

    async def run() -> EpisodeResult:
        async with open_agent(settings, client, adapter) as agent:
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
    }.get(result.status, result.status)
    return note + recalled


@cli.command()
@click.option("--thread", "thread_id", default=None, help="Resume this thread.")
@click.option("--adapter", default=None, help=ADAPTER_HELP)
@click.option("--no-memory", is_flag=True, help=NO_MEMORY_HELP)
@click.pass_obj
def chat(settings: Settings, thread_id: str | None, adapter: str | None, no_memory: bool) -> None:
    """Chat in the terminal (works with piped input too). /help lists the commands."""
    client = client_for(settings)
    adapter = adapter_for(settings, client, adapter)
    console = Console(highlight=False)
    interactive = sys.stdin.isatty()

    def read_line() -> str | None:
        try:
            return console.input("[bold cyan]you>[/] ") if interactive else _stdin_line()
        except EOFError:
            return None

    async def run() -> None:
        async with open_agent(settings, client, adapter) as agent:
            await chat_loop(agent, console, read_line, thread_id, memory=not no_memory)

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        console.print("\n[dim]bye[/]")


@cli.command()
@click.option("--host", default=None, help="Interface (default: serve.host, 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Default: 8080.")
@click.pass_obj
def serve(settings: Settings, host: str | None, port: int | None) -> None:
    """An OpenAI-compatible API (and a chat page at /) in front of the agent."""
    import uvicorn

    from agent.api import create_app, is_loopback

    host, port = host or settings.serve.host, port or settings.serve.port
    if not is_loopback(host) and settings.serve.api_token is None:
        raise ReflexaError(
            f"listening on {host} needs a bearer token: set serve.api_token "
            "(REFLEXA_SERVE__API_TOKEN)"
        )
    if port_in_use(host, port):
        raise ReflexaError(f"port {port} on {host} is in use")
    client = client_for(settings)
    err.print(f"reflexa serve: http://{host}:{port}/ (chat page), /v1 (OpenAI API)")
    uvicorn.run(create_app(settings, client), host=host, port=port, log_level="warning")


def _stdin_line() -> str | None:
    line = sys.stdin.readline()
    return line if line else None


@cli.group()
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


@cli.group("eval")
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
    adapter = adapter_for(settings, client, adapter)
    options = EvalOptions(
        split, limit, not no_reflect, max_repairs, adapter, concurrency, memory=not no_memory,
        allow_gold=settings.cycle.allow_gold,
    )  # fmt: skip

    async def run(bar: Progress, task: TaskID) -> dict[str, Any]:
        async with open_agent(settings, client, adapter) as agent:
            return await run_eval(
                agent, suite, options,
                lambda done, total: bar.update(task, completed=done, total=total),
            )  # fmt: skip

    with Progress(*Progress.get_default_columns(), MofNCompleteColumn(), console=err) as bar:
        report = asyncio.run(run(bar, bar.add_task(suite.name, total=None)))
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


register(cli, failures)
cli.add_command(memory)


def main() -> None:
    # LangChain's structured output trips a harmless pydantic serializer warning per call.
    warnings.filterwarnings("ignore", message="Pydantic serializer warnings")
    cli(prog_name="reflexa")
