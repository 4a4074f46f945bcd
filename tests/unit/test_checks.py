from __future__ import annotations

import asyncio
import time

import pytest

from reflexa.evals import (
    CheckSpecError,
    JudgeResult,
    VerifyContext,
    checks_for,
    parse_checks,
    run_checks,
)
from reflexa.evals.json_check import extract_json

CTX = VerifyContext(prompt="a prompt")


def verdict(spec: dict, answer: str, ctx: VerifyContext = CTX):  # type: ignore[no-untyped-def]
    (check,) = parse_checks([spec])
    return asyncio.run(check.verify(answer, ctx))


@pytest.mark.parametrize(
    ("spec", "answer", "passed"),
    [
        ({"type": "exact", "expected": "Paris"}, "  paris. ", True),
        ({"type": "exact", "expected": "Paris"}, "Berlin", False),
        ({"type": "exact", "expected": "Paris", "normalize": False}, "paris", False),
        ({"type": "numeric", "expected": 42}, "The answer is 42.", True),
        ({"type": "numeric", "expected": 42}, "42", True),
        ({"type": "numeric", "expected": 42}, "17 + 25 = 52", False),
        ({"type": "numeric", "expected": 42, "strict": True}, "The answer is 42.", False),
        ({"type": "numeric", "expected": 42, "strict": True}, "42.", True),
        ({"type": "numeric", "expected": 1234}, "1,234", True),
        ({"type": "numeric", "expected": 3.14, "tolerance": 0.01}, "about 3.141", True),
        ({"type": "numeric", "expected": 3.14, "tolerance": 0.001}, "3.15", False),
        ({"type": "numeric", "expected": 1}, "no digits here", False),
        ({"type": "regex", "pattern": r"^\d{3}$"}, "123", True),
        ({"type": "regex", "pattern": r"^\d{3}$"}, "1234", False),
        ({"type": "regex", "pattern": "sorry", "must_match": False}, "Sure!", True),
        ({"type": "regex", "pattern": "YES", "ignore_case": True, "full": True}, "yes", True),
    ],
)
def test_match_checks(spec: dict, answer: str, passed: bool) -> None:
    v = verdict(spec, answer)
    assert v.passed is passed
    assert v.kind == "grounded"
    assert (v.score == 1.0) is passed
    assert bool(v.feedback) is not passed


def test_feedback_never_gives_the_gold_answer_away() -> None:
    for spec, answer in [
        ({"type": "exact", "expected": "Canberra"}, "Sydney"),
        ({"type": "numeric", "expected": 42}, "52"),
        ({"type": "json", "expected": {"name": "Ada", "age": 36}}, '{"name": "Ada", "age": 35}'),
    ]:
        feedback = verdict(spec, answer).feedback
        assert "Canberra" not in feedback and "42" not in feedback and "36" not in feedback
    assert "'age'" in verdict(*_json_age_case()).feedback  # but it says where the error is


def _json_age_case() -> tuple[dict, str]:
    return {"type": "json", "expected": {"name": "Ada", "age": 36}}, '{"name": "Ada", "age": 35}'


def test_numeric_feedback_says_what_form_is_wanted() -> None:
    v = verdict({"type": "numeric", "expected": 42, "strict": True}, "The sum is 42")
    assert not v.passed and "only the number" in v.feedback


SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    ("answer", "passed", "hint"),
    [
        ('{"name": "Ada", "age": 36}', True, ""),
        ('```json\n{"name": "Ada", "age": 36}\n```', True, ""),
        ('Here you go:\n```json\n{"name": "Ada", "age": 36}\n```', False, "alone"),
        ('Sure! {"name": "Ada", "age": 36} Hope it helps', False, "alone"),
        ('{"name": "Ada"}', False, "'age' is a required property"),
        ('{"name": "Ada", "age": "36"}', False, "at $.age"),
        ('{"name": "Ada", "age": 36, "city": "London"}', False, "'city' was unexpected"),
        ("def f(): return {'name': 'Ada'}", False, "valid JSON"),
    ],
)
def test_json_check(answer: str, passed: bool, hint: str) -> None:
    v = verdict({"type": "json", "schema": SCHEMA}, answer)
    assert v.passed is passed
    assert hint in v.feedback


