"""On-policy samples, judged without labels: for each training prompt, `cycle.sample_n`
answers from the current model in one request, and a vote among them and the model's first
(greedy) answer.

- The vote's answer (self-consistency: the first answer when enough agree with it, else a
  large enough majority; it must pass the visible checks) becomes a correction justified by
  `consistency`.
- Else, for a prompt the model failed, a sample that passes the visible grounded checks is
  kept as before, justified by `checks` alone.
Scoring, where the item has it, only records whether the kept answer was right (`correct`,
for precision); it never chooses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx

from reflexa.agent.model.client import ModelClient
from reflexa.agent.settings import Settings
from reflexa.agent.store import Store
from reflexa.evals.contamination import TRAIN_SPLIT, Guard, prompt_hash
from reflexa.evals.signal import vote
from reflexa.evals.verdict import grounded
from reflexa.evals.verify import passes


def sampling_targets(store: Store, protected: Guard, limit: int) -> list[dict[str, Any]]:
    """Training episodes, one per prompt (the newest), with grounded visible checks, that no
    user, gold or self-consistency correction covers yet; failed ones first."""
    covered = {
        c["prompt_hash"]
        for c in store.corrections()
        if c["verified"] and c["justification"] in ("user", "gold", "consistency")
    }
    targets: dict[str, dict[str, Any]] = {}
    for e in store.training_episodes(TRAIN_SPLIT):
        key = prompt_hash(e["prompt"])
        if key in covered or protected.protects(e["prompt"]):
            continue
        if grounded(e["checks"]):  # only grounded checks can verify
            targets[key] = e
    ordered = sorted(targets.values(), key=lambda e: bool(e["first_passed"]))
    return ordered[:limit]


def _constraint(checks: list[dict[str, Any]]) -> dict[str, Any]:
    """vLLM structured outputs for the samples: a visible JSON Schema constrains them."""
    schema = next((c["schema"] for c in checks if c["type"] == "json" and c.get("schema")), None)
    return {"structured_outputs": {"json": schema}} if schema else {}


async def sample_corrections(
    settings: Settings,
    store: Store,
    client: ModelClient,
    model: str | None,
    targets: list[dict[str, Any]],
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, int]:
    """Sample, vote and store corrections; counts of what was kept, by justification."""
    c = settings.cycle
    limit = asyncio.Semaphore(c.concurrency)
    counts = {"prompts": len(targets), "consistency": 0, "checks": 0}
    done = 0

    async def one(http: httpx.AsyncClient, episode: dict[str, Any]) -> None:
        nonlocal done
        body = {
            "model": model or client.model,
            "messages": episode["messages"],
            "n": c.sample_n,
            "temperature": c.sample_temperature,
            "max_tokens": c.sample_max_tokens,
        } | _constraint(episode["checks"])
        async with limit:
            response = await http.post(f"{client.url}/v1/chat/completions", json=body)
        response.raise_for_status()
        samples = [choice["message"]["content"] or "" for choice in response.json()["choices"]]
        kept = await _judge(
            episode, samples, c.agree_greedy, c.agree_majority, settings.sandbox.allow_unconfined
        )
        if kept is not None:
            store.add_correction(episode["id"], **kept)
            counts[kept["justification"]] += 1
        done += 1
        if on_progress:
            on_progress(done, len(targets))

    headers = {"Authorization": f"Bearer {client.api_key}"}
    async with httpx.AsyncClient(timeout=settings.request_timeout_s, headers=headers) as http:
        await asyncio.gather(*(one(http, e) for e in targets))
    return counts


async def _judge(
    episode: dict[str, Any],
    samples: list[str],
    min_greedy: int,
    min_majority: int,
    allow_unconfined: bool = False,
) -> dict[str, Any] | None:
    """The correction the samples justify for `episode`, or None."""
    prompt, checks = episode["prompt"], episode["checks"]
    greedy = episode["attempts"][0]["answer"]
    answers = [greedy, *samples]
    unconfined = {"allow_unconfined": allow_unconfined}
    ok = await asyncio.gather(*(passes(checks, prompt, a, **unconfined) for a in answers))
    chosen = vote(greedy, samples, checks, ok, min_greedy, min_majority)
    if chosen is not None:
        answer, justification = chosen.answer, "consistency"
    elif not episode["first_passed"] and any(ok[1:]):
        answer, justification = samples[ok[1:].index(True)], "checks"
    else:
        return None
    scoring = episode["scoring"]
    correct = await passes(scoring, prompt, answer, **unconfined) if scoring else None
    is_greedy = answer == greedy
    return {
        "prompt": prompt,
        "chosen": answer,
        "rejected": None if is_greedy else greedy,
        "source": "self" if is_greedy else "sampled",
        "verified": True,
        "justification": justification,
        "correct": correct,
    }
