"""Where the model lives for this command: an external server, the running one, or a new one."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from reflexa.agent.errors import ReflexaError
from reflexa.agent.model.client import ModelClient
from reflexa.agent.model.prepare import prepare_model
from reflexa.agent.model.server import (
    gate_dir,
    is_healthy,
    merged_dir,
    read_record,
    route,
    running_replicas,
    start_server,
    uses_cpu,
)
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
    """A client for the external server(s) ([model] urls, or REFLEXA_VLLM_URL), else for the
    managed ones: those running, or `[server] replicas` of them, started if need be."""
    if external_urls(settings):
        return _external(settings)
    ensure_model(settings, log)
    merged = merging(settings)
    count = max(settings.server.replicas, len(running_replicas(settings)))
    records = [start_server(settings, on_wait, replica=i) for i in range(count)]
    client = ModelClient.over(
        [r.url for r in records], records[0].model, settings.api_key, settings.request_timeout_s
    )
    if merged and count == 1:  # the promoted adapter's requests: to its merged server
        return dataclasses.replace(client, route=lambda: route(settings))
    return client


def merging(settings: Settings) -> bool:
    """Whether the promoted adapter is served merged (`[server] merge_promoted`): by a server
    of its own beside the managed one, so never with external servers."""
    s = settings.server
    if s.merge_promoted == "on" and (external_urls(settings) or s.replicas > 1):
        raise ReflexaError(
            "[server] merge_promoted = on needs one managed server (not [model] urls, "
            "REFLEXA_VLLM_URL or replicas > 1): set it to auto or off"
        )
    if s.merge_promoted == "off" or external_urls(settings):
        return False
    return s.merge_promoted == "on" or (s.replicas == 1 and uses_cpu(settings))


def external_urls(settings: Settings) -> list[str]:
    urls = settings.model.urls or ([settings.vllm_url] if settings.vllm_url else [])
    return [u.rstrip("/") for u in urls]


def _external(settings: Settings) -> ModelClient:
    urls = external_urls(settings)
    setting = "[model] urls" if settings.model.urls else "REFLEXA_VLLM_URL"
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise ReflexaError(f"{setting}={url!r} is not an http(s) URL")
    healthy = [u for u in urls if is_healthy(u, timeout=5.0)]
    if not healthy:
        raise ReflexaError(
            f"{setting}={', '.join(urls)} is unreachable or not healthy (GET /health)"
        )
    # The base model's name, from a replica that answers (the others are tried as they come).
    probe = ModelClient(
        healthy[0], settings.model.name, settings.api_key, settings.request_timeout_s
    )
    bases = [m.id for m in probe.models() if m.parent is None]
    if not bases:
        raise ReflexaError(f"vLLM at {healthy[0]} serves no model")
    name = settings.model.name if settings.model.name in bases else bases[0]
    return ModelClient.over(urls, name, settings.api_key, settings.request_timeout_s)


def describe(settings: Settings) -> dict[str, object]:
    """What `reflexa model status --json` prints; it never starts anything. `url` and `pid`
    are the first replica's; `replicas` has each; `gate` the gate's merged server, if one
    runs."""
    replicas: list[dict[str, object]] = [
        {"url": u, "pid": None} for u in external_urls(settings)
    ] or [{"url": r.url, "pid": r.pid} for r in running_replicas(settings)]
    for replica in replicas:
        replica["healthy"] = is_healthy(str(replica["url"]))
    first = replicas[0] if replicas else {"url": None, "pid": None, "healthy": False}
    models = []
    if first["healthy"]:
        client = ModelClient(str(first["url"]), settings.model.name, settings.api_key,
                             settings.request_timeout_s)  # fmt: skip
        models = client.models()
    to = route(settings)
    record = to and read_record(settings, run_dir=merged_dir(settings) / to[0])
    merged = to and {"model": to[0], "url": to[1], "pid": record and record.pid,
                     "healthy": is_healthy(to[1])}  # fmt: skip
    return {
        "managed": not external_urls(settings),
        "url": first["url"],
        "pid": first["pid"],
        "healthy": bool(replicas) and all(r["healthy"] for r in replicas),
        "model": next((m.id for m in models if m.parent is None), None),
        "adapters": [m.id for m in models if m.parent is not None],
        "replicas": replicas,
        # the promoted adapter's merged server, where its requests go
        "merged": merged,
        # the gate's merged server, while a night measures an adapter on it
        "gate": [{"url": r.url, "pid": r.pid, "model": r.model}
                 for r in running_replicas(settings, gate_dir(settings))],
    }  # fmt: skip
