"""The reflection graph with a scripted model: each path through it, compared whole."""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from reflexa.evals import JudgeResult
from reflexa.graphs import ReflectionContext, build_reflection_graph, turn_input
from reflexa.graphs.state import Attempt, ReflectionState
from tests.fakes import ScriptedChatModel

DIAGNOSIS = '{"cause": "the sum is wrong", "fix": "add the numbers again"}'
NUMBER = [{"type": "numeric", "expected": 4, "strict": True}]
FEEDBACK = ("feedback",)  # the repair from feedback and diagnosis only (no routing)


def run(
    script: list,
    checks: list | None = None,
    prompt: str = "What is two plus two?",
    strategies: tuple[str, ...] = FEEDBACK,
    context: dict | None = None,
    **kw: Any,
) -> tuple[dict, ScriptedChatModel]:
    """One turn on a scripted model. The default prompt states no digits, so only the given
    checks (and the judge) apply: no tool-grounded arithmetic check."""
    llm = ScriptedChatModel(script=script)
    judge = kw.pop("judge", None)
    graph = build_reflection_graph()
    ctx = ReflectionContext(
        llm=llm, model_name="fake", judge=judge, strategies=strategies, **(context or {})
    )
    state = asyncio.run(graph.ainvoke(turn_input(prompt, checks, **kw), context=ctx))
    return state, llm


def summary(state: dict) -> tuple:
    return (
        state["status"],
        state["answer"],
        state["final_index"],
        [(a["kind"], a["answer"], a["passed"]) for a in state["attempts"]],
    )


def test_passes_first_time() -> None:
    state, llm = run(["4"], NUMBER)
    assert summary(state) == ("passed", "4", 0, [("generate", "4", True)])
    assert len(llm.calls) == 1  # no diagnosis, no repair
    assert state["messages"][-1] == {"role": "assistant", "content": "4"}
    assert state["attempts"][0]["prompt_tokens"] == 10


def test_fails_then_is_repaired() -> None:
    state, llm = run(["5", DIAGNOSIS, "4"], NUMBER)
    assert summary(state) == ("repaired", "4", 1, [("generate", "5", False), ("repair", "4", True)])
    assert state["attempts"][0]["diagnosis"] == {
        "cause": "the sum is wrong",
        "fix": "add the numbers again",
        "strategy": "feedback",
        "why": "no other strategy applies, or is left",
    }
    repair_request = llm.calls[2][-1].content
    assert "5 is not the correct number." in repair_request  # grounded feedback, verbatim
    assert "add the numbers again" in repair_request
    assert llm.calls[2][-2].content == "5"  # the failed answer, as the model's own turn


def test_budget_exhausted_returns_the_best_attempt() -> None:
    script = ["5", DIAGNOSIS, "The answer is 4", DIAGNOSIS, "7"]
    state, _ = run(script, NUMBER, max_repairs=2)
    assert summary(state) == (
        "unresolved",
        "The answer is 4",  # scored 0.5: right number, wrong form
        1,
        [("generate", "5", False), ("repair", "The answer is 4", False), ("repair", "7", False)],
    )


def test_zero_repairs_allowed() -> None:
    state, llm = run(["5"], NUMBER, max_repairs=0)
    assert summary(state) == ("unresolved", "5", 0, [("generate", "5", False)])
    assert len(llm.calls) == 1


def test_a_broken_diagnosis_does_not_stop_the_repair() -> None:
    state, _ = run(["5", "not json at all", "4"], NUMBER)
    assert state["status"] == "repaired"
    assert "JSONDecodeError" in state["attempts"][0]["diagnosis"]["error"]


def test_a_verifier_that_errors_is_not_the_answers_fault() -> None:
    async def judge(prompt: str, answer: str, rubric: str) -> JudgeResult:
        raise RuntimeError("judge crashed")

    state, llm = run(["4"], [], judge=judge)
    assert state["status"] == "verifier_error"
    (verdict,) = state["attempts"][0]["verdicts"]
    assert verdict["error"] == "RuntimeError: judge crashed"
    assert len(llm.calls) == 1  # no repair of an answer nobody could check


