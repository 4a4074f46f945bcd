"""Rehearsal: the current model's own answers to what people chat about, trained beside the
night's corrections, so that learning a suite does not unlearn the rest (self-synthesised
rehearsal, Huang et al. 2024). Measured before it: night 4's candidate gained 17 points on
sums and lost 4.8 on the frozen suite (bench/results/night-again-2026-12-07.json); a
smaller step lost less only by learning less.

The prompts are the chat, `ask` and imported-traffic episodes in the store (those of no
suite), one per prompt, newest first, none a gate or held-out prompt (nor a duplicate of
one). The answer is asked afresh of the current model, greedy, to the prompt alone as the
row will show it (a chat thread's earlier turns are not in the row): the model the candidate
starts from, not the one that answered then. It is kept where it ended by itself (not cut
off) and passes the episode's visible grounded checks, if it has any. A row justified by
`rehearsal` claims nothing about being right, only that this is what the model says now;
rows are a share of a night's SFT examples (`[cycle] rehearsal`), never counted towards the
examples a night needs, and never the frontier.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from reflexa.evals.contamination import Guard, prompt_hash
from reflexa.evals.verdict import grounded
from reflexa.evals.verify import passes
from reflexa.trainers.examples import Compiled, Example
from reflexa.trainers.ports import CorrectionSource, ModelServer
from reflexa.trainers.records import EpisodeRecord
from reflexa.trainers.sampling import each_prompt
from reflexa.trainers.workspace import Workspace


def rehearsal_prompts(store: CorrectionSource, protected: Guard, limit: int) -> list[EpisodeRecord]:
    """The newest `limit` chat episodes, one per prompt, none of them protected."""
    newest: dict[str, EpisodeRecord] = {}
    for e in store.chat_episodes():
        key = prompt_hash(e.prompt)
        if key not in newest and not protected.protects(e.prompt):
            newest[key] = e
    return list(newest.values())[:limit]


async def rehearse(
    ws: Workspace,
    client: ModelServer,
    model: str | None,
    episodes: Sequence[EpisodeRecord],
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[list[Example], dict[str, int]]:
    """The current model's greedy answers to `episodes`, as rehearsal examples, and counts
    of what was kept and left out (cut off, failed its checks, unanswered)."""
    c = ws.cycle
    limit = asyncio.Semaphore(c.concurrency)
    counts = {"prompts": len(episodes), "kept": 0, "cut_off": 0, "failed": 0}
    kept: list[Example] = []

    async def one(http: httpx.AsyncClient, episode: EpisodeRecord) -> None:
        messages = [{"role": "user", "content": episode.prompt}]  # as the row will be: alone
        body = {"model": model or client.model, "messages": messages,
                "max_tokens": c.sample_max_tokens, "temperature": 0}  # fmt: skip
        async with limit:
            response = await http.post(f"{client.url}/v1/chat/completions", json=body)
        response.raise_for_status()
        choice = response.json()["choices"][0]
        answer = (choice["message"]["content"] or "").strip()
        checked = grounded(episode.checks)
        if choice.get("finish_reason") == "length" or not answer:
            counts["cut_off"] += 1
        elif checked and not await passes(checked, episode.prompt, answer,
                                          allow_unconfined=ws.allow_unconfined):  # fmt: skip
            counts["failed"] += 1
        else:
            counts["kept"] += 1
            kept.append(_row(episode.prompt, answer, episode.id))

    counts["unanswered"] = await each_prompt(ws, client, episodes, one, "rehearsal", on_progress)
    return kept, counts


def with_rehearsal(compiled: Compiled, rehearsal: Sequence[Example], share: float) -> Compiled:
    """`compiled` with rehearsal examples added, as `share` of all examples at most; none for
    a prompt that already has a row (its own row says more)."""
    have = {e.prompt_hash for e in compiled.examples}
    fresh = [r for r in rehearsal if r.prompt_hash not in have]
    room = int(share / (1 - share) * len(compiled.examples)) if share < 1 else len(fresh)
    return replace(compiled, examples=[*compiled.examples, *fresh[:room]])


def write_rehearsal(examples: Sequence[Example], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = ({"prompt": e.prompt, "answer": e.chosen, "episode": e.episode_ids[0]} for e in examples)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_rehearsal(path: Path) -> list[Example]:
    """What `write_rehearsal` wrote (a taken-up cycle's rehearsal)."""
    rows: list[dict[str, Any]] = [json.loads(line) for line in path.read_text().splitlines()]
    return [_row(r["prompt"], r["answer"], r["episode"]) for r in rows]


def _row(prompt: str, answer: str, episode_id: str) -> Example:
    return Example(prompt_hash(prompt), prompt, answer, "self", episode_ids=[episode_id],
                   justification="rehearsal")  # fmt: skip
