"""The Agent with a scripted model, the real store and the real SQLite checkpointer."""

from __future__ import annotations

import asyncio
import getpass
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from rich.console import Console

from reflexa.agent.app.agent import Agent, EpisodeRequest, EpisodeResult
from reflexa.agent.app.checkpointer import open_checkpointer
from reflexa.agent.chat import chat_loop
from reflexa.agent.settings import load_settings
from reflexa.agent.store import Store
from reflexa.agent.store.db import sqlite_url
from reflexa.evals import JudgeFn, JudgeResult
from reflexa.evals.contamination import Guard
from reflexa.evals.signal import JUSTIFICATIONS
from reflexa.graphs import ReflectionContext, build_reflection_graph
from reflexa.trainers.dataset import compile_examples, dataset_hash, to_records
from tests.fakes import ScriptedChatModel

# A check the user chose to show the model (a regex is visible); an `expected` value is not.
NUMBER = [{"type": "regex", "pattern": "^[0-4]$", "description": "be a digit below 5"}]
DIAGNOSIS = '{"cause": "wrong sum", "fix": "add again"}'


async def with_agent(
    script: list, body: Any, judge: JudgeFn | None = None, store: Store | None = None
) -> Any:
    settings = load_settings()
    store = store or Store.open(settings.database)
    llm = ScriptedChatModel(script=script)
    async with open_checkpointer(settings) as saver:
        agent = Agent(
            build_reflection_graph(saver),
            store,
            ReflectionContext(llm=llm, model_name="fake", judge=judge, strategies=("feedback",)),
            settings.reflect,
        )
        return await body(agent)


def run(script: list, *requests: EpisodeRequest) -> tuple[list[EpisodeResult], Store]:
    async def body(agent: Agent) -> tuple[list[EpisodeResult], Store]:
        return [await agent.run(r) for r in requests], agent.store

    return asyncio.run(with_agent(script, body))


def test_a_repaired_episode_is_recorded_with_a_verified_correction() -> None:
    (result,), store = run(["5", DIAGNOSIS, "4"], EpisodeRequest("2+2?", NUMBER))
    assert (result.status, result.answer) == ("repaired", "4")
    episode = store.episode(result.episode_id)
    assert episode is not None
    assert (episode["status"], episode["first_passed"], episode["n_attempts"]) == (
        "repaired",
        False,
        2,
    )
    assert [(a["kind"], a["strategy"]) for a in episode["attempts"]] == [
        ("generate", None),
        ("repair", "feedback"),
    ]
    (correction,) = store.corrections()
    assert (correction.rejected, correction.chosen) == ("5", "4")
    assert (correction.source, correction.verified) == ("repair", True)
    assert [f["id"] for f in store.failures()] == [result.episode_id]


def test_bad_input_is_refused_and_still_recorded() -> None:
    results, store = run(
        [],
        EpisodeRequest("   "),
        EpisodeRequest("x" * 20_000),
        EpisodeRequest("2+2?", [{"type": "no-such-check"}]),
    )
    assert [r.status for r in results] == ["error"] * 3
    assert results[0].error == "the prompt is empty"
    assert "20,000 characters; the limit is 16,000" in str(results[1].error)
    assert "unknown check type" in str(results[2].error)
    for r in results:
        assert store.episode(r.episode_id)["status"] == "error"  # type: ignore[index]
    assert len(store.episode(results[1].episode_id)["prompt"]) == 16_000  # type: ignore[index]


def test_model_failures_become_recorded_errors() -> None:
    request = httpx.Request("POST", "http://vllm/v1/chat/completions")
    timeout = openai.APITimeoutError(request)
    refused = openai.BadRequestError(
        "too long",
        response=httpx.Response(400, request=request),
        body={"message": "This model's maximum context length is 2048 tokens"},
    )
    results, store = run([timeout, refused], EpisodeRequest("a"), EpisodeRequest("b"))
    assert results[0].error == "the model did not answer in time (request_timeout_s)"
    assert results[1].error == (
        "the model server refused the request (400): "
        "This model's maximum context length is 2048 tokens"
    )
    assert {f["status"] for f in store.failures()} == {"error"}