def test_strict_json_refuses_surrounding_text() -> None:
    v = verdict({"type": "json", "strict": True}, 'Sure! {"a": 1}')
    assert not v.passed
    assert extract_json("```\n[1, 2]\n```", strict=True) == [1, 2]


def test_python_tests_pass_and_fail_with_the_error() -> None:
    spec = {"type": "python_tests", "tests": "assert add(2, 3) == 5"}
    good = verdict(spec, "Here:\n```python\ndef add(a, b):\n    return a + b\n```")
    bad = verdict(spec, "```python\ndef add(a, b):\n    return a - b\n```")
    assert good.passed and not bad.passed
    assert "AssertionError" in bad.feedback
    assert "runpy" not in bad.feedback  # the sandbox's own frames are trimmed


def test_python_tests_without_isolation_say_why_and_count_as_not_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from reflexa.evals import sandbox
    from reflexa.evals.checks import run_checks
    from reflexa.evals.isolation import Isolation

    monkeypatch.setattr(sandbox, "find_isolation", lambda: Isolation("none", "no bwrap found"))
    spec = {"type": "python_tests", "tests": "assert add(1, 2) == 3"}
    answer = "def add(a, b):\n    return a + b"
    (refused,) = asyncio.run(run_checks(parse_checks([spec]), answer, CTX))
    assert refused.error is not None and "no bwrap found" in refused.error
    assert "sandbox.allow_unconfined" in refused.error
    allowed = verdict(spec, answer, VerifyContext("p", allow_unconfined=True))
    assert allowed.passed and allowed.error is None


def test_python_tests_report_a_loop_as_a_timeout() -> None:
    spec = {"type": "python_tests", "tests": "f()", "timeout_s": 1}
    v = verdict(spec, "def f():\n    while True:\n        pass")
    assert not v.passed and "did not finish within 1 s" in v.feedback


def test_judge_verdicts_are_marked_judge() -> None:
    async def judge(prompt: str, answer: str, rubric: str) -> JudgeResult:
        return JudgeResult(passed=answer == "good", score=0.9, feedback="too short")

    ctx = VerifyContext(prompt="p", judge=judge)
    v = verdict({"type": "judge", "rubric": "be good"}, "bad", ctx)
    assert (v.passed, v.kind, v.feedback) == (False, "judge", "too short")
    assert verdict({"type": "judge"}, "good", ctx).passed


def test_without_task_checks_the_judge_and_the_intrinsic_checks_apply() -> None:
    kinds = [c.type for c in checks_for("Tell me a joke", "A joke.", [])]
    assert kinds == ["judge"]
    kinds = [c.type for c in checks_for("Give JSON for Ada", "```python\nx = (\n```", [])]
    assert kinds == ["judge", "json_parses", "python_compiles"]
    task = parse_checks([{"type": "exact", "expected": "x"}])
    assert checks_for("Give JSON", "y", task) == task


def test_intrinsic_checks() -> None:
    ctx = VerifyContext(prompt="Return JSON with a name")
    checks = checks_for(ctx.prompt, "name: Ada\n```python\ndef f(:\n```", [])[1:]
    verdicts = asyncio.run(run_checks(checks, "name: Ada\n```python\ndef f(:\n```", ctx))
    assert [(v.verifier, v.passed) for v in verdicts] == [
        ("json_parses", False),
        ("python_compiles", False),
    ]
    assert "line 1" in verdicts[1].feedback


