"""Talking to a vLLM server: LangChain chat models, served models, runtime LoRA adapters."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from langchain_openai import ChatOpenAI

from reflexa.agent.errors import ReflexaError
from reflexa.agent.model.replicas import SPREAD_URL, Replicas, RouteTransport, SpreadTransport
from reflexa.trainers.registry import ADAPTER_FILES, adapter_name


@dataclass(frozen=True)
class ServedModel:
    """One entry of `/v1/models`: the base model (parent None) or a LoRA adapter on it."""

    id: str
    parent: str | None
    root: str


def adapter_rank(adapter_dir: Path) -> int:
    """The LoRA rank of a PEFT adapter folder; fails clearly on a folder that is not one."""
    missing = [n for n in ADAPTER_FILES if not (adapter_dir / n).is_file()]
    if missing:
        raise ReflexaError(f"{adapter_dir}: not a PEFT LoRA adapter (missing {', '.join(missing)})")
    try:
        config = json.loads((adapter_dir / "adapter_config.json").read_text())
        return int(config["r"])
    except (ValueError, KeyError, TypeError) as e:
        raise ReflexaError(f"{adapter_dir}/adapter_config.json: corrupt ({e})") from None


@dataclass(frozen=True)
class ModelClient:
    """A vLLM server's OpenAI-compatible API plus its runtime-LoRA endpoints; with
    `replicas`, several servers of one model: requests spread over them (`Replicas`), and
    an adapter is loaded on every one (it counts as served where all serve it). With
    `route`, requests (through `async_http`) that name one model, the promoted adapter, go
    to the server of its merged weights (`route()`: (name, url) or None, read each time)."""

    url: str  # where requests go: the server, or SPREAD_URL for the replicas
    model: str
    api_key: str = "EMPTY"
    timeout_s: float = 120.0
    replicas: Replicas | None = field(default=None, compare=False)
    route: Callable[[], tuple[str, str] | None] | None = field(default=None, compare=False)

    @classmethod
    def over(cls, urls: list[str], model: str, api_key: str, timeout_s: float) -> ModelClient:
        """One client for `urls`: one server, or its replicas."""
        if len(urls) == 1:
            return cls(urls[0], model, api_key, timeout_s)
        return cls(SPREAD_URL, model, api_key, timeout_s, Replicas(tuple(urls)))

    @property
    def urls(self) -> tuple[str, ...]:
        return self.replicas.urls if self.replicas else (self.url,)

    def async_http(self, **kwargs: Any) -> httpx.AsyncClient:
        """An HTTP client for model requests (to `url`); its owner closes it."""
        if self.replicas:
            kwargs["transport"] = SpreadTransport(self.replicas)
        if self.route:
            kwargs["transport"] = RouteTransport(self.route, kwargs.get("transport"))
        return httpx.AsyncClient(**kwargs)

    def chat_model(self, model: str | None = None, **kwargs: Any) -> ChatOpenAI:
        """LangChain chat model on this server; `model` may be an adapter's name. Pass an
        `http_async_client` from `async_http` (required with replicas; with a route, what
        sends the promoted adapter's requests to its merged server)."""
        if self.replicas and "http_async_client" not in kwargs:
            raise ReflexaError("a chat model over replicas needs http_async_client=async_http()")
        return ChatOpenAI(
            base_url=f"{self.url}/v1",
            api_key=self.api_key,  # type: ignore[arg-type]
            model=model or self.model,
            timeout=self.timeout_s,
            max_retries=1,
            stream_usage=True,  # token counts also when LangGraph streams the reply
            **kwargs,
        )

    def models(self, url: str | None = None) -> list[ServedModel]:
        """What `url` (default: the first replica) serves."""
        data = self._request("GET", "/v1/models", at=url).json()["data"]
        return [
            ServedModel(id=m["id"], parent=m.get("parent"), root=m.get("root", "")) for m in data
        ]

    def adapters(self) -> list[str]:
        """The adapters every replica serves, in the order the first lists them."""
        first, *others = ([m.id for m in self.models(u) if m.parent is not None] for u in self.urls)
        return [name for name in first if all(name in other for other in others)]

    def load_adapter(self, adapter_dir: Path, max_rank: int | None = None) -> str:
        """Load a PEFT LoRA folder under its content-hash name on every replica that lacks it,
        then check each lists it; fails naming the replica that did not."""
        adapter_dir = adapter_dir.resolve()
        rank = adapter_rank(adapter_dir)
        if max_rank is not None and rank > max_rank:
            raise ReflexaError(
                f"{adapter_dir}: LoRA rank {rank} exceeds the server's --max-lora-rank {max_rank}"
            )
        name = adapter_name(adapter_dir)
        body = {"lora_name": name, "lora_path": str(adapter_dir)}
        for url in self.urls:
            if not self._serves(url, name):
                self._request("POST", "/v1/load_lora_adapter", at=url, json=body)
                if not self._serves(url, name):
                    raise ReflexaError(f"vLLM server at {url} did not list {name} once loaded")
        return name

    def unload_adapter(self, name: str) -> None:
        """Unload it from every replica that has it; an error if none has."""
        holding = [url for url in self.urls if self._serves(url, name)]
        if not holding:
            raise ReflexaError(f"adapter {name} is not loaded (on {', '.join(self.urls)})")
        for url in holding:
            self._request("POST", "/v1/unload_lora_adapter", at=url, json={"lora_name": name})

    def _serves(self, url: str, name: str) -> bool:
        return any(m.id == name for m in self.models(url))

    def _request(
        self, method: str, path: str, at: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        url = at or self.urls[0]
        try:
            response = httpx.request(
                method,
                f"{url}{path}",
                headers={"Authorization": f"Bearer {self.api_key}"},
                timeout=self.timeout_s,
                **kwargs,
            )
        except httpx.HTTPError as e:
            raise ReflexaError(f"vLLM server at {url} unreachable: {e}") from None
        if response.status_code >= 400:
            raise ReflexaError(
                f"vLLM server at {url}: {method} {path} failed with "
                f"{response.status_code}: {response.text[:300]}"
            )
        return response
