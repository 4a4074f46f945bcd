"""`reflexa serve`: the OpenAI-compatible HTTP API (app), its wire format (protocol),
streaming and metrics."""

from reflexa.agent.api.app import create_app, is_loopback

__all__ = ["create_app", "is_loopback"]