def test_a_crashing_verifier_gives_an_error_verdict() -> None:
    async def broken(prompt: str, answer: str, rubric: str) -> JudgeResult:
        raise ConnectionError("judge model down")

    checks = parse_checks([{"type": "judge"}, {"type": "exact", "expected": "a"}])
    verdicts = asyncio.run(run_checks(checks, "a", VerifyContext("p", judge=broken)))
    assert verdicts[0].error == "ConnectionError: judge model down"
    assert verdicts[0].kind == "judge" and not verdicts[0].passed
    assert verdicts[1].passed and verdicts[1].error is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "nope"}, "checks.0: unknown check type 'nope'; known: exact, choice, numeric"),
        ({"type": "exact"}, "checks.0.exact.expected: Field required"),
        ({"type": "regex", "pattern": "("}, "invalid regular expression"),
        ({"type": "json", "schema": {"type": "nonsense"}}, "invalid JSON Schema"),
        ({"type": "numeric", "expected": 1, "tolerance": -1}, "tolerance"),
        ({"type": "exact", "expected": "a", "extra": 1}, "extra"),
    ],
)
def test_bad_specs_are_refused_clearly(spec: dict, message: str) -> None:
    with pytest.raises(CheckSpecError, match=message.replace(".", r"\.").replace("(", r"\(")):
        parse_checks([spec])


@pytest.mark.parametrize(
    "answer",
    [
        'Here you go: {"name": "Ada", "age": 36}',
        '{"name": "Ada", "age": 36} Hope that helps!',
        'Sure!\n```json\n{"name": "Ada", "age": 36}\n```\nAnything else?',
        'def f():\n    return {"name": "Ada", "age": 36}',
    ],
)
def test_a_schema_check_wants_the_json_alone(answer: str) -> None:
    schema = {"type": "object", "required": ["name", "age"]}
    v = verdict({"type": "json", "schema": schema}, answer)
    assert not v.passed
    assert "alone" in v.feedback
    assert verdict({"type": "json", "schema": schema, "strict": False}, answer).passed


def test_a_schema_check_takes_bare_or_fenced_json() -> None:
    schema = {"type": "object", "required": ["name"]}
    assert verdict({"type": "json", "schema": schema}, ' {"name": "Ada"} ').passed
    assert verdict({"type": "json", "schema": schema}, '```json\n{"name": "Ada"}\n```').passed


def test_a_pattern_that_backtracks_for_ever_is_stopped_and_not_a_failure() -> None:
    started = time.perf_counter()
    result = verdict({"type": "regex", "pattern": r"(a|aa)+$"}, "a" * 40 + "b")
    assert time.perf_counter() - started < 10
    assert result.error is not None and "took over" in result.error
    assert verdict({"type": "regex", "pattern": r"(a|aa)+$"}, "aaaa").passed  # the same, quick


def test_sandbox_memory_is_capped() -> None:
    with pytest.raises(CheckSpecError, match="memory_mb"):
        parse_checks([{"type": "python_tests", "tests": "assert True", "memory_mb": 10**6}])


def test_a_schema_pattern_that_backtracks_for_ever_is_stopped_and_reported() -> None:
    slow = "(a|a)+$"
    key = "a" * 40 + "!"
    for schema, answer in (
        ({"type": "string", "pattern": slow}, f'"{key}"'),
        ({"patternProperties": {slow: {}}}, f'{{"{key}": 1}}'),
        ({"additionalProperties": False, "patternProperties": {slow: {}}}, f'{{"{key}": 1}}'),
    ):
        started = time.monotonic()
        v = verdict({"type": "json", "schema": schema}, answer)
        assert time.monotonic() - started < 30  # unstopped: hours; loose for a loaded box
        assert v.error is not None and "took over 1 s" in v.error, v


def test_a_schema_that_could_run_patterns_unbounded_is_refused() -> None:
    schema = {"unevaluatedProperties": False, "patternProperties": {"^a": {}}}
    with pytest.raises(CheckSpecError, match="unevaluatedProperties with patternProperties"):
        parse_checks([{"type": "json", "schema": schema}])


