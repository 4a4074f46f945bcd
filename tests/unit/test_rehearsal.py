"""Rehearsal: the current model's own answers to chat prompts, a capped share of a night's
SFT rows (trainers/rehearsal.py), on the store's real records (SQLite)."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from reflexa.agent.model.client import ModelClient
from reflexa.agent.settings import Settings
from reflexa.agent.store import Store
from reflexa.agent.store.db import sqlite_url
from reflexa.evals.contamination import Guard
from reflexa.trainers.dataset import TooFewExamples, build_dataset
from reflexa.trainers.rehearsal import read_rehearsal, rehearsal_prompts, rehearse, write_rehearsal
from tests.unit.test_dataset import attempt, episode

LOWER = [{"type": "regex", "pattern": "[A-Z]", "must_match": False}]
REPLIES = {  # prompt: (the current model's greedy answer, why it stopped)
    "Tell me about tea.": ("Tea is a drink made from leaves.", "stop"),
    "Write a haiku about rain.": ("Soft rain on the roof", "stop"),
    "Explain how clocks work.": ("A clock counts the swings of", "length"),  # cut off
    "say hi in lowercase.": ("Hi there", "stop"),  # fails its visible check
}


def chat(
    store: Store, prompt: str, checks: list[dict[str, Any]] | None = None, history: tuple = ()
) -> str:
    """A chat turn (no suite, no split), answered by whatever model served it then."""
    eid = uuid.uuid4().hex
    messages = [*history, {"role": "user", "content": prompt}]
    store.start_episode(id=eid, thread_id=eid, prompt=prompt, checks=checks or [], model="m",
                        messages=messages)  # fmt: skip
    store.finish_episode(eid, status="unchecked", answer="an old answer", error=None,
                         attempts=[{"kind": "generate", "answer": "an old answer", "verdicts": [],
                                    "passed": False, "score": 0.0, "model": "m"}],
                         latency_s=1.0)  # fmt: skip
    return eid


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """vLLM's chat completions as the current model answers them; the requests it got."""
    asked: list[dict[str, Any]] = []

    def reply(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        asked.append(body)
        text, finish = REPLIES[body["messages"][-1]["content"]]
        choice = {"message": {"content": text}, "finish_reason": finish}
        return httpx.Response(200, json={"choices": [choice]})

    real = httpx.AsyncClient
    monkeypatch.setattr(
        httpx, "AsyncClient", lambda **kw: real(transport=httpx.MockTransport(reply), **kw)
    )
    return asked


def test_the_current_model_answers_chat_prompts_afresh_and_what_is_whole_is_kept(
    tmp_path: Path, server: list[dict[str, Any]]
) -> None:
    guard = Guard()
    guard.add("Describe coffee in at most 8 words.")  # a frozen-suite prompt: never rehearsed
    with Store.open(sqlite_url(tmp_path / "db.sqlite")) as store:
        episode(store, "What is 40 + 2?", [attempt("42", True)])  # a suite's: not chat
        chat(store, "Describe coffee in at most 8 words.")
        older = chat(store, "Tell me about tea.")
        newer = chat(store, "Tell me about tea.")
        chat(
            store,
            "Write a haiku about rain.",
            history=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
        )
        chat(store, "Explain how clocks work.")
        chat(store, "say hi in lowercase.", LOWER)
        prompts = rehearsal_prompts(store, guard, limit=10)
        assert sorted(e.prompt for e in prompts) == sorted(REPLIES)
        assert newer in {e.id for e in prompts} and older not in {e.id for e in prompts}
        assert len(rehearsal_prompts(store, guard, limit=2)) == 2
        ws = Settings().workspace()
        kept, counts = asyncio.run(
            rehearse(ws, ModelClient("http://vllm.test", "m"), "v2", prompts)
        )
    assert {b["model"] for b in server} == {"v2"} and {b["temperature"] for b in server} == {0}
    assert all(len(b["messages"]) == 1 for b in server)  # the prompt alone, as the row shows it
    assert counts == {"prompts": 4, "kept": 2, "cut_off": 1, "failed": 1, "unanswered": 0}
    assert sorted(e.chosen for e in kept) == [
        "Soft rain on the roof",
        "Tea is a drink made from leaves.",
    ]
    assert {(e.source, e.justification, e.frontier) for e in kept} == {("self", "rehearsal", False)}
    again = read_rehearsal(write_rehearsal(kept, tmp_path / "r.jsonl"))
    assert [(e.prompt, e.chosen, e.episode_ids) for e in again] == [
        (e.prompt, e.chosen, e.episode_ids) for e in kept
    ]


def test_rehearsal_is_a_capped_share_of_sft_and_never_makes_a_night_by_itself(
    tmp_path: Path, server: list[dict[str, Any]]
) -> None:
    with Store.open(sqlite_url(tmp_path / "db.sqlite")) as store:
        for n in range(6):
            episode(store, f"What is 40 + {n}?", [attempt(str(40 + n), True)], scoring=[])
        for prompt in ("Tell me about tea.", "Write a haiku about rain."):
            chat(store, prompt)
        ws = Settings().workspace()
        prompts = rehearsal_prompts(store, Guard(), limit=10)
        kept, _ = asyncio.run(rehearse(ws, ModelClient("http://vllm.test", "m"), None, prompts))
        assert len(kept) == 2
        out = tmp_path / "sft"
        compiled, rows = build_dataset(store, out, "sft", allow_gold=False, protected=Guard(),
                                       rehearsal=kept, rehearsal_share=0.2)  # fmt: skip
        assert rows == 7  # 6 examples, and one rehearsal row: 20 % of them at most
        assert compiled.summary(rows)["rehearsal"] == 1
        assert compiled.precision()["rehearsal"] == {"examples": 1, "scored": 0, "right": 0,
                                                     "precision": None}  # fmt: skip
        none, rows = build_dataset(store, out, "sft", allow_gold=False, protected=Guard(),
                                   rehearsal=kept)  # fmt: skip
        assert rows == 6 and none.summary(rows)["rehearsal"] == 0  # share 0: off
        with pytest.raises(TooFewExamples, match="6 sft examples, fewer than the 7"):
            build_dataset(store, out, "sft", allow_gold=False, protected=Guard(), min_examples=7,
                          rehearsal=kept, rehearsal_share=0.5)  # fmt: skip
