"""The adapter registry's moves: check a folder, promote, roll back, and find the default.

The promoted adapter is the default for ask, chat, serve and eval. Promotion loads it into
the running vLLM server (under its content-hash name) before the registry says so; if the
server restarted since, resolving the default loads it again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reflexa.agent.errors import ReflexaError
from reflexa.agent.model.client import ModelClient, adapter_name
from reflexa.agent.settings import Settings
from reflexa.agent.store import Store

METADATA = "reflexa_adapter.json"  # written last into each adapter folder
BASE = "base"  # `--adapter base`: the base model, even when an adapter is promoted


def check_adapter(row: dict[str, Any], settings: Settings) -> Path:
    """The adapter's folder, if it is intact and trained on the model being served."""
    path = Path(row["path"])
    meta_file = path / METADATA
    if not meta_file.is_file():
        raise ReflexaError(f"adapter {row['version']}: {path} is missing or incomplete")
    try:
        meta = json.loads(meta_file.read_text())
        name = adapter_name(path)
    except (OSError, ValueError) as e:
        raise ReflexaError(f"adapter {row['version']}: {path} is corrupt ({e})") from None
    if name != row["name"]:
        raise ReflexaError(
            f"adapter {row['version']}: the files in {path} changed since training "
            f"(content hash {name}, registered {row['name']})"
        )
    if meta.get("base_model") != settings.model.name:
        raise ReflexaError(
            f"adapter {row['version']} was trained on {meta.get('base_model')!r}, but the "
            f"server runs {settings.model.name!r}"
        )
    return path


def load(settings: Settings, client: ModelClient, row: dict[str, Any]) -> str:
    """Load a registered adapter into the server; its served name."""
    path = check_adapter(row, settings)
    return client.load_adapter(path, settings.server.max_lora_rank)


def resolve_adapter(
    settings: Settings, store: Store, client: ModelClient, adapter: str | None
) -> str | None:
    """What `--adapter` means: None → the promoted adapter (or the base model), `base` → the
    base model, a registered version (v3) → that adapter, loaded; anything else → a name the
    server already serves."""
    if adapter == BASE:
        return None
    if adapter is None:
        row = store.promoted_adapter()
        return None if row is None else load(settings, client, row)
    row = store.adapter(adapter)
    if row is not None:
        return load(settings, client, row)
    return adapter


def promote(
    settings: Settings, store: Store, client: ModelClient, version: str, reason: str
) -> dict[str, Any]:
    """Make `version` the default: load it, then record it (the previous one is retired)."""
    row = store.adapter(version)
    if row is None:
        raise ReflexaError(f"no adapter {version!r} (see `reflexa adapters list`)")
    if row["status"] == "promoted":
        raise ReflexaError(f"adapter {version} is already the promoted one")
    gated = row["metrics"].get("gate", {}).get("decision") == "promote"
    if row["method"] in ("dpo", "grpo") and not gated:
        method = row["method"].upper()
        raise ReflexaError(
            f"adapter {version} is a {method} adapter the gate did not pass; only the gate may "
            f"promote {method} adapters (DPO collapsed held-out JSON accuracy from 72 % to 12 % "
            "on the bundled model: README, Self-repair; GRPO optimises the visible checks)"
        )
    previous = store.promoted_adapter()
    load(settings, client, row)
    store.set_promoted(version, reason, demoted_status="retired")
    if previous and previous["name"] in client.adapters():  # keep vLLM's LoRA slots free
        client.unload_adapter(previous["name"])
    return store.adapter(version) or row


def rollback(settings: Settings, store: Store, client: ModelClient) -> dict[str, Any] | None:
    """Go back one step: the promoted adapter is rejected and the one promoted before it (or
    the base model) is the default again. Returns the new default's row (None: base)."""
    current = store.promoted_adapter()
    if current is None:
        raise ReflexaError("nothing to roll back: the base model is the default")
    earlier = [
        a
        for a in store.adapters()
        if a["status"] == "retired"
        and a["promoted_at"]
        and a["promoted_at"] < current["promoted_at"]
    ]
    previous = max(earlier, key=lambda a: a["promoted_at"], default=None)
    reason = f"rolled back from {current['version']}"
    if previous is not None:
        load(settings, client, previous)
    store.set_promoted(previous["version"] if previous else None, reason, "rejected")
    if current["name"] in client.adapters():
        client.unload_adapter(current["name"])
    return store.adapter(previous["version"]) if previous else None