def test_a_check_that_errors_on_the_answer_is_not_passed() -> None:
    # The one verdict rule (evals.verdict.outcome): an errored check is not a pass, even
    # beside checks that passed. `(a|a)+$` backtracks on this answer past its time limit.
    checks = [{"type": "regex", "pattern": "(a|a)+$", "must_match": False},
              {"type": "regex", "pattern": "^[a-z!]+$"}]  # fmt: skip
    state, _ = run(["a" * 40 + "!"], checks)
    assert (state["status"], state["attempts"][0]["passed"]) == ("verifier_error", False)


def test_judge_only_verdicts_are_marked_and_can_trigger_repair() -> None:
    async def judge(prompt: str, answer: str, rubric: str) -> JudgeResult:
        return JudgeResult(answer == "4", 1.0 if answer == "4" else 0.0, "should be a number")

    state, _ = run(["four", DIAGNOSIS, "4"], [], judge=judge)
    assert state["status"] == "repaired"
    assert {v["kind"] for a in state["attempts"] for v in a["verdicts"]} == {"judge"}


def test_the_loop_holds_no_scoring() -> None:
    # An item's scoring (gold) reaches the application once the episode has ended, never the
    # graph: its state, its attempts and a turn's input have no place for it (scoring after
    # the loop, and right → wrong flips: tests/unit/test_episodes.py).
    leaks = {"gold", "scoring", "allow_gold", "gold_passed", "correct"}
    assert not leaks & set(ReflectionState.__annotations__)
    assert not leaks & set(Attempt.__annotations__)
    assert not leaks & set(inspect.signature(turn_input).parameters)


def test_the_judges_feedback_is_shown_to_the_repair() -> None:
    async def judge(prompt: str, answer: str, rubric: str) -> JudgeResult:
        return JudgeResult(answer != "4", 0.5, "looks too short")  # a wrong judge

    state, llm = run(["4", DIAGNOSIS, "5"], [], judge=judge)
    assert state["answer"] == "5"
    assert "looks too short" in str(llm.calls[2][-1].content)


def test_threads_accumulate_turns_and_reset_attempts() -> None:
    llm = ScriptedChatModel(script=["4", "6"])
    graph = build_reflection_graph(InMemorySaver())
    ctx = ReflectionContext(llm=llm, model_name="fake", strategies=FEEDBACK)
    config = {"configurable": {"thread_id": "t1"}}
    asyncio.run(graph.ainvoke(turn_input("2 + 2?", NUMBER), config, context=ctx))
    six = [{"type": "numeric", "expected": 6}]
    state = asyncio.run(graph.ainvoke(turn_input("3 + 3?", six), config, context=ctx))
    assert [m["content"] for m in state["messages"]] == ["2 + 2?", "4", "3 + 3?", "6"]
    assert [a["answer"] for a in state["attempts"]] == ["6"]
    assert [m.content for m in llm.calls[1]][1:] == ["2 + 2?", "4", "3 + 3?"]  # it saw the thread


def test_node_events_stream_in_order() -> None:
    llm = ScriptedChatModel(script=["5", DIAGNOSIS, "4"])
    graph = build_reflection_graph()
    ctx = ReflectionContext(llm=llm, model_name="fake", strategies=FEEDBACK)

    async def nodes() -> list[str]:
        return [
            next(iter(chunk))
            async for chunk in graph.astream(turn_input("2+2?", NUMBER), context=ctx)
        ]

    assert asyncio.run(nodes()) == [
        "recall", "generate", "evaluate", "diagnose", "repair", "evaluate", "finish",
    ]  # fmt: skip


def test_an_interrupted_episode_resumes_where_it_stopped() -> None:
    llm = ScriptedChatModel(script=["5", DIAGNOSIS, ConnectionError("server went away"), "4"])
    graph = build_reflection_graph(InMemorySaver())
    ctx = ReflectionContext(llm=llm, model_name="fake", strategies=FEEDBACK)
    config = {"configurable": {"thread_id": "t"}}
    with pytest.raises(ConnectionError):
        asyncio.run(graph.ainvoke(turn_input("2+2?", NUMBER), config, context=ctx))
    assert asyncio.run(graph.aget_state(config)).next == ("repair",)
    state = asyncio.run(graph.ainvoke(None, config, context=ctx))  # resume
    assert summary(state)[:2] == ("repaired", "4")
    assert len(llm.calls) == 4  # generate and diagnose were not run again


