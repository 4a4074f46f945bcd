"""`reflexa serve`: the OpenAI-compatible API and chat page."""

from __future__ import annotations

import click

from reflexa.agent.cli.common import client_for, err
from reflexa.agent.errors import ReflexaError
from reflexa.agent.model.server import port_in_use
from reflexa.agent.settings import Settings
from reflexa.agent.store import open_store


@click.command()
@click.option("--host", default=None, help="Interface (default: serve.host, 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Default: 8080.")
@click.pass_obj
def serve(settings: Settings, host: str | None, port: int | None) -> None:
    """An OpenAI-compatible API (and a chat page at /) in front of the agent."""
    import uvicorn

    from reflexa.agent.api import create_app, is_loopback

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
    with open_store(settings) as store:
        app = create_app(settings, client, store)
        uvicorn.run(app, host=host, port=port, log_level="warning")
