"""What the trainers need from the application, as small Protocols (ports) of their own: the
store's few calls and the model server. Whoever starts a cycle hands in objects that fit
(the application's Store and ModelClient do). A port raises TrainerError (or a subclass)
for a failure the user can act on."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

import httpx
from langchain_core.language_models import BaseChatModel

from reflexa.trainers.records import CorrectionRecord, EpisodeRecord, ScoredAnswers


class CorrectionSource(Protocol):
    """Where training data comes from: episodes, their corrections, the held-out items."""

    def training_episodes(self, split: str) -> list[EpisodeRecord]: ...
    def chat_episodes(self) -> list[EpisodeRecord]: ...  # no suite, no split; newest first
    def corrections(self) -> list[CorrectionRecord]: ...
    def held_out_prompts(self) -> list[tuple[str, list[Any]]]: ...
    def held_out_answers(self) -> dict[str, list[ScoredAnswers]]: ...
    def learning_counts(self) -> dict[str, int]: ...  # training episodes, corrections
    def add_correction(self, episode_id: str | None, **fields: Any) -> int: ...
    def ratings(self) -> list[dict[str, Any]]: ...  # people's thumbs, with prompt and answer


class AdapterRegistry(Protocol):
    """The adapters trained, what the gate made of them, and which one is promoted (rows
    with version, name, path, status, method, metrics, parent, promoted_at)."""

    def next_adapter_version(self) -> str: ...
    def add_adapter(self, **fields: Any) -> dict[str, Any]: ...
    def adapters(self) -> list[dict[str, Any]]: ...
    def adapter(self, version: str) -> dict[str, Any] | None: ...
    def promoted_adapter(self) -> dict[str, Any] | None: ...
    def update_adapter(
        self, version: str, *, metrics: dict[str, Any] | None = None, **fields: Any
    ) -> None: ...
    def set_promoted(
        self, version: str | None, reason: str, demoted_status: str, *, was: str | None
    ) -> None: ...


class CycleLog(Protocol):
    """Each cycle and its stages, as they end."""

    # Held for a whole cycle by every host sharing the store; CycleBusy if another holds it.
    def cycle_lock(self) -> AbstractContextManager[None]: ...
    def start_cycle(self, trigger: str) -> str: ...
    # The newest cycle a stopped process left running, begun within `within_hours`, or None.
    def take_up_cycle(self, within_hours: float) -> dict[str, Any] | None: ...
    def cycles(self, limit: int = 20) -> list[dict[str, Any]]: ...  # newest first
    def record_stage(self, cycle_id: str, stage: dict[str, Any]) -> None: ...
    def finish_cycle(
        self,
        cycle_id: str,
        *,
        status: str,
        reason: str | None,
        adapter_version: str | None,
        result: dict[str, Any],
    ) -> None: ...


class MemoryLedger(Protocol):
    """The correction memory, as the gate measures it and a new adapter retires it."""

    def memories(self, status: str | None = None) -> list[dict[str, Any]]: ...
    def retire_memories(self, ids: Sequence[int], by: str) -> None: ...
    def restore_memories(self, by: str) -> None: ...
    def set_recall_policy(
        self, model: str, suite: str, recall: bool, reason: str, measured: dict[str, Any]
    ) -> None: ...
    def recall_policies(self, model: str | None = None) -> list[dict[str, Any]]: ...
    def count_recall_effect(self, helped: Sequence[int], hurt: Sequence[int]) -> int: ...
    def eval_run_source(self, suite: str) -> str | None: ...


class TrainerStore(CorrectionSource, AdapterRegistry, CycleLog, MemoryLedger, Protocol):
    """Everything a cycle records and reads."""


class ModelServer(Protocol):
    """A running model server (vLLM's OpenAI API and its runtime-LoRA endpoints)."""

    @property
    def url(self) -> str: ...
    @property
    def model(self) -> str: ...  # the base model's served name
    @property
    def api_key(self) -> str: ...

    def async_http(self, **kwargs: Any) -> httpx.AsyncClient: ...  # for model requests
    def chat_model(self, model: str | None = None, **kwargs: Any) -> BaseChatModel: ...
    def adapters(self) -> list[str]: ...
    def load_adapter(self, adapter_dir: Path, max_rank: int | None = None) -> str: ...
    def unload_adapter(self, name: str) -> None: ...