def test_a_wrong_sum_is_caught_in_chat_by_the_arithmetic_tool_without_a_label() -> None:
    """No checks given, and the judge passes the answer: evaluating the prompt's expression
    catches 181, and its feedback names the expression, not the value."""

    async def judge(prompt: str, answer: str, rubric: str) -> JudgeResult:
        return JudgeResult(True, 1.0, "looks fine")

    prompt = "What is 34 + 41? Reply with only the number."
    state, llm = run(["181", DIAGNOSIS, "75"], prompt=prompt, judge=judge)
    first = state["attempts"][0]
    tool = next(v for v in first["verdicts"] if v["verifier"] == "arithmetic")
    assert not first["passed"] and not tool["passed"] and tool["kind"] == "grounded"
    assert tool["feedback"] == "181 is not the value of 34 + 41 (checked by evaluating it exactly)."
    assert state["status"] == "repaired" and state["answer"] == "75"
    assert not any("75" in str(m.content) for call in llm.calls for m in call)  # never told


def test_the_arithmetic_tool_applies_beside_a_tasks_own_checks() -> None:
    form = [{"type": "numeric", "strict": True}]  # a number: 181 passes the form
    state, _ = run(["181"], form, prompt="What is 34 + 41?", max_repairs=0)
    verdicts = {v["verifier"]: v["passed"] for v in state["attempts"][0]["verdicts"]}
    assert verdicts == {"numeric": True, "arithmetic": False}
    assert state["status"] == "unresolved"


ALL = ("constrained", "sample", "feedback")
NUM = r"-?[0-9]{1,30}(\.[0-9]{1,30})?"
SCHEMA = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}


def test_a_failed_shape_is_repaired_under_structured_outputs_without_a_diagnosis() -> None:
    checks = [{"type": "json", "schema": SCHEMA}]
    state, llm = run(["age: 36", '{"age": 36}'], checks, strategies=ALL)
    first, fix = state["attempts"]
    assert first["diagnosis"] == {"strategy": "constrained", "shape": {"json": SCHEMA},
                                  "why": "a failed check has a formal shape (json)"}  # fmt: skip
    assert (fix["strategy"], fix["answer"], fix["passed"]) == ("constrained", '{"age": 36}', True)
    assert len(llm.calls) == 2  # no diagnosis call
    assert llm.call_kwargs[-1]["extra_body"] == {"structured_outputs": {"json": SCHEMA}}


class ShapeRefused(Exception):
    status_code = 400  # as openai.BadRequestError carries it


def test_a_shape_vllm_cannot_compile_falls_back_to_feedback_with_a_note() -> None:
    checks = [{"type": "regex", "pattern": "^4(?!x)$"}]  # a lookahead: not for grammars
    state, _ = run(["5", ShapeRefused("unsupported"), "4"], checks, strategies=ALL)
    fix = state["attempts"][1]
    assert (fix["strategy"], fix["answer"], state["status"]) == ("feedback", "4", "repaired")
    assert fix["note"].startswith("the shape could not be decoded under (unsupported)")


def test_a_tool_decided_failure_samples_and_the_checks_select() -> None:
    """The arithmetic tool checks each candidate, drawn 2 then 2: none of the first two
    passes, two of the next say 75 and pass: chosen."""
    form = [{"type": "numeric"}]  # a number, no shape: not strict
    llm = ScriptedChatModel(script=["181", "76", "180", "75", "75"])
    ctx = ReflectionContext(llm=llm, model_name="fake", samples=4)
    turn = turn_input("What is 34 + 41?", form, max_repairs=1)
    state = asyncio.run(build_reflection_graph().ainvoke(turn, context=ctx))
    fix = state["attempts"][1]
    assert state["attempts"][0]["diagnosis"]["strategy"] == "sample"
    assert (fix["strategy"], fix["answer"], fix["passed"]) == ("sample", "75", True)
    assert fix["note"] == "2 of 4 candidates passed; 2 agree"
    assert [k["n"] for k in llm.call_kwargs[1:]] == [2, 2] and fix["completion_tokens"] == 4
    assert state["status"] == "repaired"


