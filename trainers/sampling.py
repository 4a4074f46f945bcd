"""On-policy samples: for training prompts the model failed, sample several answers from the
current model and keep one that the item's own checks pass (`source=sampled`). No gold answer
is involved, only the verifiers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx

from agent.model_client import ModelClient
from agent.settings import Settings
from agent.store import Store
from evals.contamination import TRAIN_SPLIT, Guard, prompt_hash
from evals.gold import passes


def sampling_targets(
    store: Store, protected: Guard, limit: int, allow_gold: bool = True
) -> list[dict[str, Any]]:
    """Failed training episodes, one per prompt, that no usable verified correction covers
    yet (a gold one counts only when gold answers may be trained on)."""
    covered = {
        c["prompt_hash"]
        for c in store.corrections()
        if c["verified"] and (allow_gold or c["source"] != "gold")
    }
    targets: dict[str, dict[str, Any]] = {}
    for e in store.training_episodes(TRAIN_SPLIT):
        key = prompt_hash(e["prompt"])
        if e["first_passed"] or key in covered or key in targets or protected.protects(e["prompt"]):
            continue
        if any(c["type"] != "judge" for c in e["checks"]):  # only grounded checks can verify
            targets[key] = e
    return list(targets.values())[:limit]


async def sample_corrections(
    settings: Settings,
    store: Store,
    client: ModelClient,
    model: str | None,
    targets: list[dict[str, Any]],
    on_progress: Callable[[int, int], None] | None = None,
) -> int:
    """Sample `cycle.sample_n` answers per target; store the first that passes. Returns how
    many targets got a correction."""
    c = settings.cycle
    limit = asyncio.Semaphore(c.concurrency)
    done = found = 0

    async def one(http: httpx.AsyncClient, episode: dict[str, Any]) -> None:
        nonlocal done, found
        body = {
            "model": model or client.model,
            "messages": episode["messages"],
            "n": c.sample_n,
            "temperature": c.sample_temperature,
            "max_tokens": c.sample_max_tokens,
        }
        async with limit:
            response = await http.post(f"{client.url}/v1/chat/completions", json=body)
        response.raise_for_status()
        for choice in response.json()["choices"]:
            answer = choice["message"]["content"] or ""
            if answer.strip() and await passes(episode["checks"], episode["prompt"], answer):
                store.add_correction(
                    episode["id"],
                    prompt=episode["prompt"],
                    chosen=answer,
                    source="sampled",
                    rejected=episode["attempts"][0]["answer"],
                    verified=True,
                )
                found += 1
                break
        done += 1
        if on_progress:
            on_progress(done, len(targets))

    headers = {"Authorization": f"Bearer {client.api_key}"}
    async with httpx.AsyncClient(timeout=settings.request_timeout_s, headers=headers) as http:
        await asyncio.gather(*(one(http, e) for e in targets))
    return found
