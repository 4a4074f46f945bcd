"""Checks in Python (evals/plugins.py): the built-ins' contract, the one rule, clear refusals."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from reflexa.evals import CheckSpecError, VerifyContext, parse_checks, run_checks
from reflexa.evals.checks import checks_values
from reflexa.evals.suite import SuiteError, load_suite
from reflexa.evals.verdict import outcome
from reflexa.graphs.repair import route

P = "tests.check_plugins"


def verdicts(specs: list[dict[str, Any]], answer: str) -> list[Any]:
    return asyncio.run(run_checks(parse_checks(specs), answer, VerifyContext("Q?")))


@pytest.mark.parametrize(
    ("spec", "answer", "passed", "feedback"),
    [
        ({"type": f"{P}:even", "at_least": 10}, "12", True, "Give an even number of at least 10."),
        ({"type": f"{P}:even", "at_least": 10}, "8", False, "Give an even number of at least 10."),
        ({"type": f"{P}:even"}, "eight", False, "Reply with only a whole number."),
        ({"type": f"{P}:shouty"}, "HELLO", True, "Use capitals."),
        ({"type": f"{P}:Mentions", "words": ["a", "b"]}, "a and b", True, ""),
        ({"type": f"{P}:Mentions", "words": ["a", "z"]}, "a and b", False, ""),
    ],
)  # fmt: skip
def test_a_plugin_gives_verdicts_under_its_own_name(
    spec: dict[str, Any], answer: str, passed: bool, feedback: str
) -> None:
    [v] = verdicts([spec], answer)
    assert (v.verifier, v.passed, v.feedback, v.error) == (spec["type"], passed, feedback, None)


def test_a_plugin_that_raises_or_returns_junk_never_passes() -> None:
    crashed, junk = verdicts([{"type": f"{P}:crashes"}, {"type": f"{P}:rambles"}], "42")
    assert crashed.error == "RuntimeError: the database is down" and not crashed.passed
    assert junk.error == f"check plugin '{P}:rambles' returned 'looks fine to me', not a verdict"
    assert outcome([crashed]) == outcome([junk]) == "failed"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": f"{P}:unmarked"}, f"check plugin '{P}:unmarked' ({P}:unmarked) is not marked "
                                    "with @reflexa.evals.check"),
        ({"type": "no_such_pkg.checks:x"}, "failed to load: ModuleNotFoundError: No module named "
                                           "'no_such_pkg'"),
        ({"type": f"{P}:missing"}, "failed to load: AttributeError"),
        ({"type": f"{P}:Mentions"}, f"check plugin '{P}:Mentions': TypeError"),
        ({"type": "sql_columns"}, "unknown check type 'sql_columns'; known: exact"),
    ],
)  # fmt: skip
def test_a_plugin_that_cannot_be_used_is_refused_in_one_line(spec: dict, message: str) -> None:
    with pytest.raises(CheckSpecError) as e:
        parse_checks([spec])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_what_a_plugin_decides_steers_routing_and_admission() -> None:
    value, form = [{"type": f"{P}:even"}], [{"type": f"{P}:shouty"}]
    failed = [{"verifier": f"{P}:even", "passed": False, "error": None}]
    assert route(failed, value, tried=[], samples=8)[0] == "sample"  # the check chooses
    assert "can check each of 8" in route(failed, value, tried=[], samples=8)[1]
    shouted = [{"verifier": f"{P}:shouty", "passed": False, "error": None}]
    assert "chosen by the checks" in route(shouted, form, tried=[], samples=8)[1]
    assert checks_values(parse_checks(value)) and not checks_values(parse_checks(form))


def test_a_suite_names_a_plugin_and_a_broken_one_is_a_suite_error(tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text(
        f'{{"id": "a", "prompt": "An even number?", "checks": [{{"type": "{P}:even"}}]}}\n'
    )
    [item] = load_suite(good).items
    assert item.check_specs() == [{"type": f"{P}:even"}]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(f'{{"id": "a", "prompt": "?", "checks": [{{"type": "{P}:unmarked"}}]}}\n')
    with pytest.raises(SuiteError, match=r"bad.jsonl:1: checks.0: check plugin .* not marked"):
        load_suite(bad)
