"""Talking to a vLLM server: LangChain chat models, served models, runtime LoRA adapters."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from langchain_openai import ChatOpenAI

from reflexa.agent.errors import ReflexaError
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
    """A vLLM server's OpenAI-compatible API plus its runtime-LoRA endpoints."""

    url: str
    model: str
    api_key: str = "EMPTY"
    timeout_s: float = 120.0

    def chat_model(self, model: str | None = None, **kwargs: Any) -> ChatOpenAI:
        """LangChain chat model on this server; `model` may be an adapter's name."""
        return ChatOpenAI(
            base_url=f"{self.url}/v1",
            api_key=self.api_key,  # type: ignore[arg-type]
            model=model or self.model,
            timeout=self.timeout_s,
            max_retries=1,
            stream_usage=True,  # token counts also when LangGraph streams the reply
            **kwargs,
        )

    def models(self) -> list[ServedModel]:
        data = self._request("GET", "/v1/models").json()["data"]
        return [
            ServedModel(id=m["id"], parent=m.get("parent"), root=m.get("root", "")) for m in data
        ]

    def adapters(self) -> list[str]:
        return [m.id for m in self.models() if m.parent is not None]

    def load_adapter(self, adapter_dir: Path, max_rank: int | None = None) -> str:
        """Load a PEFT LoRA folder under its content-hash name (a no-op if already loaded)."""
        adapter_dir = adapter_dir.resolve()
        rank = adapter_rank(adapter_dir)
        if max_rank is not None and rank > max_rank:
            raise ReflexaError(
                f"{adapter_dir}: LoRA rank {rank} exceeds the server's --max-lora-rank {max_rank}"
            )
        name = adapter_name(adapter_dir)
        if name not in self.adapters():
            self._request(
                "POST",
                "/v1/load_lora_adapter",
                json={"lora_name": name, "lora_path": str(adapter_dir)},
            )
        return name

    def unload_adapter(self, name: str) -> None:
        self._request("POST", "/v1/unload_lora_adapter", json={"lora_name": name})

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = httpx.request(
                method,
                f"{self.url}{path}",
                headers={"Authorization": f"Bearer {self.api_key}"},
                timeout=self.timeout_s,
                **kwargs,
            )
        except httpx.HTTPError as e:
            raise ReflexaError(f"vLLM server at {self.url} unreachable: {e}") from None
        if response.status_code >= 400:
            raise ReflexaError(
                f"vLLM server at {self.url}: {method} {path} failed with "
                f"{response.status_code}: {response.text[:300]}"
            )
        return response