def test_an_expected_value_only_scores_and_never_reaches_the_model() -> None:
    llm_seen: list[str] = []
    gold = [{"type": "numeric", "expected": 4817, "strict": True}]

    async def body(agent: Agent) -> tuple[EpisodeResult, Store]:
        result = await agent.run(
            EpisodeRequest("What is forty-eight hundred plus seventeen?", gold, max_repairs=1)
        )
        llm_seen.extend(str(m.content) for call in agent.context.llm.calls for m in call)  # type: ignore[attr-defined]
        return result, agent.store

    result, store = asyncio.run(with_agent(["It is 4816.", DIAGNOSIS, "4816"], body))
    assert not any("4817" in text for text in llm_seen)  # not in a prompt or feedback
    assert result.status == "repaired"  # the visible form check: only a number
    episode = store.episode(result.episode_id)
    assert episode is not None
    assert episode["checks"] == [{"type": "numeric", "strict": True}]
    assert episode["scoring"] == gold
    assert (episode["first_correct"], episode["final_correct"]) == (False, False)
    (correction,) = store.corrections()  # the repair, justified by the form check only
    assert (correction.justification, correction.correct) == ("form", False)
    assert all(c.source != "gold" for c in store.corrections())  # a request allows no gold


def test_reflection_that_breaks_a_right_answer_is_counted_as_harm() -> None:
    visible = [{"type": "regex", "pattern": "^\\d+$", "description": "be digits only"}]
    gold = [{"type": "numeric", "expected": 4}]
    (result,), store = run(["4.", DIAGNOSIS, "5"], EpisodeRequest("2+2?", visible, gold))
    episode = store.episode(result.episode_id)
    assert episode is not None
    assert result.status == "repaired"
    assert (episode["first_correct"], episode["final_correct"]) == (True, False)
    assert (episode["right_to_wrong"], episode["wrong_to_right"]) == (True, False)


