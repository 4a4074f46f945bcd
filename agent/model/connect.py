"""Where the model lives for this command: an external server, the running one, or a new one."""

from __future__ import annotations

from collections.abc import Callable

from reflexa.agent.errors import ReflexaError
from reflexa.agent.model.client import ModelClient
from reflexa.agent.model.prepare import prepare_model
from reflexa.agent.model.server import is_healthy, read_record, start_server
from reflexa.agent.settings import Settings


def ensure_model(settings: Settings, log: Callable[[str], None] = lambda _: None) -> None:
    """Prepare the bundled model on first use; a configured model folder is used as it is."""
    if settings.model.path is None and not settings.model_dir.is_dir():
        log("preparing the bundled model (first use)")
        prepare_model(settings.model_dir, log=log)


def connect(
    settings: Settings,
    log: Callable[[str], None] = lambda _: None,
    on_wait: Callable[[float], None] | None = None,
) -> ModelClient:
    """A client for REFLEXA_VLLM_URL, else for the managed server, started if need be."""
    if settings.vllm_url:
        return _external(settings)
    ensure_model(settings, log)
    record = start_server(settings, on_wait)
    return ModelClient(record.url, record.model, settings.api_key, settings.request_timeout_s)


def _external(settings: Settings) -> ModelClient:
    url = (settings.vllm_url or "").rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ReflexaError(f"REFLEXA_VLLM_URL={url!r} is not an http(s) URL")
    if not is_healthy(url, timeout=5.0):
        raise ReflexaError(f"REFLEXA_VLLM_URL={url} is unreachable or not healthy (GET /health)")
    client = ModelClient(url, settings.model.name, settings.api_key, settings.request_timeout_s)
    bases = [m.id for m in client.models() if m.parent is None]
    if settings.model.name in bases:
        return client
    if not bases:
        raise ReflexaError(f"REFLEXA_VLLM_URL={url} serves no model")
    return ModelClient(url, bases[0], settings.api_key, settings.request_timeout_s)


def describe(settings: Settings) -> dict[str, object]:
    """What `reflexa model status --json` prints; it never starts anything."""
    url: str | None = None
    pid: int | None = None
    if settings.vllm_url:
        url = settings.vllm_url.rstrip("/")
    elif (record := read_record(settings)) is not None:
        url, pid = record.url, record.pid
    healthy = url is not None and is_healthy(url)
    models = []
    if healthy and url is not None:
        client = ModelClient(url, settings.model.name, settings.api_key, settings.request_timeout_s)
        models = client.models()
    return {
        "managed": not settings.vllm_url,
        "url": url,
        "pid": pid,
        "healthy": healthy,
        "model": next((m.id for m in models if m.parent is None), None),
        "adapters": [m.id for m in models if m.parent is not None],
    }
