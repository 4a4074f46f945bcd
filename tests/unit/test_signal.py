"""Self-consistency: answers normalised by what the checks expect, and the vote."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from reflexa.agent.model.client import ModelClient
from reflexa.agent.settings import Settings
from reflexa.agent.store import Store
from reflexa.agent.store.db import sqlite_url
from reflexa.evals.contamination import prompt_hash
from reflexa.evals.signal import normalise, vote
from reflexa.trainers.errors import TrainerError
from reflexa.trainers.records import AttemptRecord, EpisodeRecord
from reflexa.trainers.sampling import _judge, sample_corrections

NUMBER = [{"type": "numeric", "strict": True}]
SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
JSON = [{"type": "json", "schema": SCHEMA}]


def test_answers_are_normalised_by_the_checks_type() -> None:
    assert normalise("42", NUMBER) == normalise("42.0", NUMBER) == normalise("It is 42", NUMBER)
    assert normalise('{"age": 3, "name": "A"}', JSON) == normalise('{"name":"A","age":3}', JSON)
    assert normalise("  Paris. ", []) == normalise("paris", [])


def test_the_greedy_answer_backed_by_enough_samples_wins() -> None:
    picked = vote("42", ["42", "42.0", "41", "40"], NUMBER, [True] * 5, min_greedy=3)
    assert picked is not None and (picked.answer, picked.agree, picked.greedy) == ("42", 3, True)


def test_else_a_large_majority_that_passes_the_checks() -> None:
    samples = ["7", "7", "7", "7", "7", "8", "9", "9"]
    picked = vote("It is 6", samples, NUMBER, [False, *[True] * 8], min_majority=5)
    assert picked is not None and (picked.answer, picked.agree, picked.greedy) == ("7", 5, False)
    assert vote("6", samples[:4] + ["8"] * 4, NUMBER, [True] * 9) is None  # no majority
    failing = [True, *[False] * 5, True, True, True]  # the 7s all fail a visible check
    assert vote("6", samples, NUMBER, failing) is None


def record(prompt: str, checks: list, scoring: list, first: str) -> EpisodeRecord:
    """A logged training episode whose first answer failed its checks."""
    attempt = AttemptRecord("generate", first, [], passed=False)
    return EpisodeRecord("e1", prompt, [{"role": "user", "content": prompt}], checks,
                         [attempt], "unresolved", first_passed=False, scoring=scoring)  # fmt: skip


def test_the_sampling_judge_keeps_a_voted_answer_and_records_scorings_view() -> None:
    gold = {"name": "Ada Lovelace", "age": 36}
    episode = record(
        "Return a JSON object with keys name and age for: Ada Lovelace is 36.", JSON,
        [{"type": "json", "schema": SCHEMA, "expected": gold}], "Sure! Here it is.",
    )  # fmt: skip
    right, wrong = json.dumps(gold), json.dumps(gold | {"age": 63})
    kept = asyncio.run(_judge(episode, right, [right] * 4 + [wrong] * 3, 3, 5))
    assert kept is not None
    assert (kept["chosen"], kept["source"], kept["justification"]) == (right, "self",
                                                                      "consistency")  # fmt: skip
    assert (kept["correct"], kept["rejected"]) == (True, "Sure! Here it is.")
    kept = asyncio.run(_judge(episode, "no", [right] * 5 + [wrong] * 3, 3, 5))
    assert kept is not None
    assert (kept["source"], kept["justification"]) == ("sampled", "consistency")
    # No majority: a passing answer is kept, greedy first, justified by the checks alone:
    # here a schema, which checks the form only.
    kept = asyncio.run(_judge(episode, "no", [wrong, right, "no", "no"], 3, 5))
    assert kept is not None and (kept["chosen"], kept["justification"]) == (wrong, "form")
    assert kept["correct"] is False  # measured, not used to choose
    kept = asyncio.run(_judge(replace(episode, first_passed=True), right, [wrong, "no"], 3, 5))
    assert kept is not None and (kept["chosen"], kept["source"]) == (right, "self")
    assert kept["rejected"] is None  # the logged first answer passed: nothing to reject
    assert asyncio.run(_judge(episode, "no", ["no", "Sure."], 3, 5)) is None


def test_a_stated_sum_is_computed_so_a_right_looking_number_is_not_enough() -> None:
    """On-policy rounds keep samples of arithmetic prompts only where the tool's sum agrees:
    the visible check (a bare number) alone would keep any number."""
    episode = record(
        "What is 34 + 41? Reply with only the number.", NUMBER,
        [{"type": "numeric", "expected": 75, "strict": True}], "34 + 41 = 85",
    )  # fmt: skip
    kept = asyncio.run(_judge(episode, "76", ["77", "75", "74"], 3, 5))
    assert kept is not None and (kept["chosen"], kept["source"]) == ("75", "sampled")
    assert kept["correct"] is True and kept["rejected"] == "34 + 41 = 85"
    assert asyncio.run(_judge(episode, "76", ["77", "78"], 3, 5)) is None


def test_sampling_returns_the_prompts_whose_answers_disagreed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where some answers pass the checks and some fail, GRPO has an advantage to learn;
    where all fail (or all pass) it has none, so those prompts are not `mixed`."""
    from tests.unit.test_dataset import attempt, episode

    replies = {  # prompt: (greedy, samples)
        "What is 40 + 2?": ("41", ["42", "41"]),  # the tool check passes one: mixed
        "What is 40 + 3?": ("41", ["40", "39"]),  # all fail
        "What is 40 + 4?": ("44", ["44", "44"]),  # all pass
    }

    def reply(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        greedy, samples = replies[body["messages"][0]["content"]]
        texts = [greedy] if body["n"] == 1 else samples
        return httpx.Response(200, json={"choices": [{"message": {"content": t}} for t in texts]})

    real = httpx.AsyncClient
    monkeypatch.setattr(
        httpx, "AsyncClient", lambda **kw: real(transport=httpx.MockTransport(reply), **kw)
    )
    settings = Settings(cycle={"sample_n": 2})
    with Store.open(sqlite_url(tmp_path / "db.sqlite")) as store:
        for prompt in replies:
            episode(store, prompt, [attempt("0", False)], scoring=[])
        targets = store.training_episodes("train")
        client = ModelClient("http://vllm.test", "m")
        counts, mixed = asyncio.run(
            sample_corrections(settings.workspace(), store, client, None, targets)
        )
        assert counts == {"prompts": 3, "consistency": 1, "checks": 1, "form": 0,
                          "unanswered": 0, "mixed": 1}  # fmt: skip
        assert mixed == {prompt_hash("What is 40 + 2?")}


def test_samples_are_asked_after_the_greedy_answer_and_capped_at_twice_its_length(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each prompt's greedy answer comes first; its samples may take twice its tokens, at
    least 64 and at most `sample_max_tokens`; and it is asked alone, as its row will show
    it, even where the episode came with earlier turns (an imported thread)."""
    from reflexa.trainers.sampling import sample_cap
    from tests.unit.test_dataset import attempt, episode

    assert [sample_cap(n, 256) for n in (0, 5, 32, 40, 200)] == [64, 64, 64, 80, 256]
    greedy_tokens = {"What is 40 + 2?": 3, "What is 40 + 3?": 90}
    asked: list[tuple[str, int, int]] = []

    def reply(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        prompt = body["messages"][0]["content"]
        asked.append((prompt, body["n"], body["max_tokens"]))
        assert len(body["messages"]) == 1
        tokens = greedy_tokens[prompt] if body["n"] == 1 else 1
        return httpx.Response(200, json={
            "choices": [{"message": {"content": "42"}}] * body["n"],
            "usage": {"completion_tokens": tokens * body["n"]}})  # fmt: skip

    real = httpx.AsyncClient
    monkeypatch.setattr(
        httpx, "AsyncClient", lambda **kw: real(transport=httpx.MockTransport(reply), **kw)
    )
    settings = Settings(cycle={"sample_n": 4, "sample_max_tokens": 150})
    with Store.open(sqlite_url(tmp_path / "db.sqlite")) as store:
        for prompt in greedy_tokens:
            episode(store, prompt, [attempt("0", False)], scoring=[])
        targets = store.training_episodes("train")
        earlier = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
        targets[0] = replace(targets[0], messages=[*earlier, *targets[0].messages])
        client = ModelClient("http://vllm.test", "m")
        asyncio.run(sample_corrections(settings.workspace(), store, client, None, targets))
    for prompt, cap in (("What is 40 + 2?", 64), ("What is 40 + 3?", 150)):
        assert [(n, most) for p, n, most in asked if p == prompt] == [(1, 150), (4, cap)]


def test_a_prompt_the_server_does_not_answer_is_skipped_and_none_answered_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A night's sampling outlives one slow request (it once ended a nights benchmark run
    with a traceback); a server that answers nothing fails the stage in one line."""
    from tests.unit.test_dataset import attempt, episode

    slow = {"What is 40 + 3?"}

    def reply(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body["messages"][0]["content"] in slow:
            raise httpx.ReadTimeout("timed out", request=request)
        return httpx.Response(200, json={"choices": [{"message": {"content": "44"}}] * body["n"]})

    real = httpx.AsyncClient
    monkeypatch.setattr(
        httpx, "AsyncClient", lambda **kw: real(transport=httpx.MockTransport(reply), **kw)
    )
    ws = Settings(cycle={"sample_n": 2}).workspace()
    client = ModelClient("http://vllm.test", "m")
    with Store.open(sqlite_url(tmp_path / "db.sqlite")) as store:
        for prompt in ("What is 40 + 3?", "What is 40 + 4?"):
            episode(store, prompt, [attempt("0", False)], scoring=[])
        targets = store.training_episodes("train")
        counts, _ = asyncio.run(sample_corrections(ws, store, client, None, targets))
        assert counts["unanswered"] == 1 and counts["consistency"] + counts["checks"] == 1
        slow.add("What is 40 + 4?")
        with pytest.raises(TrainerError, match=r"answered none of 2 prompts .*ReadTimeout"):
            asyncio.run(sample_corrections(ws, store, client, None, targets))
