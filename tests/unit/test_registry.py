"""Promotion, rollback and the default adapter, on a real store and a recording client."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from reflexa.agent.model.client import ModelClient, adapter_name
from reflexa.agent.settings import Settings
from reflexa.agent.store import Store
from reflexa.agent.store.db import sqlite_url
from reflexa.agent.store.tables import Adapter
from reflexa.trainers.errors import PromotionRace, TrainerError
from reflexa.trainers.registry import METADATA, promote, resolve_adapter, rollback
from tests.helpers import JsonServer, register_adapter


class RecordingClient:
    """Stands in for vLLM's runtime-LoRA endpoints."""

    def __init__(self) -> None:
        self.loaded: dict[str, Path] = {}

    def load_adapter(self, path: Path, max_rank: int | None = None) -> str:
        name = adapter_name(path)
        self.loaded[name] = path
        return name

    def adapters(self) -> list[str]:
        return list(self.loaded)

    def unload_adapter(self, name: str) -> None:
        del self.loaded[name]


@pytest.fixture
def env(tmp_path: Path) -> tuple[Settings, Store, RecordingClient]:
    settings = Settings()
    with Store.open(sqlite_url(tmp_path / "db.sqlite")) as store:
        yield settings, store, RecordingClient()  # type: ignore[misc]


def register(settings: Settings, store: Store, version: str, method: str = "sft",
             base: str | None = None) -> dict:  # fmt: skip
    path = settings.home_dir / "adapters" / version
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"r": 8, "v": version}))
    (path / "adapter_model.safetensors").write_bytes(version.encode())
    return register_adapter(settings, store, path, version, method, base)


def test_promote_rollback_walks_back_one_step_at_a_time(env) -> None:
    settings, store, client = env
    v1, v2 = register(settings, store, "v1"), register(settings, store, "v2")
    assert (
        resolve_adapter(settings.workspace(), store, client, None) is None
    )  # base model by default
    promote(settings.workspace(), store, client, "v1", "test")
    assert resolve_adapter(settings.workspace(), store, client, None) == v1["name"]
    promote(settings.workspace(), store, client, "v2", "test")
    # the one just replaced stays served: an episode begun on it a moment ago may finish
    assert sorted(client.adapters()) == sorted([v1["name"], v2["name"]])
    assert {a["version"]: a["status"] for a in store.adapters()} == {"v1": "retired",
                                                                    "v2": "promoted"}  # fmt: skip
    assert rollback(settings.workspace(), store, client)["version"] == "v1"  # type: ignore[index]
    assert sorted(client.adapters()) == sorted([v1["name"], v2["name"]])
    assert {a["version"]: a["status"] for a in store.adapters()} == {"v1": "promoted",
                                                                    "v2": "rejected"}  # fmt: skip
    assert rollback(settings.workspace(), store, client) is None  # back to the base model
    assert client.adapters() == [v1["name"]]  # v2, two steps back, no longer takes a slot
    assert resolve_adapter(settings.workspace(), store, client, None) is None
    with pytest.raises(TrainerError, match="nothing to roll back"):
        rollback(settings.workspace(), store, client)


def test_explicit_choices(env) -> None:
    settings, store, client = env
    v1 = register(settings, store, "v1")
    promote(settings.workspace(), store, client, "v1", "test")
    assert resolve_adapter(settings.workspace(), store, client, "base") is None
    assert resolve_adapter(settings.workspace(), store, client, "v1") == v1["name"]
    assert resolve_adapter(settings.workspace(), store, client, "someone-else") == "someone-else"


