"""Promotion, rollback and the default adapter, on a real store and a recording client."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reflexa.agent.model.client import adapter_name
from reflexa.agent.settings import Settings
from reflexa.agent.store import Store
from reflexa.agent.store.db import sqlite_url
from reflexa.trainers.errors import TrainerError
from reflexa.trainers.registry import METADATA, promote, resolve_adapter, rollback


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
    (path / METADATA).write_text(json.dumps({"base_model": base or settings.model.name}))
    return store.add_adapter(
        version=version, name=adapter_name(path), path=str(path), parent=None,
        base_model=settings.model.name, method=method, dataset_hash="h", examples=1, metrics={},
    )  # fmt: skip


def test_promote_rollback_walks_back_one_step_at_a_time(env) -> None:
    settings, store, client = env
    v1, v2 = register(settings, store, "v1"), register(settings, store, "v2")
    assert (
        resolve_adapter(settings.workspace(), store, client, None) is None
    )  # base model by default
    promote(settings.workspace(), store, client, "v1", "test")
    assert resolve_adapter(settings.workspace(), store, client, None) == v1["name"]
    promote(settings.workspace(), store, client, "v2", "test")
    assert client.adapters() == [v2["name"]]  # the retired one no longer takes a LoRA slot
    assert {a["version"]: a["status"] for a in store.adapters()} == {"v1": "retired",
                                                                    "v2": "promoted"}  # fmt: skip
    assert rollback(settings.workspace(), store, client)["version"] == "v1"  # type: ignore[index]
    assert v2["name"] not in client.adapters()
    assert {a["version"]: a["status"] for a in store.adapters()} == {"v1": "promoted",
                                                                    "v2": "rejected"}  # fmt: skip
    assert rollback(settings.workspace(), store, client) is None  # back to the base model
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
