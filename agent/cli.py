"""The `reflexa` command. Each command parses, calls one library function and prints.

Results go to stdout (`--json`: one JSON document and nothing else); progress and notes go
to stderr. A `ReflexaError` anywhere becomes one `Error: …` line and exit status 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from agent.errors import ReflexaError
from agent.model_prepare import prepare_model, validate_model_dir
from agent.runtime import connect, describe
from agent.settings import Settings, load_settings
from agent.vllm_server import stop_server

err = Console(stderr=True, highlight=False)


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ReflexaError as e:
            raise click.ClickException(str(e)) from None


def _print_json(doc: object) -> None:
    click.echo(json.dumps(doc, indent=2, default=str))


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
        _print_json(doc)
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
    with err.status("starting vLLM") as status:
        client = connect(
            settings,
            log=err.print,
            on_wait=lambda s: status.update(f"starting vLLM: waiting for /health ({s:.0f} s)"),
        )
    if as_json:
        _print_json(describe(settings))
    else:
        click.echo(f"serving {client.model} at {client.url}")


@model.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def model_status(settings: Settings, as_json: bool) -> None:
    """Show the server's url, model, pid, health and loaded adapters (exit 1 if not healthy)."""
    doc = describe(settings)
    if as_json:
        _print_json(doc)
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


@cli.command()
@click.argument("prompt")
@click.option("--adapter", default=None, help="Answer through this served LoRA adapter.")
@click.option("--max-tokens", type=click.IntRange(1, 4096), default=256, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def ask(
    settings: Settings, prompt: str, adapter: str | None, max_tokens: int, as_json: bool
) -> None:
    """Answer one prompt."""
    if not prompt.strip():
        raise ReflexaError("the prompt is empty")
    with err.status("starting vLLM"):
        client = connect(settings, log=err.print)
    llm = client.chat_model(adapter, temperature=0, max_tokens=max_tokens)
    answer = str(llm.invoke(prompt).content)
    if as_json:
        _print_json({"prompt": prompt, "answer": answer, "model": adapter or client.model})
    else:
        click.echo(answer)


def main() -> None:
    cli(prog_name="reflexa")
