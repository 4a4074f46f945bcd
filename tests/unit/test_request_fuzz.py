"""A fuzz of the checks a request may carry: malformed and hostile specs (catastrophic
regexes, in regex checks and in JSON Schema patterns, huge and non-finite limits, unknown
types, code checks) against adversarial answers. Every request ends, well inside a bound,
with a status below 500."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.unit.test_api import app_client

TOKEN = "s3cret"
SLOW = "(a|a)+$"  # on "aaaa…!" it backtracks for ever, in `re` and in `regex` alike
ANSWERS = [
    "a" * 40 + "!",
    "4",
    '{"a": "' + "a" * 40 + '!"}',
    "",
    "```python\nwhile True: pass\n```",
]
BOUND_S = 15  # the longest any one request may take (checks run 1 s regexes, 2 s sandboxes)

patterns = st.sampled_from([SLOW, "(a+)+$", "^(?:a|aa)+$", "[", "(?P<a>", "^4$", ".*" * 40])
numbers = st.one_of(st.integers(-(10**30), 10**30), st.floats(allow_nan=True, allow_infinity=True))
regex_checks = st.fixed_dictionaries(
    {"type": st.just("regex"), "pattern": patterns},
    optional={"full": st.booleans(), "must_match": st.booleans(), "ignore_case": st.booleans()},
)
schemas = st.one_of(
    st.fixed_dictionaries({"type": st.just("string"), "pattern": patterns}),
    st.fixed_dictionaries(
        {"type": st.just("object"), "patternProperties": st.dictionaries(patterns, st.just({}))}
    ),
    st.fixed_dictionaries(
        {"type": st.just("object"), "propertyNames": st.fixed_dictionaries({"pattern": patterns})}
    ),
    st.just({"type": "nonsense"}),
)
json_checks = st.fixed_dictionaries(
    {"type": st.just("json")}, optional={"schema": schemas, "expected": st.just({"a": 1})}
)
numeric_checks = st.fixed_dictionaries(
    {"type": st.just("numeric")},
    optional={"expected": numbers, "tolerance": numbers, "strict": st.booleans()},
)
code_checks = st.fixed_dictionaries(
    {
        "type": st.just("python_tests"),
        "tests": st.sampled_from(["assert True", "while True: pass", "import os; os.fork()"]),
    },
    optional={
        "timeout_s": st.sampled_from([0.5, 2, -1, 1e308, float("inf")]),
        "memory_mb": st.sampled_from([64, 256, 10**9, -5]),
    },
)
odd_checks = st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["exact", "judge", "nope", 7, None])}),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.text(max_size=10),
)
checks = st.lists(
    st.one_of(regex_checks, json_checks, numeric_checks, code_checks, odd_checks), max_size=4
)


@pytest.mark.parametrize("allow_code", [False, True])
def test_fuzzed_request_checks_never_get_a_5xx_or_hang(
    monkeypatch: pytest.MonkeyPatch, allow_code: bool
) -> None:
    monkeypatch.setenv("REFLEXA_SERVE__API_TOKEN", TOKEN)
    monkeypatch.setenv("REFLEXA_SERVE__ALLOW_REQUEST_CODE", str(allow_code).lower())
    monkeypatch.setenv("REFLEXA_REFLECT__MAX_REPAIRS", "0")
    seen: list[tuple[int, float, Any]] = []
    current = {"answer": ""}  # what the scripted model says to this example's request
    with app_client([lambda: current["answer"]] * 1000) as api:

        @settings(max_examples=60, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(specs=checks, answer=st.sampled_from(ANSWERS))
        @example([{"type": "regex", "pattern": SLOW}], ANSWERS[0])
        @example(
            [{"type": "json", "schema": {"type": "string", "pattern": SLOW}}], f'"{ANSWERS[0]}"'
        )
        @example([{"type": "json", "schema": {"patternProperties": {SLOW: {}}}}], ANSWERS[3])
        @example(
            [
                {
                    "type": "json",
                    "schema": {"additionalProperties": False, "patternProperties": {SLOW: {}}},
                }
            ],
            ANSWERS[3],
        )
        def one(specs: list[Any], answer: str) -> None:
            current["answer"] = answer
            started = time.monotonic()
            body = {"messages": [{"role": "user", "content": "Say a."}],
                    "reflexa": {"checks": specs}}  # fmt: skip
            reply = api.post(
                "/v1/chat/completions", content=json.dumps(body),  # NaN, Infinity: as Python sends
                headers={"Authorization": f"Bearer {TOKEN}", "content-type": "application/json"},
            )  # fmt: skip
            seen.append((reply.status_code, time.monotonic() - started, specs))
            assert reply.status_code < 500, (specs, answer, reply.text)
            assert time.monotonic() - started < BOUND_S, (specs, answer)

        one()
    statuses = {status for status, _, _ in seen}
    assert 200 in statuses and statuses & {400, 422}  # both kinds of request were made
