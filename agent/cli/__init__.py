"""The `reflexa` command: one module per command group, assembled in `main`."""

from reflexa.agent.cli.main import cli, main

__all__ = ["cli", "main"]
