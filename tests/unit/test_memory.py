"""Correction memory: what is stored, what is recalled, and what is never recalled."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import BaseMessage
from sqlalchemy import text

from reflexa.agent.app.agent import Agent, EpisodeRequest, EpisodeResult
from reflexa.agent.app.checkpointer import open_checkpointer
from reflexa.agent.app.memory import Memory, common_words, similarity
from reflexa.agent.model.client import ModelClient
from reflexa.agent.settings import MemorySettings, load_settings
from reflexa.agent.store import Store
from reflexa.agent.store.db import migrate
from reflexa.evals.builtin import BUILTIN
from reflexa.evals.contamination import Guard
from reflexa.graphs import ReflectionContext, build_reflection_graph
from reflexa.trainers.retire import retire_passed
from tests.fakes import ScriptedChatModel
from tests.helpers import old_store

JSON_CHECK = [{"type": "json", "expected": {"name": "Ada Lovelace", "age": 36}}]
DIAGNOSIS = '{"cause": "not JSON", "fix": "reply with the JSON object"}'
ADA = "Return a JSON object with keys name and age for: Ada Lovelace is 36 years old."


def words(text: str) -> int:  # a token counter that is easy to reason about
    return len(text.split())


def remember(store: Store, prompt: str, answer: str, source: str = "user", **episode: Any) -> None:
    """A verified correction, through the same path chat's /bad and the API's feedback take."""
    episode_id = None
    if episode:
        episode_id = f"e{abs(hash(prompt)) % 10**12}"
        store.start_episode(id=episode_id, thread_id="t", prompt=prompt, messages=[],
                            checks=episode.get("checks", []), model="m",
                            split=episode.get("split"))  # fmt: skip
    store.add_correction(episode_id, prompt=prompt, rejected="wrong", chosen=answer,
                         source=source, verified=True)  # fmt: skip


def memory(store: Store, **settings: Any) -> Memory:
    return Memory(store, MemorySettings(**settings), words, protected=Guard())


@pytest.fixture
def store(database_url: str) -> Store:
    return Store.open(database_url)


def test_recall_ranks_the_most_similar_correction_first(store: Store) -> None:
    remember(store, "What is the capital of France? One word.", "Paris")
    remember(store, "Return a JSON object with keys name and age for: Alan Turing, 41.",
             '{"name": "Alan Turing", "age": 41}')  # fmt: skip
    remember(store, "Return a JSON object with keys city for: Ada lives in Oslo.",
             '{"city": "Oslo"}')  # fmt: skip
    remember(store, "Translate 'good morning' into French.", "Bonjour")
    found = memory(store, k=2, min_similarity=0.0).recall(
        "Return a JSON object with keys name and age for: Grace Hopper, 85."
    )
    assert [m["answer"] for m in found.memories] == [
        '{"name": "Alan Turing", "age": 41}',
        '{"city": "Oslo"}',
    ]
    assert found.memories[0]["similarity"] > found.memories[1]["similarity"] > 0
    assert found.note is None


def test_words_most_prompts_share_count_for_almost_nothing(store: Store) -> None:
    """From the chat page: "What is 34 + 41?" recalled unrelated corrections through the
    words "Reply with only the" alone, and answered `15 + 41`."""
    for word in ("cat", "dog", "bird", "fish", "frog"):
        remember(store, f"Spell '{word}' backwards. Reply with only the result.", word[::-1])
    remember(store, "What is 40 + 41? Reply with only the number.", "81")
    query = "What is 34 + 41? Reply with only the number."
    plain = similarity(query, "Spell 'cat' backwards. Reply with only the result.")
    assert plain > 0.3  # what recalled them before
    found = memory(store, k=3, min_similarity=0.3).recall(query)
    assert [m["prompt"] for m in found.memories] == ["What is 40 + 41? Reply with only the number."]
    assert "dissimilar" in (found.note or "")


def test_words_most_memories_share_are_searched_for_only_if_the_rest_find_too_few(
    store: Store,
) -> None:
    """Searching for every word ranked nearly every memory (16 ms at 10,000 memories)."""
    for name in ("Ada Byron", "Alan Turing", "Grace Hopper", "Edsger Dijkstra", "Barbara Liskov",
                 "Donald Knuth", "Frances Allen", "John Backus"):  # fmt: skip
        remember(store, f"Return a JSON object with keys name for: {name} wrote it.", name)
    common = common_words(store.memory_prompts())
    assert {"return", "json", "name", "wrote"} <= common and "turing" not in common
    query = "Return a JSON object with keys name for: Alan Turing."

    def found(limit: int, common: frozenset[str]) -> list[str]:
        return [m["answer"] for m in store.search_memories(query, limit, common=common)]

    assert found(1, common) == found(1, frozenset()) == ["Alan Turing"]
    assert found(3, common) == found(3, frozenset()) and len(found(3, common)) == 3


def test_min_similarity_leaves_out_what_merely_shares_a_word(store: Store) -> None:
    remember(store, "Write a haiku about the sea.", "Waves fold into foam")
    found = memory(store, min_similarity=0.3).recall("What is the boiling point of water?")
    assert found.memories == []
    assert found.note == "nothing recalled (1 dissimilar)"
    assert similarity("a b c", "a b c") == pytest.approx(1.0)
    assert similarity("a b", "c d") == 0.0


def test_recalled_examples_fit_the_token_budget(store: Store) -> None:
    long_answer = "word " * 400
    remember(store, "Summarise the meeting notes about the budget.", long_answer)
    for i in range(5):
        remember(store, f"Summarise the meeting notes about item {i}.", f"Item {i} agreed.")
    found = memory(store, k=3, token_budget=40, min_similarity=0.0).recall(
        "Summarise the meeting notes about the budget."
    )
    assert 0 < len(found.memories) <= 3
    assert sum(m["tokens"] for m in found.memories) <= 40
    assert long_answer not in [m["answer"] for m in found.memories]
    assert "over budget" in (found.note or "")


def test_one_memory_per_prompt_the_better_source_wins(store: Store) -> None:
    remember(store, ADA, '{"name": "Ada", "age": 36}', source="gold")
    remember(store, "  return a JSON object with keys NAME and age for: Ada Lovelace is 36 "
             "years old.", '{"name": "Ada Lovelace", "age": 36}', source="repair")  # fmt: skip
    remember(store, ADA, '{"name": "Ada L.", "age": 36}', source="gold")  # worse: ignored
    rows = store.memories()
    assert [(r["source"], r["answer"]) for r in rows] == [
        ("repair", '{"name": "Ada Lovelace", "age": 36}')
    ]


def test_only_chat_and_training_corrections_become_memories(store: Store) -> None:
    remember(store, "What is 2 + 2?", "4", split="heldout")
    remember(store, "What is 3 + 3?", "6", split="gate")
    remember(store, "What is 4 + 4?", "8", split="train")
    remember(store, "What is 5 + 5?", "10")  # chat
    store.add_correction(
        None, prompt="What is 6 + 6?", chosen="12", source="user", verified=False
    )  # fmt: skip  (a thumbs-down without a fix)
    assert sorted(r["prompt"] for r in store.memories()) == ["What is 4 + 4?", "What is 5 + 5?"]


def test_held_out_items_are_never_recalled(store: Store) -> None:
    """The contamination guard: a memory whose prompt is a held-out item of a built-in
    suite (asked in chat, say) or of a split recorded since, is not recalled."""
    heldout = next(i for i in BUILTIN["json-extract"]().items if i.split == "test")
    remember(store, heldout.user_prompt, '{"name": "X", "age": 1}')
    remember(store, ADA, '{"name": "Ada Lovelace", "age": 36}')
    recall = Memory(store, MemorySettings(min_similarity=0.0), words)  # the real guard
    found = recall.recall(heldout.user_prompt)
    assert [m["prompt"] for m in found.memories] == [ADA]
    assert "1 protected" in (found.note or "")
    recall.protect(ADA)  # a custom suite's held-out item, asked just now
    assert recall.recall(heldout.user_prompt).memories == []


def test_memories_are_bounded_and_the_least_recently_used_go(database_url: str) -> None:
    store = Store.open(database_url, memory_limit=3)
    for i in range(5):
        remember(store, f"What is {i} squared?", str(i * i))
    assert [r["prompt"] for r in store.memories()] == [f"What is {i} squared?" for i in (2, 3, 4)]


def test_retired_memories_are_not_recalled_for_that_adapter(store: Store) -> None:
    remember(store, ADA, '{"name": "Ada Lovelace", "age": 36}')
    row = store.memories()[0]
    store.retire_memories([row["id"]], by="v2")
    assert Memory(store, MemorySettings(), words, "v2", Guard()).recall(ADA).memories == []
    assert len(Memory(store, MemorySettings(), words, None, Guard()).recall(ADA).memories) == 1
    assert store.memories("retired")[0]["retired_by"] == "v2"


async def run_agent(store: Store, script: list, request: EpisodeRequest,
                    recall: Memory | None) -> tuple[EpisodeResult, ScriptedChatModel]:  # fmt: skip
    settings = load_settings()
    llm = ScriptedChatModel(script=script)
    context = ReflectionContext(  # feedback: the repair that shows memories
        llm=llm, model_name="fake", recall=recall and recall.recall, strategies=("feedback",)
    )
    async with open_checkpointer(settings) as saver:
        agent = Agent(build_reflection_graph(saver), store, context, settings.reflect, recall)
        return await agent.run(request), llm


def test_recalled_corrections_are_worked_examples_named_in_the_trace() -> None:
    store = Store.open(load_settings().database)
    remember(store, ADA, '{"name": "Ada Lovelace", "age": 36}')
    prompt = "Return a JSON object with keys name and age for: Alan Turing is 41 years old."
    check = [{"type": "json", "expected": {"name": "Alan Turing", "age": 41}}]
    answer = '{"name": "Alan Turing", "age": 41}'
    result, llm = asyncio.run(
        run_agent(store, [answer], EpisodeRequest(prompt, check), memory(store))
    )
    sent = [(m.type, m.text) for m in llm.calls[0]]
    assert sent[1:] == [
        ("human", ADA), ("ai", '{"name": "Ada Lovelace", "age": 36}'), ("human", prompt),
    ]  # fmt: skip
    used = result.attempts[0]["memory"]["used"]
    assert [u["id"] for u in used] == [store.memories()[0]["id"]]
    episode = store.episode(result.episode_id)
    assert episode is not None and episode["attempts"][0]["memory"]["used"] == used
    assert store.memories()[0]["uses"] == 1

    off, llm = asyncio.run(
        run_agent(store, [answer], EpisodeRequest(prompt, check, memory=False), memory(store))
    )
    assert [m.type for m in llm.calls[0]] == ["system", "human"]
    assert off.attempts[0]["memory"] == {"used": [], "note": "memory off", "seconds": 0.0}


def test_a_failed_training_item_leaves_its_verified_gold_answer_as_a_memory() -> None:
    store = Store.open(load_settings().database)
    request = EpisodeRequest(
        ADA, JSON_CHECK, max_repairs=0, split="train", suite="s", allow_gold=True
    )
    asyncio.run(run_agent(store, ["not json"], request, None))
    no_gold = EpisodeRequest(ADA.replace("36", "38"), JSON_CHECK, max_repairs=0, split="train")
    asyncio.run(run_agent(store, ["not json"], no_gold, None))  # gold not allowed: no memory
    held = EpisodeRequest(ADA.replace("36", "37"), JSON_CHECK, max_repairs=0, split="heldout")
    asyncio.run(run_agent(store, ["not json"], held, None))
    assert [(m["source"], m["justification"], m["answer"]) for m in store.memories()] == [
        ("gold", "gold", '{"name": "Ada Lovelace", "age": 36}')
    ]
    assert store.corrections() == []  # gold is no correction: a compile may add it (dataset)
    # Recalled only for an asker that may learn from gold.
    assert memory(store, min_similarity=0.0).recall(ADA).memories == []
    assert len(memory(store, min_similarity=0.0).recall(ADA, gold=True).memories) == 1


def test_a_turn_that_may_not_learn_from_gold_is_never_shown_a_gold_memory() -> None:
    store = Store.open(load_settings().database)
    gold_item = EpisodeRequest(ADA, JSON_CHECK, max_repairs=0, split="train", suite="s",
                               allow_gold=True)  # fmt: skip
    asyncio.run(run_agent(store, ["not json"], gold_item, None))  # its gold becomes a memory
    asked = ADA.replace("36", "37")
    for gold, shown in ((False, []), (True, ["gold"])):
        request = EpisodeRequest(asked, JSON_CHECK, max_repairs=0, gold_memories=gold)
        result, llm = asyncio.run(
            run_agent(store, ['{"name": "Ada Lovelace", "age": 37}'], request,
                      memory(store, min_similarity=0.0))
        )  # fmt: skip
        used = result.attempts[0]["memory"]["used"]
        assert [(m["source"], m["justification"]) for m in used] == [(j, j) for j in shown]
        assert ('Ada Lovelace", "age": 36' in str(llm.calls[0])) is bool(shown)


def test_a_broken_index_costs_the_recall_not_the_answer() -> None:
    store = Store.open(load_settings().database)
    remember(store, ADA, '{"name": "Ada Lovelace", "age": 36}')
    with store.engine.begin() as conn:  # the index's pages, overwritten with noise
        conn.execute(text("UPDATE memories_fts_data SET block = randomblob(30)"))
    prompt = ADA.replace("36", "37")
    check = [{"type": "json", "expected": {"name": "Ada Lovelace", "age": 37}}]
    fixed = '{"name": "Ada Lovelace", "age": 37}'
    result, _ = asyncio.run(
        run_agent(store, ["no", DIAGNOSIS, fixed], EpisodeRequest(prompt, check), memory(store))
    )
    assert (result.status, result.answer) == ("repaired", fixed)
    note = result.attempts[0]["memory"]["note"]
    assert note.startswith("memory unavailable") and note.endswith("answered without it")
    assert [c.chosen for c in store.corrections()][-1] == fixed  # recorded all the same
    store.rebuild_memory_index()  # `reflexa memory rebuild`
    assert len(memory(store, min_similarity=0.0).recall(ADA).memories) == 1


def test_an_empty_memory_says_so() -> None:
    store = Store.open(load_settings().database)
    found = memory(store).recall(ADA)
    assert found.memories == [] and found.note is not None
    assert found.note.startswith("nothing recalled")


def test_upgrading_a_store_loads_its_verified_corrections(tmp_path: Path) -> None:
    engine = old_store(f"sqlite:///{tmp_path / 'old.db'}", "0003")
    with sqlite3.connect(tmp_path / "old.db") as db:
        for i, (source, verified) in enumerate([("repair", 1), ("user", 0), ("gold", 1)]):
            db.execute(
                "insert into corrections (prompt, prompt_hash, messages, chosen, source, "
                "verified, created_at) values (?, ?, '[]', 'x', ?, ?, '2026-01-01')",
                (f"prompt {i}", f"h{i}", source, verified),
            )
    migrate(engine)
    assert [(r["prompt"], r["source"]) for r in Store(engine).memories()] == [
        ("prompt 0", "repair"), ("prompt 2", "gold"),
    ]  # fmt: skip
    recall = memory(Store(engine), min_similarity=0.0).recall
    assert [m["source"] for m in recall("prompt 2", gold=True).memories] == ["gold", "repair"]
    assert [m["source"] for m in recall("prompt 2").memories] == ["repair"]  # label-free


class ScriptedClient(ModelClient):
    """A model client whose chat model answers from a script (by prompt)."""

    def __init__(self, answers: dict[str, str]) -> None:
        super().__init__("http://127.0.0.1:9", "base")
        self.answers = answers

    def chat_model(self, model: str | None = None, **kwargs: Any) -> Any:
        return ByPrompt(script=[], answers=self.answers)


class ByPrompt(ScriptedChatModel):
    answers: dict[str, str]

    def _next(self, messages: Sequence[BaseMessage]) -> str:
        return self.answers[messages[-1].text]


def test_retire_stops_recalling_what_the_adapter_passes_unaided() -> None:
    settings = load_settings()
    store = Store.open(settings.database)
    bob = ADA.replace("Ada Lovelace", "Bob Smith")
    for prompt, name in ((ADA, "Ada Lovelace"), (bob, "Bob Smith")):
        remember(store, prompt, json.dumps({"name": name, "age": 36}), split="train",
                 checks=[{"type": "json"}])  # what the loop saw: JSON, no values  # fmt: skip
    remember(store, "Say hello.", "hello")  # no checks: cannot be tested, stays
    # Bob's answer is JSON, so it passes the visible check, but it is not the memory's
    # answer: the adapter has not learnt it, and the memory stays.
    client = ScriptedClient(
        {ADA: '{"age": 36, "name": "Ada Lovelace"}', bob: '{"name": "Bob Smyth", "age": 36}'}
    )
    counts = asyncio.run(retire_passed(settings.workspace(), store, client, "reflexa-abc"))
    assert counts == {"tested": 2, "retired": 1}
    assert [m["prompt"] for m in store.memories("retired")] == [ADA]
    for_adapter = Memory(store, MemorySettings(min_similarity=0), words, "reflexa-abc", Guard())
    assert [m["prompt"] for m in for_adapter.recall(ADA).memories] == [bob]


def test_a_gate_s_draws_share_the_first_prompt_and_are_scored_after_the_loop() -> None:
    """`draws`: more answers to the first prompt (recalled examples included) in one
    request; the application scores each by the item's scoring once the loop has ended,
    and records them on the episode. The loop itself never repairs or sees them."""
    store = Store.open(load_settings().database)
    remember(store, ADA, '{"name": "Ada Lovelace", "age": 36}')
    prompt = ADA.replace("36", "37")
    right, wrong = '{"name": "Ada Lovelace", "age": 37}', '{"name": "Ada", "age": 1}'
    gold = [{"type": "json", "expected": {"name": "Ada Lovelace", "age": 37}}]
    request = EpisodeRequest(prompt, [{"type": "json"}], gold, max_repairs=0, draws=2,
                             draw_temperature=0.7)  # fmt: skip
    result, llm = asyncio.run(
        run_agent(store, [right, wrong, right], request, memory(store, min_similarity=0.0))
    )
    episode = store.episode(result.episode_id)
    assert episode is not None and len(episode["draws"]) == 2
    assert result.answer == right  # the greedy answer first, then the draws
    assert [(d["answer"], d["passed"], d["checks_passed"]) for d in episode["draws"]] == [
        (wrong, False, True), (right, True, True)]  # fmt: skip
    assert len(llm.calls) == 3 and llm.calls[0] == llm.calls[1] == llm.calls[2]  # one prompt
    (drawn,) = [k for k in llm.call_kwargs if k.get("n") == 2]
    assert drawn["temperature"] == 0.7 and drawn["max_tokens"] == 64  # twice 4 words: 64
    assert len(result.attempts) == 1  # nothing repaired, whatever the draws said
    plain = asyncio.run(run_agent(store, [right], EpisodeRequest(prompt, gold), None))[0]
    assert store.episode(plain.episode_id)["draws"] is None  # type: ignore[index]


def test_reflexa_memory_recall_lists_the_gate_s_policies_and_resets_one() -> None:
    """`reflexa memory recall` shows where recall is off and why; `--reset SUITE` forgets
    that suite's policy (for one model with `--model`), so the next night measures it."""
    from click.testing import CliRunner

    from reflexa.agent.cli import cli

    with Store.open(load_settings().database) as store:
        store.set_recall_policy(
            "", "sums", True, "greedy pass 0.0% without recall, 1.5% with it", {}
        )
        store.set_recall_policy("reflexa-a", "sums", False, "recall off (p = 0.014)", {})
        store.set_recall_policy("reflexa-a", "arithmetic", False, "recall off (p = 0.0012)", {})
    done = CliRunner().invoke(cli, ["memory", "recall"], env={"COLUMNS": "200"})
    assert done.exit_code == 0, done.output
    row = next(line for line in done.output.splitlines() if "arithmetic" in line)
    assert "reflexa-a" in row and "off" in row and "p = 0.0012" in row
    done = CliRunner().invoke(cli, ["memory", "recall", "--reset", "sums", "--model", "reflexa-a"])
    assert done.exit_code == 0 and done.output.startswith("sums: 1 recall policy forgotten")
    done = CliRunner().invoke(cli, ["memory", "recall", "--json"])
    left = {(p["model"], p["suite"]) for p in json.loads(done.output)["policies"]}
    assert left == {("", "sums"), ("reflexa-a", "arithmetic")}
    done = CliRunner().invoke(cli, ["memory", "recall", "--model", "base", "--json"])
    assert [(p["model"], p["suite"]) for p in json.loads(done.output)["policies"]] == [("", "sums")]
