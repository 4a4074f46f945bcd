"""GRPO's reward is the loop's verifiers: what passes earns 1, a hack or a crash earns 0."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from reflexa.agent.store import Store
from reflexa.agent.store.db import sqlite_url
from reflexa.evals import VerifyContext, parse_checks, run_checks
from reflexa.evals.contamination import Guard, prompt_hash
from reflexa.evals.verdict import outcome
from reflexa.evals.verify import passes
from reflexa.trainers.config import TrainConfig
from reflexa.trainers.dataset import TooFewExamples, build_dataset, prompt_records
from reflexa.trainers.errors import TrainerError
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
    with pytest.raises(TrainerError, match="multiple of grpo_generations"):
        TrainConfig(method="grpo", grpo_batch_size=6, grpo_generations=4)
    with pytest.raises(TrainerError, match="at least 2"):
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


# What json-extract shows the loop: a schema, so only the form is checked.
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"], "additionalProperties": False}  # fmt: skip
FORM_ONLY = json.dumps([{"type": "json", "schema": SCHEMA}])


def test_a_constant_valid_object_never_earns_the_top_reward() -> None:
    # Schema validity alone once earned full reward, so one constant object was a policy.
    ada, bob = "Ada Lovelace is 36 years old.", "Bob Marley is 41 years old."
    right_ada, right_bob = (
        '{"name": "Ada Lovelace", "age": 36}',
        '{"age": 41, "name": "Bob Marley"}',
    )
    constant = '{"name": "", "age": 0}'
    prompts = [ada] * 4 + [bob] * 4
    answers = [right_ada] * 3 + [constant] + [right_bob] * 3 + ["not json"]
    got = rewards(prompts, answers, [FORM_ONLY] * 8, ["[]"] * 8)
    assert got == [1.0] * 3 + [0.5] + [1.0] * 3 + [0.0]  # the group's majority, form, nothing
    # A policy that answers every prompt with it: each group agrees with itself, and the
    # answer is the majority of another prompt too: it says nothing about either.
    assert rewards(prompts, [constant] * 8, [FORM_ONLY] * 8, ["[]"] * 8) == [0.5] * 8
    # No strict majority in the group: form alone.
    split = [right_ada, right_ada, constant, constant]
    assert rewards([ada] * 4, split, [FORM_ONLY] * 4, ["[]"] * 4) == [0.5] * 4


def test_a_check_that_errors_on_an_answer_is_not_escaped() -> None:
    # An errored verdict was once left out of the decision: an answer that makes a
    # `must_match: false` pattern time out passed it.
    escape = "a" * 40 + "!"  # `(a|a)+$` backtracks on it until the time limit
    specs = [{"type": "regex", "pattern": "(a|a)+$", "must_match": False},
             {"type": "regex", "pattern": "^[a-z!]+$"}]  # fmt: skip
    verdicts = asyncio.run(run_checks(parse_checks(specs), escape, VerifyContext("Say it.")))
    assert verdicts[0].error is not None and outcome(verdicts) == "failed"
    assert rewards(["Say it."], [escape], [json.dumps(specs)], ["[]"]) == [0.0]
    assert not asyncio.run(passes(specs, "Say it.", escape))