def test_sampling_stops_at_the_first_request_with_a_verified_candidate() -> None:
    llm = ScriptedChatModel(script=["181", "75", "76"])
    ctx = ReflectionContext(llm=llm, model_name="fake", samples=8)
    turn = turn_input("What is 34 + 41?", [{"type": "numeric"}], max_repairs=1)
    state = asyncio.run(build_reflection_graph().ainvoke(turn, context=ctx))
    fix = state["attempts"][1]
    assert (fix["answer"], fix["note"]) == ("75", "1 of 2 candidates passed; 1 agree")
    assert [k["n"] for k in llm.call_kwargs[1:]] == [2]  # not 8


def test_where_no_check_decides_the_rest_come_in_one_request() -> None:
    script = ["Lyon", "Paris", "Nice", *["Paris"] * 6]
    state, llm = run(script, [], strategies=ALL, judge=unconvinced, context={"samples": 8})
    assert [k["n"] for k in llm.call_kwargs if "n" in k] == [2, 6]  # a majority needs all 8
    assert state["answer"] == "Paris"


@pytest.mark.parametrize(
    ("samples", "escalate", "sizes"),
    [(8, True, [2, 2, 4]), (5, True, [2, 2, 1]), (16, True, [2, 2, 4, 8]), (2, True, [2]),
     (8, False, [8])],
)  # fmt: skip
def test_sample_batches_double(samples: int, escalate: bool, sizes: list[int]) -> None:
    from reflexa.graphs.repair import batches

    assert batches(samples, escalate) == sizes


def test_when_no_candidate_passes_the_answer_stays_and_feedback_comes_next() -> None:
    form = [{"type": "numeric"}]
    script = ["181", "180", "182", DIAGNOSIS, "75"]
    llm = ScriptedChatModel(script=script)
    ctx = ReflectionContext(llm=llm, model_name="fake", samples=2)
    turn = turn_input("What is 34 + 41?", form, max_repairs=2)
    state = asyncio.run(build_reflection_graph().ainvoke(turn, context=ctx))
    _, sampled, fed = state["attempts"]
    assert (sampled["strategy"], sampled["answer"]) == ("sample", "181")  # no harm
    assert sampled["note"] == "none of 2 candidates passed the checks"
    assert (fed["strategy"], fed["answer"], state["status"]) == ("feedback", "75", "repaired")


@pytest.mark.parametrize(
    ("failed", "checks", "expected"),
    [
        ({"json"}, [{"type": "json", "schema": SCHEMA}], ("constrained", {"json": SCHEMA})),
        ({"regex"}, [{"type": "regex", "pattern": "^OK$"}], ("constrained", {"regex": "(?:OK)"})),
        ({"regex"}, [{"type": "regex", "pattern": "OK"}], ("constrained", {"regex": ".*(?:OK).*"})),
        ({"regex"}, [{"type": "regex", "pattern": "O|K", "full": True}],
         ("constrained", {"regex": "(?:O|K)"})),
        ({"choice"}, [{"type": "choice", "options": ["A", "B"]}],
         ("constrained", {"choice": ["A", "B"]})),
        ({"numeric"}, [{"type": "numeric", "strict": True}], ("constrained", {"regex": NUM})),
        ({"arithmetic"}, [{"type": "numeric"}], ("sample", None)),
        ({"python_tests"}, [{"type": "python_tests", "tests": "f()"}], ("sample", None)),
        ({"arithmetic", "numeric"}, [{"type": "numeric", "strict": True}],
         ("sample", {"regex": NUM})),
        ({"judge"}, [], ("sample", None)),
        ({"regex"}, [{"type": "regex", "pattern": "ok", "ignore_case": True}], ("sample", None)),
    ],
)  # fmt: skip
def test_routing(failed: set[str], checks: list, expected: tuple) -> None:
    from reflexa.graphs.repair import route

    verdicts = [{"verifier": f, "passed": False, "error": None} for f in failed]
    strategy, _, shape = route(verdicts, checks, tried=[], samples=8)
    assert (strategy, shape) == expected
    assert route(verdicts, checks, tried=[strategy], samples=8)[0] != strategy
    assert route(verdicts, checks, tried=["constrained", "sample"], samples=8)[0] == "feedback"
    assert route(verdicts, checks, tried=[], samples=1)[0] in ("constrained", "feedback")