def test_refusals(env) -> None:
    settings, store, client = env
    with pytest.raises(TrainerError, match="no adapter 'v9'"):
        promote(settings.workspace(), store, client, "v9", "test")
    register(settings, store, "v1", method="dpo")
    with pytest.raises(TrainerError, match="only the gate may promote DPO"):
        promote(settings.workspace(), store, client, "v1", "test")
    register(settings, store, "v2", base="another-model")
    with pytest.raises(TrainerError, match="trained on 'another-model'"):
        promote(settings.workspace(), store, client, "v2", "test")
    v3 = register(settings, store, "v3")
    (Path(v3["path"]) / "adapter_model.safetensors").write_bytes(b"tampered")
    with pytest.raises(TrainerError, match="changed since training"):
        promote(settings.workspace(), store, client, "v3", "test")
    v4 = register(settings, store, "v4")
    (Path(v4["path"]) / METADATA).unlink()
    with pytest.raises(TrainerError, match="missing or incomplete"):
        promote(settings.workspace(), store, client, "v4", "test")
    assert store.promoted_adapter() is None and client.adapters() == []


def test_the_pointer_flips_once_and_only_from_what_the_caller_saw(database_url: str) -> None:
    """Two processes promote at once from the same default: one wins, the other changes
    nothing; and the database refuses a second promoted row however it is written."""
    stores = [Store.open(database_url) for _ in range(2)]
    for version in ("v1", "v2", "v3"):
        stores[0].add_adapter(version=version, name=version, path="/p", parent=None,
                              base_model="m", method="sft", dataset_hash="h", examples=1,
                              metrics={})  # fmt: skip
    stores[0].set_promoted("v1", "first", "retired", was=None)
    with ThreadPoolExecutor(2) as pool:
        tries = [pool.submit(s.set_promoted, v, "race", "retired", was="v1")
                 for s, v in zip(stores, ("v2", "v3"), strict=True)]  # fmt: skip
        raised = [t.exception() for t in tries]
    assert sum(e is None for e in raised) == 1, raised
    [lost] = [e for e in raised if e is not None]
    assert isinstance(lost, PromotionRace) and "not v1" in str(lost)
    status = {a["version"]: a["status"] for a in stores[1].adapters()}
    assert (
        sorted(status.values()) == ["candidate", "promoted", "retired"]
        and status["v1"] == "retired"
    )
    with pytest.raises(PromotionRace, match=r"it is v[23], not the base model"):
        stores[1].set_promoted(None, "rollback from a stale view", "rejected", was=None)
    with pytest.raises(IntegrityError), stores[0].engine.begin() as conn:
        conn.execute(update(Adapter).where(Adapter.status == "candidate").values(status="promoted"))
    for s in stores:
        s.close()


class FakeVllm:
    """vLLM's model list and runtime-LoRA endpoints on a real port (a replica)."""

    def __init__(self) -> None:
        self.loaded: set[str] = set()
        self.http = JsonServer(self._answer)
        self.url = self.http.url

    def _answer(self, method: str, path: str, body: dict) -> dict:
        if method == "GET":  # /v1/models
            return {"data": [{"id": "m", "parent": None}]
                    + [{"id": n, "parent": "m"} for n in self.loaded]}  # fmt: skip
        if path == "/v1/load_lora_adapter":
            self.loaded.add(body["lora_name"])
        else:
            self.loaded.discard(body["lora_name"])
        return {}

    def stop(self) -> None:
        self.http.stop()


def test_promotion_needs_the_adapter_on_every_replica(tmp_path: Path) -> None:
    settings = Settings()
    a, b = FakeVllm(), FakeVllm()
    client = ModelClient.over([a.url, b.url], "m", "EMPTY", 10)
    with Store.open(sqlite_url(tmp_path / "db.sqlite")) as store:
        v1, v2 = register(settings, store, "v1"), register(settings, store, "v2")
        promote(settings.workspace(), store, client, "v1", "test")
        assert a.loaded == b.loaded == {v1["name"]}
        assert (settings.workspace().by_name_dir / v1["name"]).resolve() == Path(v1["path"])
        b.stop()  # a replica dies before the next promotion
        with pytest.raises(TrainerError, match=f"vLLM server at {b.url} unreachable"):
            promote(settings.workspace(), store, client, "v2", "test")
        assert store.promoted_adapter()["version"] == "v1"  # type: ignore[index]
        assert v2["name"] in a.loaded  # loaded where it could be, and not promoted
    a.stop()
