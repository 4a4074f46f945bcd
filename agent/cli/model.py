"""`reflexa model`: prepare, serve, inspect and stop the vLLM server."""

from __future__ import annotations

import click

from reflexa.agent.cli.common import client_for, err, print_json, serve_merged
from reflexa.agent.model.connect import describe
from reflexa.agent.model.prepare import prepare_model, validate_model_dir
from reflexa.agent.model.server import stop_server
from reflexa.agent.settings import Settings
from reflexa.agent.store import open_store


@click.group()
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
@click.option(
    "--replicas", type=click.IntRange(1, 16), default=None,
    help="Servers of the model, on port, port+1, … (default: [server] replicas).",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def model_serve(settings: Settings, port: int | None, replicas: int | None, as_json: bool) -> None:
    """Start the managed vLLM server(s) (or reuse those running) and wait until healthy."""
    update = {"port": port, "replicas": replicas}
    server = settings.server.model_copy(update={k: v for k, v in update.items() if v})
    settings = settings.model_copy(update={"server": server})
    client = client_for(settings)
    with open_store(settings) as store:  # the promoted adapter merged, tried again if it failed
        serve_merged(settings, store, client, retry=True)
    if as_json:
        print_json(describe(settings))
    else:
        click.echo(f"serving {client.model} at {', '.join(client.urls)}")


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
        for r in doc["replicas"][1:]:  # type: ignore[index]
            click.echo(f"  replica {r['url']}: {'healthy' if r['healthy'] else 'NOT healthy'}")
        if doc["merged"]:
            m = doc["merged"]
            click.echo(f"  the promoted adapter merged: {m['url']}: {m['model']}")  # type: ignore[index]
        for g in doc["gate"]:  # type: ignore[attr-defined]
            click.echo(f"  the gate's merged server {g['url']} (pid {g['pid']}): {g['model']}")
    if not doc["healthy"]:
        raise SystemExit(1)


@model.command("stop")
@click.pass_obj
def model_stop(settings: Settings) -> None:
    """Stop the managed server and every process it started."""
    records = stop_server(settings)
    pids = ", ".join(str(r.pid) for r in records)
    click.echo(f"stopped vLLM (pid {pids})" if records else "no managed vLLM server was running")