def test_a_tool_decided_failure_samples_under_the_tasks_shape_in_one_request() -> None:
    """A strict number check and the arithmetic tool: one repair fixes form and value, its
    candidates decoded as numbers, each within its share of the tokens."""
    strict = [{"type": "numeric", "strict": True}]
    llm = ScriptedChatModel(script=["34 + 41 = 181", "75", "75", "74", "75"])
    ctx = ReflectionContext(
        llm=llm, model_name="fake", samples=4, escalate=False, repair_tokens=100
    )
    turn = turn_input("What is 34 + 41?", strict, max_repairs=2)
    state = asyncio.run(build_reflection_graph().ainvoke(turn, context=ctx))
    first, fix = state["attempts"]
    assert first["diagnosis"]["strategy"] == "sample"
    assert (fix["answer"], state["status"]) == ("75", "repaired")
    sent = llm.call_kwargs[-1]
    assert sent["extra_body"] == {"structured_outputs": {"regex": NUM}}
    assert (sent["n"], sent["max_tokens"]) == (4, 25)  # 100 tokens among 4 candidates


def test_a_candidate_is_at_most_four_times_the_first_answer_and_64_tokens_at_least() -> None:
    llm = ScriptedChatModel(script=["181", "180", "182"])
    ctx = ReflectionContext(llm=llm, model_name="fake", samples=2)
    turn = turn_input("What is 34 + 41?", [{"type": "numeric"}], max_repairs=1)
    asyncio.run(build_reflection_graph().ainvoke(turn, context=ctx))
    assert llm.call_kwargs[-1]["max_tokens"] == 64  # the first answer: 1 token


async def unconvinced(prompt: str, answer: str, rubric: str) -> JudgeResult:
    return JudgeResult(answer == "Paris", 1.0 if answer == "Paris" else 0.0, "not convinced")


def test_when_only_the_judge_objects_a_majority_of_samples_chooses() -> None:
    script = ["Lyon", "Paris", "paris.", "Paris", "Nice"]
    context = {"samples": 4}
    state, _ = run(script, [], strategies=ALL, judge=unconvinced, context=context)
    first, fix = state["attempts"]
    why = "4 candidates, chosen by a majority (only the judge objected)"
    assert first["diagnosis"]["why"] == why
    assert (fix["strategy"], fix["answer"], fix["note"]) == (
        "sample",
        "Paris",
        "no check decides; 3 of 4 candidates agree",
    )
    assert state["status"] == "repaired"


def test_with_no_majority_among_samples_the_answer_stays() -> None:
    script = ["Lyon", "Paris", "Nice", "Paris", "Nice"]  # 2 against 2: a tie
    state, _ = run(script, [], strategies=ALL, judge=unconvinced, context={"samples": 4},
                   max_repairs=1)  # fmt: skip
    fix = state["attempts"][1]
    assert (fix["answer"], state["answer"], state["status"]) == ("Lyon", "Lyon", "unresolved")
    assert fix["note"] == "no check decides, and no majority among 4 candidates (2 agree)"


def test_a_spent_token_budget_stops_repairs_and_says_why() -> None:
    form = [{"type": "numeric", "strict": True}]
    script = ["about five", "5 5 5"]  # the constrained repair fails again, using 3 tokens
    context = {"repair_tokens": 3}
    state, llm = run(script, form, strategies=ALL, context=context, max_repairs=2)
    assert len(state["attempts"]) == 2 and state["status"] == "unresolved"
    assert state["attempts"][1]["diagnosis"] == {
        "strategy": None,
        "why": "the turn's repair tokens are spent (3 of 3)",
    }
    assert llm.call_kwargs[-1]["max_tokens"] == 3


def test_a_spent_time_budget_stops_repairs_before_they_start() -> None:
    llm = ScriptedChatModel(script=["five"])
    ctx = ReflectionContext(llm=llm, model_name="fake", repair_seconds=60)
    turn = turn_input("What is two plus two?", NUMBER) | {"started": time.time() - 61}
    state = asyncio.run(build_reflection_graph().ainvoke(turn, context=ctx))
    assert (len(state["attempts"]), len(llm.calls), state["status"]) == (1, 1, "unresolved")
    assert state["attempts"][0]["diagnosis"]["why"].startswith("the turn's repair time is spent")
