"""The promoted adapter served merged, without servers: which settings turn it on, where
requests for it go (and go when its server is gone), and what a failed or a checked merge
leaves. tests/integration/test_merged_serving.py runs it on real vLLM servers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from reflexa.agent.errors import ReflexaError
from reflexa.agent.model import promoted
from reflexa.agent.model.client import ModelClient
from reflexa.agent.model.connect import merging
from reflexa.agent.model.server import merged_dir, route, set_route
from reflexa.agent.settings import Settings
from reflexa.agent.store import Store
from reflexa.agent.store.db import sqlite_url
from tests.helpers import JsonServer, free_port
from tests.unit.test_registry import register


def _settings(**server: Any) -> Settings:
    return Settings(server={"device": "cpu", **server})


def test_merging_is_on_by_default_for_one_managed_server_on_a_cpu() -> None:
    assert merging(_settings())
    assert not merging(_settings(device="cuda"))
    assert merging(_settings(device="cuda", merge_promoted="on"))
    assert not merging(_settings(replicas=2))
    assert not merging(_settings(merge_promoted="off"))
    assert not merging(Settings(server={"device": "cpu"}, vllm_url="http://127.0.0.1:9"))
    with pytest.raises(ReflexaError, match="needs one managed server"):
        merging(_settings(merge_promoted="on", replicas=2))
    with pytest.raises(ReflexaError, match="needs one managed server"):
        merging(Settings(server={"merge_promoted": "on"}, vllm_url="http://127.0.0.1:9"))


def test_the_promoted_name_goes_to_its_merged_server_and_to_lora_once_that_is_gone() -> None:
    seen: list[tuple[str, str]] = []
    lora = JsonServer(lambda method, path, body: seen.append(("lora", body["model"])) or {})
    merged = JsonServer(lambda method, path, body: seen.append(("merged", body["model"])) or {})
    to: list[tuple[str, str]] = [("reflexa-x", merged.url)]
    client = ModelClient(lora.url, "base", route=lambda: to[0] if to else None)

    async def ask(*models: str) -> None:
        async with client.async_http(timeout=10) as http:  # one client, as an agent keeps
            for model in models:
                body = {"model": model, "messages": []}
                reply = await http.post(f"{client.url}/v1/chat/completions", json=body)
                assert reply.status_code == 200

    try:
        asyncio.run(ask("reflexa-x", "base", "reflexa-y"))
        assert seen == [("merged", "reflexa-x"), ("lora", "base"), ("lora", "reflexa-y")]
        seen.clear()
        merged.stop()  # a switch stopped it: the LoRA server answers, under the same name
        asyncio.run(ask("reflexa-x"))
        to.clear()  # the route removed (a rollback to the base model)
        asyncio.run(ask("reflexa-x"))
        assert seen == [("lora", "reflexa-x"), ("lora", "reflexa-x")]
    finally:
        lora.stop()


def test_requests_in_flight_are_read_from_vllm_metrics() -> None:
    text = "\n".join([
        "# HELP vllm:num_requests_running Number of requests in model execution batches.",
        'vllm:num_requests_running{engine="0",model_name="reflexa-x"} 2.0',
        'vllm:num_requests_waiting{engine="0",model_name="reflexa-x"} 1.0',
        'vllm:num_requests_swapped{engine="0",model_name="reflexa-x"} 7.0',
    ])  # fmt: skip
    assert promoted.requests_in(text) == 3
    assert promoted.running(f"http://127.0.0.1:{free_port()}") == 0  # gone: nothing runs


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store.open(sqlite_url(tmp_path / "db.sqlite")) as s:
        yield s  # type: ignore[misc]


def test_a_merge_that_fails_leaves_the_adapter_served_through_lora_and_says_why(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings()
    register(settings, store, "v1")
    store.set_promoted("v1", "test", "retired", was=None)
    (merged_dir(settings) / "reflexa-old").mkdir(parents=True)  # the one promoted before
    set_route(settings, ("reflexa-old", f"http://127.0.0.1:{free_port()}"))

    tries: list[str] = []

    def broken(settings: Settings, row: dict, client: ModelClient) -> tuple[str, float]:
        tries.append(row["version"])
        raise ReflexaError("its merged server gave 50 % of the adapter's greedy answers")

    monkeypatch.setattr(promoted, "_start", broken)
    client = ModelClient("http://unused", "base")
    done = promoted.serve_promoted(settings, store, client)
    assert done["merged"] is False and "50 %" in done["why"]
    assert route(settings) is None  # its requests go to the LoRA server
    assert not (merged_dir(settings) / "reflexa-old").exists()  # the old one retired
    row = store.promoted_adapter()
    assert row is not None and row["version"] == "v1"  # the promotion stands
    assert row["metrics"]["serving"]["merged"] is False
    assert promoted.serve_promoted(settings, store, client) == {}  # not merged at each command
    promoted.serve_promoted(settings, store, client, retry=True)  # `reflexa model serve`
    assert tries == ["v1", "v1"]


def test_a_checked_merge_takes_the_route_and_the_base_model_gives_it_back(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings()
    v1 = register(settings, store, "v1")
    store.set_promoted("v1", "test", "retired", was=None)
    started: list[str] = []

    def start(settings: Settings, row: dict, client: ModelClient) -> tuple[str, float]:
        started.append(row["name"])
        (merged_dir(settings) / row["name"]).mkdir(parents=True)
        return "http://127.0.0.1:5", 0.9375

    monkeypatch.setattr(promoted, "_start", start)
    monkeypatch.setattr(promoted, "is_healthy", lambda url: True)
    client = ModelClient("http://unused", "base")
    done = promoted.serve_promoted(settings, store, client)
    assert done["merged"] is True and done["agreement"] == 0.9375
    assert route(settings) == (v1["name"], "http://127.0.0.1:5")
    assert promoted.serve_promoted(settings, store, client) == {}  # in line: nothing to do
    assert started == [v1["name"]]

    store.set_promoted(None, "rolled back", "rejected", was="v1")
    done = promoted.serve_promoted(settings, store, client)
    assert done == {"merged": False, "why": "the base model is the default"}
    assert route(settings) is None and list(merged_dir(settings).iterdir()) == []


def test_a_merged_server_that_will_not_stop_yet_does_not_fail_the_switch(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings()
    (merged_dir(settings) / "reflexa-old").mkdir(parents=True)
    set_route(settings, ("reflexa-old", f"http://127.0.0.1:{free_port()}"))

    def stuck(settings: Settings, where: Path) -> None:
        raise ReflexaError("processes of vLLM group 42 survived SIGKILL: [43]")

    monkeypatch.setattr(promoted, "_retire", stuck)
    said: list[str] = []
    done = promoted.serve_promoted(settings, store, ModelClient("http://unused", "base"),
                                   log=said.append)  # fmt: skip
    assert done == {"merged": False, "why": "the base model is the default"}
    assert route(settings) is None and "survived SIGKILL" in said[0]
