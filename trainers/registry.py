"""The adapter registry's moves: register a trained folder, check one, promote, roll back, and
find the default.

The promoted adapter is the default for ask, chat, serve and eval. Promotion loads it into
the running vLLM server (under its content-hash name) before the registry says so; if the
server restarted since, resolving the default loads it again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reflexa.trainers.errors import TrainerError
from reflexa.trainers.ports import AdapterRegistry, ModelServer
from reflexa.trainers.workspace import Workspace

METADATA = "reflexa_adapter.json"  # written last into each adapter folder
BASE = "base"  # `--adapter base`: the base model, even when an adapter is promoted
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
# What of a trained adapter's metadata its registry row keeps.
TRAIN_METRICS = ("loss", "train_s", "train_runtime_s", "samples_per_s", "by_source", "config",
                 "continued_from")  # fmt: skip


def adapter_name(adapter_dir: Path) -> str:
    """`reflexa-<hash12>` of the adapter's files: new weights always get a new name.

    vLLM can serve stale prefix-cache blocks when different weights reuse a name.
    """
    digest = hashlib.sha256()
    for name in ADAPTER_FILES:
        digest.update(name.encode())
        digest.update((adapter_dir / name).read_bytes())
    return f"reflexa-{digest.hexdigest()[:12]}"


@dataclass(frozen=True)
class Built:
    """A trained adapter's folder, complete but not yet registered (its name starts with
    `.partial-`), and its metadata."""

    path: Path
    metadata: dict[str, Any]


def register(ws: Workspace, registry: AdapterRegistry, built: Built) -> dict[str, Any]:
    """Give a built adapter its version: its folder is renamed to `adapters/<version>/`
    (atomic: it appears complete or not at all), then registered as a candidate."""
    version = registry.next_adapter_version()
    final = ws.adapters_dir / version
    try:
        os.rename(built.path, final)
    finally:
        shutil.rmtree(built.path, ignore_errors=True)
    meta = built.metadata
    return registry.add_adapter(
        version=version,
        name=adapter_name(final),
        path=str(final),
        parent=meta["parent"],
        base_model=meta["base_model"],
        method=meta["method"],
        dataset_hash=meta["dataset_hash"],
        examples=meta["examples"],
        metrics={"train": {k: meta[k] for k in TRAIN_METRICS}},
    )


def parent_folder(registry: AdapterRegistry, parent: str | None, go_on: bool) -> Path | None:
    """The parent adapter's folder a run continues, or None (a new LoRA on the base)."""
    row = registry.adapter(parent) if go_on and parent else None
    if row is None:
        return None
    path = Path(row["path"])
    if not (path / "adapter_config.json").is_file():
        raise TrainerError(f"adapter {parent}: {path} holds no LoRA to continue from")
    return path


def check_adapter(row: dict[str, Any], ws: Workspace) -> Path:
    """The adapter's folder, if it is intact and trained on the model being served."""
    path = Path(row["path"])
    meta_file = path / METADATA
    if not meta_file.is_file():
        raise TrainerError(f"adapter {row['version']}: {path} is missing or incomplete")
    try:
        meta = json.loads(meta_file.read_text())
        name = adapter_name(path)
    except (OSError, ValueError) as e:
        raise TrainerError(f"adapter {row['version']}: {path} is corrupt ({e})") from None
    if name != row["name"]:
        raise TrainerError(
            f"adapter {row['version']}: the files in {path} changed since training "
            f"(content hash {name}, registered {row['name']})"
        )
    if meta.get("base_model") != ws.model_name:
        raise TrainerError(
            f"adapter {row['version']} was trained on {meta.get('base_model')!r}, but the "
            f"server runs {ws.model_name!r}"
        )
    return path


def load(ws: Workspace, client: ModelServer, row: dict[str, Any]) -> str:
    """Load a registered adapter into the server (every replica); its served name. It is
    linked by that name first, so a replica that restarts finds it on its own."""
    path = check_adapter(row, ws)
    link = ws.by_name_dir / row["name"]
    if not link.is_symlink():  # one stat on the API's hot path once linked
        ws.by_name_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # another process linked it just now
            link.symlink_to(path.resolve(), target_is_directory=True)
    return client.load_adapter(path, ws.max_lora_rank)


def resolve_adapter(
    ws: Workspace, store: AdapterRegistry, client: ModelServer, adapter: str | None
) -> str | None:
    """What `--adapter` means: None → the promoted adapter (or the base model), `base` → the
    base model, a registered version (v3) → that adapter, loaded; anything else → a name the
    server already serves."""
    if adapter == BASE:
        return None
    if adapter is None:
        row = store.promoted_adapter()
        return None if row is None else load(ws, client, row)
    row = store.adapter(adapter)
    if row is not None:
        return load(ws, client, row)
    return adapter


def promote(
    ws: Workspace, store: AdapterRegistry, client: ModelServer, version: str, reason: str
) -> dict[str, Any]:
    """Make `version` the default: load it, then record it (the previous one is retired)."""
    row = store.adapter(version)
    if row is None:
        raise TrainerError(f"no adapter {version!r} (see `reflexa adapters list`)")
    if row["status"] == "promoted":
        raise TrainerError(f"adapter {version} is already the promoted one")
    gated = row["metrics"].get("gate", {}).get("decision") == "promote"
    if row["method"] in ("dpo", "grpo", "kto") and not gated:
        method = row["method"].upper()
        raise TrainerError(
            f"adapter {version} is a {method} adapter the gate did not pass; only the gate may "
            f"promote {method} adapters (DPO collapsed held-out JSON accuracy from 72 % to 12 % "
            "on the bundled model: docs/guides/nightly-job.md; GRPO optimises the visible checks)"
        )
    previous = store.promoted_adapter()
    load(ws, client, row)
    store.set_promoted(version, reason, "retired", was=previous["version"] if previous else None)
    _unload_demoted(store, client, keep=previous)
    return store.adapter(version) or row


def rollback(ws: Workspace, store: AdapterRegistry, client: ModelServer) -> dict[str, Any] | None:
    """Go back one step: the promoted adapter is rejected and the one promoted before it (or
    the base model) is the default again. Returns the new default's row (None: base)."""
    current = store.promoted_adapter()
    if current is None:
        raise TrainerError("nothing to roll back: the base model is the default")
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
        load(ws, client, previous)
    store.set_promoted(
        previous["version"] if previous else None, reason, "rejected", was=current["version"]
    )
    _unload_demoted(store, client, keep=current)
    return store.adapter(previous["version"]) if previous else None


def _unload_demoted(
    store: AdapterRegistry, client: ModelServer, keep: dict[str, Any] | None
) -> None:
    """Free the server of adapters that are no longer the default, all but `keep`, the one the
    pointer has just left: an episode another API process began on it a moment ago still
    finishes on it (unloading it at once failed such episodes with a 404). It goes at the
    next promotion or rollback."""
    served = set(client.adapters())
    promoted = store.promoted_adapter()
    spare = {keep["name"] if keep else None, promoted["name"] if promoted else None}
    for row in store.adapters():
        if row["status"] in ("retired", "rejected") and row["name"] in served - spare:
            client.unload_adapter(row["name"])
            served.discard(row["name"])