@pytest.mark.parametrize(
    ("prompt", "expression"),
    [
        ("What is 34 + 41? Reply with only the number.", "34 + 41"),
        ("Compute (12 - 4) * 3.", "(12 - 4) * 3"),
        ("34+41 = ?", "34+41"),
        ("what is 5 \u00d7 6", "5 \u00d7 6"),
        ("What is 1,000 + 2?", "1,000 + 2"),
        ("What is the capital of France?", None),
        ("What is 2024?", None),  # a bare number: nothing to evaluate
        ("What is 10 / 0?", None),
        ("What is 3 + 4, and what is 5 + 6?", None),  # two: ambiguous
        ("Call 555-1234 tomorrow.", None),  # no cue that a value is asked for
        ("What is 2024-11-24? A holiday?", None),  # a date, not a subtraction
        ("What is 24/11/2026 in ISO form?", None),
        ("What is 2024 - 11?", "2024 - 11"),
    ],
)
def test_the_expression_a_prompt_asks_about(prompt: str, expression: str | None) -> None:
    from reflexa.evals.arithmetic import stated_expression

    assert stated_expression(prompt) == expression


@pytest.mark.parametrize(
    ("prompt", "answer", "passed"),
    [
        ("What is 7 / 2?", "3.5", True),
        ("What is 7 / 2?", "It is 3.5.", True),
        ("What is 1 / 3?", "0.333333", True),
        ("What is 1 / 3?", "0.3", False),
        ("What is 48 - 71?", "-23", True),
        ("What is 48 - 71?", "23", False),
        ("What is 34 + 41?", "seventy-five", False),
        ("What is 77 + 81?", "-1" + "0" * 511, False),  # overflows a float: was an error
        ("What is 77 + 81?", "1,58", False),
        ("What is 1000 + 58?", "1,058", True),
    ],
)
def test_the_arithmetic_tool_checks_the_answers_number(
    prompt: str, answer: str, passed: bool
) -> None:
    v = verdict({"type": "arithmetic"}, answer, VerifyContext(prompt))
    assert v.passed is passed and v.error is None


def test_choice_is_one_of_the_options_after_normalisation() -> None:
    check = parse_checks([{"type": "choice", "options": ["Yes", "No"]}])[0]
    ctx = VerifyContext("Is it raining? Yes or no.", None)
    assert asyncio.run(check.verify(" yes. ", ctx)).passed
    verdict = asyncio.run(check.verify("Maybe", ctx))
    assert (
        not verdict.passed and verdict.feedback == "The answer must be exactly one of: 'Yes', 'No'."
    )
    with pytest.raises(CheckSpecError, match="options"):
        parse_checks([{"type": "choice", "options": []}])


ADD_PROMPT = """Write a Python function add(a, b) that returns the sum.

>>> add(2, 3)
5
>>> add(-1, [1][0])
0
>>> __import__("os").system("touch /tmp/pwned")
0
>>> add(1, 1)
two
"""


def test_only_literal_calls_with_literal_results_are_examples_to_run() -> None:
    from reflexa.evals.examples import stated_examples

    assert stated_examples(ADD_PROMPT) == [("add(2, 3)", "5")]  # nothing else runs
    assert stated_examples("no examples here") == []


def test_the_prompts_own_examples_check_the_answers_code_without_a_label() -> None:
    """Applies with no task checks when the answer has code; a wrong function is caught,
    with feedback naming the example (the prompt shows it already)."""
    right = "```python\ndef add(a, b):\n    return a + b\n```"
    wrong = "```python\ndef add(a, b):\n    return a * b\n```"
    checks = checks_for(ADD_PROMPT, wrong, [], judge=False)
    assert [c.type for c in checks] == ["python_compiles", "examples"]
    ctx = VerifyContext(ADD_PROMPT)
    good = asyncio.run(run_checks(checks, right, ctx))
    bad = asyncio.run(run_checks(checks, wrong, ctx))
    assert all(v.passed for v in good)
    (failed,) = [v for v in bad if not v.passed]
    assert failed.verifier == "examples" and "add(2, 3) should be 5" in failed.feedback
    assert checks_for(ADD_PROMPT, "five", [], judge=False) == []  # no code: nothing to run
    tests = [{"type": "python_tests", "tests": "assert add(2, 3) == 5"}]
    assert [c.type for c in checks_for(ADD_PROMPT, right, parse_checks(tests))] == [
        "python_tests"
    ]  # the task's own tests decide
