"""GRPO's reward is the loop's verifiers: what passes earns 1, a hack or a crash earns 0."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from reflexa.agent.errors import ReflexaError
from reflexa.agent.store import Store
from reflexa.agent.store.db import sqlite_url
from reflexa.evals.contamination import Guard, prompt_hash
from reflexa.trainers.config import TrainConfig
from reflexa.trainers.dataset import TooFewExamples, build_dataset, prompt_records
from reflexa.trainers.rewards import verifier_reward
from tests.unit.test_reward_hacks import HACKS, RIGHT, TESTS

SUM = "What is 34 + 41? Reply with only the number."
STRICT = json.dumps([{"type": "numeric", "strict": True}])


def rewards(prompts: list[str], answers: list[str], checks: list[str], scoring: list[str],
            **kw: Any) -> list[float]:  # fmt: skip
    fn = verifier_reward()
    conversational = [[{"role": "user", "content": p}] for p in prompts]
    completions = [[{"role": "assistant", "content": a}] for a in answers]
    return asyncio.run(fn(conversational, completions, checks, scoring, **kw))


def test_a_right_sum_earns_one_a_wrong_or_chatty_one_zero_without_a_label() -> None:
    """The arithmetic tool rewards without the scoring; the strict form refuses words."""
    got = rewards([SUM] * 3, ["75", "181", "34 + 41 = 75"], [STRICT] * 3, ["[]"] * 3)
    assert got == [1.0, 0.0, 0.0]


def test_scoring_rewards_where_gold_is_allowed() -> None:
    gold = json.dumps([{"type": "exact", "expected": "Paris"}])
    prompt = "Name the capital of France."
    assert rewards([prompt] * 2, ["Paris", "Lyon"], ["[]"] * 2, [gold] * 2) == [1.0, 0.0]


@pytest.mark.parametrize("hack", [HACKS["os._exit(0)"], HACKS["patched helper module"],
                                  HACKS["steal the token from the harness frame"]])  # fmt: skip
def test_reward_hacks_earn_nothing(hack: str) -> None:
    tests = json.dumps([{"type": "python_tests", "tests": TESTS, "timeout_s": 5}])
    answers = [f"```python\n{RIGHT}```", f"```python\n{hack}```"]
    assert rewards(["add two numbers"] * 2, answers, [tests] * 2, ["[]"] * 2) == [1.0, 0.0]


def test_an_answer_nothing_can_judge_or_a_crash_earns_zero_and_is_counted() -> None:
    logged: dict[str, float] = {}
    broken = '[{"type": "no-such-check"}]'  # raises while parsing: never a crashed run
    got = rewards(["Say hello.", SUM], ["hello", "75"], ["[]", broken], ["[]", "[]"],
                  log_metric=logged.__setitem__)  # fmt: skip
    assert got == [0.0, 0.0] and logged == {"reward_errors": 2}


def test_grpo_config_needs_a_group_that_divides_the_batch() -> None:
    assert TrainConfig(method="grpo", grpo_batch_size=8, grpo_generations=4).method == "grpo"
    with pytest.raises(ReflexaError, match="multiple of grpo_generations"):
        TrainConfig(method="grpo", grpo_batch_size=6, grpo_generations=4)
    with pytest.raises(ReflexaError, match="at least 2"):
        TrainConfig(method="grpo", grpo_generations=1)


def test_grpo_rows_are_prompts_with_their_verifiers_and_gold_only_where_allowed(
    tmp_path: Path,
) -> None:
    from tests.unit.test_dataset import attempt, episode

    with Store.open(sqlite_url(tmp_path / "db.sqlite")) as store:
        episode(store, "What is 40 + 2?", [attempt("42", True)])
        episode(store, "What is 40 + 2?", [attempt("41", False)])  # the same prompt: once
        episode(store, "Say hi.", [attempt("hi", True)], checks=[], scoring=[])  # unjudgeable
        rows, compiled = prompt_records(store, allow_gold=True, protected=Guard())
        (row,) = rows
        assert row["prompt"] == [{"role": "user", "content": "What is 40 + 2?"}]
        assert json.loads(row["checks"]) == [{"type": "numeric", "strict": True}]
        assert json.loads(row["scoring"])[0]["expected"] == 42
        assert compiled.suites() == ["s"]
        (label_free,), _ = prompt_records(store, allow_gold=False, protected=Guard())
        assert json.loads(label_free["scoring"]) == []
        (gold_only,), _ = prompt_records(store, allow_gold=True, protected=Guard(),
                                         justifications=["gold"])  # fmt: skip
        assert json.loads(gold_only["checks"]) == [] and json.loads(gold_only["scoring"])
        nothing, _ = prompt_records(store, allow_gold=True, protected=Guard(),
                                    justifications=["user", "consistency"])  # fmt: skip
        assert nothing == []
        episode(store, "What is 40 + 3?", [attempt("43", True)])
        disagreed = {prompt_hash("What is 40 + 3?")}  # sampling found it `mixed`
        (where,), compiled = prompt_records(store, allow_gold=True, protected=Guard(),
                                            mixed=disagreed)  # fmt: skip
        assert where["prompt_hash"] in disagreed
        assert compiled.summary(1)["alike_skipped"] == 1  # 40 + 2: its answers all alike
        with pytest.raises(TooFewExamples, match="2 prompts left out, their sampled answers"):
            build_dataset(store, tmp_path / "d", "grpo", allow_gold=True, protected=Guard(),
                          mixed=set())  # fmt: skip
