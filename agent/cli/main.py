"""The `reflexa` command. Each command parses, calls one library function and prints.

Results go to stdout (`--json`: one JSON document and nothing else); progress and notes go
to stderr. A `ReflexaError` or a trainers' `TrainerError` (its base) anywhere becomes one
`Error: …` line and exit status 1.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import click

from reflexa.agent.app.tracing import configure_tracing
from reflexa.agent.cli.adapters import adapters
from reflexa.agent.cli.ask import ask
from reflexa.agent.cli.chat import chat
from reflexa.agent.cli.common import CONFIG
from reflexa.agent.cli.cycle import cycle
from reflexa.agent.cli.eval import eval_group
from reflexa.agent.cli.failures import failures
from reflexa.agent.cli.memory import memory
from reflexa.agent.cli.model import model
from reflexa.agent.cli.schedule import schedule_group
from reflexa.agent.cli.serve import serve
from reflexa.agent.cli.traffic import traffic
from reflexa.agent.cli.train import train
from reflexa.agent.settings import load_settings
from reflexa.trainers.errors import TrainerError


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TrainerError as e:  # ReflexaError is one
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
    configure_tracing()  # OTLP export where OTEL_EXPORTER_OTLP_ENDPOINT says
    if config is not None:  # for the commands scheduled cycles run
        ctx.meta[CONFIG] = config.resolve()


for command in (ask, chat, serve, model, eval_group, failures, memory, traffic, train, adapters,
                cycle, schedule_group):  # fmt: skip
    cli.add_command(command)


def main() -> None:
    # LangChain's structured output trips a harmless pydantic serializer warning per call.
    warnings.filterwarnings("ignore", message="Pydantic serializer warnings")
    cli(prog_name="reflexa")