def test_an_interrupted_turn_is_finished_before_the_next_one(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFLEXA_DATABASE_URL", database_url)  # store and checkpoints both

    async def body(agent: Agent) -> tuple[EpisodeResult, EpisodeResult, Store]:
        first = await agent.run(EpisodeRequest("2+2?", NUMBER, thread_id="t"))
        second = await agent.run(
            EpisodeRequest("3+3?", [{"type": "regex", "pattern": "^[5-9]$"}], thread_id="t")
        )
        return first, second, agent.store

    script = ["5", DIAGNOSIS, ConnectionError("server went away"), "4", "6"]
    first, second, store = asyncio.run(with_agent(script, body))
    assert (first.status, first.error) == ("error", "ConnectionError: server went away")
    resumed = store.episode(first.episode_id)
    assert resumed is not None
    assert (resumed["status"], resumed["answer"], resumed["n_attempts"]) == ("repaired", "4", 2)
    assert (second.status, second.answer) == ("passed", "6")  # the new message is answered


def lines(*texts: str) -> Iterator[str | None]:
    yield from texts
    while True:
        yield None


def test_chat_loop_streams_traces_and_records_corrections() -> None:
    out = io.StringIO()
    console = Console(file=out, width=120, color_system=None)
    inputs = lines("2+2?", "/trace", "/bad 4", "/nope", "3+3?", "/good", "/quit", "never read")

    async def body(agent: Agent) -> Store:
        await chat_loop(agent, console, lambda: next(inputs), thread_id="chat1")
        return agent.store

    async def judge(prompt: str, answer: str, rubric: str) -> JudgeResult:
        return JudgeResult(answer in ("4", "6"), 1.0, "that sum is wrong")

    store = asyncio.run(with_agent(["5", "{}", "4", "6"], body, judge))
    text = out.getvalue()
    assert "thread chat1" in text
    assert "✗ judge: that sum is wrong" in text
    assert "↻ repaired answer:\n4" in text
    assert "✓ passed the model's own review (judge only)" in text
    assert "episode" in text and "generate" in text  # the /trace table …
    assert "repair · feedback" in text and "→ feedback: " in text  # … with each route
    assert "unknown command /nope" in text
    assert text.rstrip().endswith("bye")
    assert [c.verified for c in store.corrections() if c.source == "repair"] == [False]
    user = [c for c in store.corrections() if c.source == "user"]
    assert [(c.prompt, c.chosen, c.verified) for c in user] == [("2+2?", "4", True)]
    ratings = [(r["prompt"], r["rating"], r["by"]) for r in store.ratings()]
    assert ratings == [("2+2?", "bad", getpass.getuser()), ("3+3?", "good", getpass.getuser())]
    assert store.last_episode("chat1")["prompt"] == "3+3?"  # type: ignore[index]


def test_with_the_judge_off_an_unchecked_answer_is_answered_but_never_passed() -> None:
    (result,), store = run(["Hello!"], EpisodeRequest("Say hello"))
    assert (result.status, result.answer, result.attempts[0]["verdicts"]) == (
        "unchecked",
        "Hello!",
        [],
    )
    episode = store.episode(result.episode_id)
    assert episode is not None
    assert (episode["first_passed"], episode["final_passed"]) == (None, False)
    assert store.failures() == []  # nothing failed either


@pytest.mark.parametrize("allowed", [False, True])
def test_sandbox_allow_unconfined_reaches_the_python_checks(
    monkeypatch: pytest.MonkeyPatch, allowed: bool
) -> None:
    """Settings → open_agent → the evaluate node → the sandbox: without isolation a code
    check is an error (not a failed answer) unless allow_unconfined."""
    from reflexa.agent.app.agent import open_agent
    from reflexa.agent.model.client import ModelClient
    from reflexa.agent.store import open_store
    from reflexa.evals import sandbox
    from reflexa.evals.isolation import Isolation

    monkeypatch.setattr(sandbox, "find_isolation", lambda: Isolation("none", "no bwrap found"))
    monkeypatch.setenv("REFLEXA_SANDBOX__ALLOW_UNCONFINED", str(allowed).lower())
    monkeypatch.setenv("REFLEXA_MEMORY__ENABLED", "false")
    settings = load_settings()
    checks = [{"type": "python_tests", "tests": "assert one() == 1"}]

    async def body() -> dict[str, Any]:
        store = open_store(settings)
        async with open_agent(settings, ModelClient("http://127.0.0.1:9", "m"), store) as agent:
            assert agent.context.allow_unconfined is allowed
            scripted = ReflectionContext(
                llm=ScriptedChatModel(script=["def one():\n    return 1"]), model_name="fake",
                allow_unconfined=agent.context.allow_unconfined,
            )  # fmt: skip
            agent.context = scripted
            result = await agent.run(EpisodeRequest("Write one().", checks, max_repairs=0))
        verdict: dict[str, Any] = result.attempts[0]["verdicts"][0]
        return verdict

    verdict = asyncio.run(body())
    if allowed:
        assert verdict["passed"] and verdict["error"] is None
    else:
        assert "no bwrap found" in verdict["error"]


def test_one_store_with_and_without_scoring_compiles_the_same_label_free_dataset(
    tmp_path: Path,
) -> None:
    # Gold once chose which repairs were recorded (a repair scoring found wrong was dropped
    # where gold was allowed), so "label-free" rows depended on the labels. Now the loop
    # records what it saw, and only a compile that allows gold lets gold replace a row.
    digits = [{"type": "regex", "pattern": "^[0-9]+$", "description": "be digits only"}]
    items = [  # (prompt, the model's answers, the right one)
        ("What is two plus two?", ["four", DIAGNOSIS, "5"], 4),  # repaired, wrongly
        ("What is three plus three?", ["6"], 6),  # right at once
        ("What is one plus one?", ["3"], 2),  # passes its form, wrong
        ("What is two plus five?", ["seven", DIAGNOSIS, "7"], 7),  # repaired, rightly
    ]
    compiled = {}
    for scored in (True, False):
        store = Store.open(sqlite_url(tmp_path / f"scored-{scored}.db"))
        script = [answer for _, answers, _ in items for answer in answers]
        requests = [
            EpisodeRequest(prompt, digits, [{"type": "numeric", "expected": right}] * scored,
                           allow_gold=True, split="train", suite="s")
            for prompt, _, right in items
        ]  # fmt: skip

        async def body(agent: Agent, requests: list[EpisodeRequest] = requests) -> None:
            for r in requests:
                await agent.run(r)

        asyncio.run(with_agent(script, body, store=store))
        # The checks here judge form alone: admitted outright, to compare every row.
        everything = {"protected": Guard(), "justifications": JUSTIFICATIONS}
        label_free = compile_examples(store, allow_gold=False, **everything)
        records = to_records(label_free.examples, "sft")
        compiled[scored] = (dataset_hash(records), [r["messages"] for r in records])
        if scored:  # where gold is allowed, it replaces what it found wrong
            gold = compile_examples(store, allow_gold=True, **everything)
            chosen = {e.prompt: (e.source, e.chosen) for e in gold.examples}
            assert chosen == {
                "What is two plus two?": ("gold", "4"),
                "What is three plus three?": ("self", "6"),
                "What is one plus one?": ("gold", "2"),
                "What is two plus five?": ("repair", "7"),
            }
    assert compiled[True] == compiled[False]
    assert len(compiled[True][1]) == 6  # 4 answers, 2 of them repairs with their turns


def test_the_chat_line_says_when_a_check_broke_on_the_answer() -> None:
    from reflexa.agent.chat import verdict_line

    ok = {"verifier": "regex", "passed": True, "score": 1.0, "feedback": "", "kind": "grounded",
          "error": None}  # fmt: skip
    broke = ok | {"passed": False, "error": "the pattern took over 1 s on this answer"}
    line = verdict_line({"verdicts": [ok, broke], "passed": False})
    why = "regex: the pattern took over 1 s on this answer"
    assert line == f"? not passed: a check could not judge it ({why})"
    assert verdict_line({"verdicts": [], "passed": False}).startswith("· unchecked")
