from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from reflexa.agent.app.agent import Agent, EpisodeRequest
from reflexa.agent.app.eval_run import EvalOptions, run_eval
from reflexa.agent.errors import ReflexaError
from reflexa.evals.builtin import BUILTIN
from reflexa.evals.builtin.capabilities import KEYWORDS
from reflexa.evals.metrics import paired_gain, percentile, summarize, wilson
from reflexa.evals.runner import ItemOutcome
from reflexa.evals.suite import Suite, SuiteError, SuiteItem, load_suite, resolve_suite
from tests.unit.test_episodes import with_agent

GOOD_YAML = """\
name: tiny
description: a worked example
items:
  - id: sum
    prompt: "What is 2 + 2? Reply with only the number."
    checks: [{type: numeric, expected: 4, strict: true}]
    tags: [add]
    split: train
  - id: chat
    messages:
      - {role: user, content: "My name is Ada."}
      - {role: assistant, content: "Hello Ada."}
      - {role: user, content: "What is my name?"}
    scoring: [{type: regex, pattern: Ada}]
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_suite_with_prompts_and_messages(tmp_path: Path) -> None:
    suite = load_suite(write(tmp_path, "tiny.yaml", GOOD_YAML))
    assert (suite.name, suite.description, suite.splits()) == ("tiny", "a worked example",
                                                              {"train": 1, "test": 1})  # fmt: skip
    chat = suite.items[1]
    assert chat.user_prompt == "What is my name?"
    assert chat.history == [{"role": "user", "content": "My name is Ada."},
                            {"role": "assistant", "content": "Hello Ada."}]  # fmt: skip
    # An old file: the expected value now only scores; its form stays visible.
    assert suite.items[0].check_specs() == [{"type": "numeric", "tolerance": 0.0, "strict": True}]
    assert suite.items[0].scoring_specs()[0]["expected"] == 4
    assert suite.allow_gold and "1 item(s) carry expected values" in (suite.note or "")


def test_scoring_checks_and_allow_gold(tmp_path: Path) -> None:
    text = (
        "allow_gold: true\nitems:\n  - id: a\n    prompt: '2 + 2?'\n    split: train\n"
        "    checks: [{type: numeric, strict: true}]\n"
        "    scoring: [{type: numeric, expected: 4}]\n"
    )
    suite = load_suite(write(tmp_path, "new.yaml", text))
    assert suite.allow_gold and suite.note is None
    assert suite.items[0].scoring_specs()[0]["expected"] == 4
    assert (suite.gate_split, suite.has_test_split) == (None, False)


def test_jsonl_suite(tmp_path: Path) -> None:
    rows = [{"id": "a", "prompt": "hi", "checks": [{"type": "exact", "expected": "hello"}]},
            {"id": "b", "prompt": "bye", "split": "heldout"}]  # fmt: skip
    path = write(tmp_path, "s.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    suite = load_suite(path)
    assert [i.id for i in suite.items] == ["a", "b"]
    assert suite.select(split="heldout")[0].id == "b"


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.yaml", "items:\n  - id: a\n    prompt: [unclosed\n", "bad.yaml:3: not valid YAML"),
        ("bad.yaml", "- id: a\n  prompt: x\n- id: a\n  prompt: y\n",
         "bad.yaml:3: duplicate id 'a' (first at line 1)"),
        ("bad.yaml", "- id: a\n  prompt: x\n- id: b\n  prompt: y\n  checks: [{type: vibes}]\n",
         "bad.yaml:3: checks.0: unknown check type"),
        ("bad.yaml", "- id: a\n", "bad.yaml:1: give exactly one of `prompt` and `messages`"),
        ("bad.yaml", "- id: a\n  prompt: x\n  colour: red\n", "bad.yaml:1: colour: Extra inputs"),
        ("bad.yaml", "name: x\nitems: 3\n", "bad.yaml:1: a suite is a list of items"),
        ("bad.yaml", "name: x\n", "bad.yaml:1: a suite mapping needs an `items` list"),
        ("bad.yaml", "", "bad.yaml:1: a suite is a list"),
        ("bad.jsonl", '{"id": "a", "prompt": "x"}\n{"id": oops}\n', "bad.jsonl:2: not valid JSON"),
        ("bad.jsonl", '{"id": "a", "prompt": "x", "checks": [{"type": "regex", "pattern": "("}]}\n',
         "bad.jsonl:1: checks.0.regex.pattern: invalid regular expression"),
        ("bad.txt", "whatever", "bad.txt: a suite is a .yaml, .yml or .jsonl file"),
        ("bad.yaml",
         "- id: a\n  prompt: x\n  split: train\n  scoring: [{type: exact, expected: y}]\n",
         "bad.yaml:1: item 'a' is on the train split and has `scoring` checks, but the suite "
         "does not allow gold"),
        ("bad.yaml", "- id: a\n  prompt: x\n- id: b\n  prompt: y\n  scoring: []\n",
         "bad.yaml:3: `scoring` is empty"),
        ("bad.yaml", "- id: a\n  prompt: x\n  checks: [{type: exact, expected: y}]\n"
         "  scoring: [{type: exact, expected: y}]\n",
         "bad.yaml:1: `checks` carry expected values, which the model would see"),
        ("bad.yaml", "allow_gold: maybe\nitems: []\n", "bad.yaml:1: `allow_gold` is true or false"),
        # Visible checks that name the one right answer: the move is to `scoring`.
        ("bad.yaml", "- id: a\n  prompt: x\n- id: sky\n  prompt: Sky colour?\n"
         "  checks: [{type: regex, pattern: '^blue\\.?$', ignore_case: true}]\n",
         "bad.yaml:3: item 'sky': checks.0: the regex check states the answer (its pattern "
         "'^blue\\\\.?$' matches only the text 'blue'), which the model would see; put it "
         "under `scoring`"),
        ("bad.jsonl",
         '{"id": "a", "prompt": "x", "checks": [{"type": "regex", "pattern": "Tokyo"}]}\n',
         "bad.jsonl:1: item 'a': checks.0: the regex check states the answer"),
        ("bad.yaml", "- id: a\n  prompt: x\n  checks: [{type: json, schema: {type: object, "
         "properties: {city: {const: Paris}}}}]\n",
         "bad.yaml:1: item 'a': checks.0: the json check states the answer (schema.properties."
         "city has const 'Paris')"),
        ("bad.yaml", "- id: a\n  prompt: x\n  checks: [{type: json, schema: {enum: [42]}}]\n",
         "bad.yaml:1: item 'a': checks.0: the json check states the answer (schema has a "
         "single-value enum [42])"),
        ("bad.yaml", "- id: a\n  prompt: x\n  checks: [{type: choice, options: [OK, 'ok.']}]\n",
         "bad.yaml:1: item 'a': checks.0: the choice check states the answer (its one option"),
    ],
)  # fmt: skip
def test_bad_suite_files_name_the_file_and_line(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(SuiteError) as e:
        load_suite(path)
    assert str(e.value).startswith(f"{tmp_path}/{message}"), str(e.value)


@pytest.mark.parametrize(
    "check",
    [
        {"type": "regex", "pattern": "^(yes|no)$"},  # a choice of answers: a form
        {"type": "regex", "pattern": "^[0-9]+$"},
        {"type": "regex", "pattern": "^[0-4]$"},
        {"type": "regex", "pattern": "^\\d{4}-\\d{2}-\\d{2}$"},
        {"type": "regex", "pattern": "(?i)as an ai|i cannot", "must_match": False},
        {"type": "regex", "pattern": "Tokyo", "must_match": False},  # what it must not say
        {  # a property named const; an enum of several values
            "type": "json",
            "schema": {
                "type": "object",
                "properties": {"const": {"type": "string"}, "unit": {"enum": ["kg", "g"]}},
            },
        },
        {"type": "choice", "options": ["A", "B", "C", "D"]},
    ],
)
def test_checks_of_form_stay_visible(check: dict) -> None:
    from reflexa.evals import parse_checks
    from reflexa.evals.leaks import stated_answers

    assert stated_answers(parse_checks([check])) == []


def test_no_built_in_suite_shows_the_answer() -> None:
    from reflexa.evals.leaks import stated_answers

    for name, make in BUILTIN.items():
        assert [i.id for i in make().items if stated_answers(i.checks)] == [], name


def test_unknown_suite_name() -> None:
    with pytest.raises(SuiteError, match=r"no-such: no such suite \(built-in: arithmetic, capab"):
        resolve_suite("no-such")


@pytest.mark.parametrize("name", ["arithmetic", "sums", "json-extract"])
def test_seeded_suites_are_deterministic_with_disjoint_splits(name: str) -> None:
    a, b = BUILTIN[name](), BUILTIN[name]()
    assert [i.model_dump() for i in a.items] == [i.model_dump() for i in b.items]
    assert a.splits() == {"train": 200, "dev": 100, "test": 100}
    assert (a.gate_split, a.has_test_split, a.allow_gold) == ("dev", True, True)
    train, dev, test = (
        {i.prompt for i in a.items if i.split == s} for s in ("train", "dev", "test")
    )
    assert not train & dev and not train & test and not dev & test
    assert len({i.id for i in a.items}) == len(a.items)
    for item in a.items:  # the loop sees form only; the right answer only scores
        assert "expected" not in json.dumps(item.check_specs())
        assert item.scoring_specs()[0]["expected"] is not None


def test_builtin_checks_accept_the_right_answer() -> None:
    from reflexa.evals import VerifyContext, run_checks

    arithmetic = BUILTIN["arithmetic"]().items[0]
    a, op, b = arithmetic.user_prompt.split("? ")[0].removeprefix("What is ").split()
    right = str(eval(f"{a}{op}{b}"))  # the suite's own question, computed independently
    wrong = str(int(right) + 1)
    for checks, answer, passed in [
        (arithmetic.checks, right, True), (arithmetic.scoring, right, True),
        (arithmetic.checks, wrong, True), (arithmetic.scoring, wrong, False),  # form only
        (arithmetic.checks, f"{a} {op} {b} = {right}", False),
    ]:  # fmt: skip
        (verdict,) = asyncio.run(run_checks(checks, answer, VerifyContext("p")))
        assert verdict.passed is passed, (checks, answer)
    person = BUILTIN["json-extract"]().items[0]
    expected = person.scoring_specs()[0]["expected"]
    for checks in (person.checks, person.scoring):
        (verdict,) = asyncio.run(run_checks(checks, json.dumps(expected), VerifyContext("p")))
        assert verdict.passed


def test_wilson_interval_known_values() -> None:
    lo, hi = wilson(7, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.3968, 0.8922)
    assert wilson(0, 10)[0] == 0.0 and round(wilson(0, 10)[1], 4) == 0.2775
    assert wilson(0, 0) == (0.0, 1.0)


def test_paired_gain_and_percentiles() -> None:
    assert paired_gain(0, 0, 10) == {"gain": 0.0, "ci95": [0.0, 0.0]}
    gain = paired_gain(3, 1, 20)
    assert gain["gain"] == pytest.approx(0.1)
    assert gain["ci95"][0] < 0.1 < gain["ci95"][1]
    assert percentile([1, 2, 3, 4], 0.5) == 2.5
    assert percentile([5.0], 0.95) == 5.0


def _o(first: bool, final: bool, flip: bool = False, repairs: int = 0) -> ItemOutcome:
    return ItemOutcome("i", "s", [], "e", "x", first, final, flip, repairs, 10, 1.0)


def test_summary_on_known_outcomes() -> None:
    outcomes = [_o(True, True), _o(False, True, repairs=1), _o(False, False, repairs=2),
                _o(True, False, flip=True, repairs=1)]  # fmt: skip
    m = summarize(outcomes)
    assert (m["first_attempt_pass"]["k"], m["final_pass"]["k"]) == (2, 2)
    assert m["repair_gain"]["gain"] == 0.0  # one fixed, one broken
    assert m["harm_rate"]["k"] == 1 and m["harm_rate"]["n"] == 2
    assert m["mean_repairs"] == 1.0 and m["tokens"] == 40


SUITE = Suite(
    "sums",
    [
        SuiteItem.model_validate(
            {
                "id": f"q{n}",
                "prompt": f"What is {n} + {n}?",
                "tags": ["even" if n % 2 == 0 else "odd"],
                "checks": [{"type": "numeric", "strict": True}],  # the tool computes n + n
                "scoring": [{"type": "numeric", "expected": 2 * n}],
            }
        )
        for n in range(1, 5)
    ],
    "test",
)


def test_runner_end_to_end_then_resume() -> None:
    async def body(agent: Agent) -> tuple[dict, dict]:
        options = EvalOptions(reflect=False, concurrency=2)
        run_id, _ = agent.store.open_eval_run(SUITE.name, SUITE.source, options.config())
        # an earlier, interrupted run answered q1 before it stopped
        await agent.run(EpisodeRequest("What is 1 + 1?", SUITE.items[0].check_specs(), suite="sums",
                                       split="test", item_id="q1", eval_run_id=run_id))  # fmt: skip
        seen: list[tuple[int, int]] = []
        resumed = await run_eval(agent, SUITE, options, lambda d, t: seen.append((d, t)))
        fresh = await run_eval(agent, SUITE, options)
        return resumed | {"progress": seen}, fresh

    # q1 answered before the interruption; then q2..q4; then a fresh run of all four.
    script = ["2", "4", "7", "8", "2", "4", "6", "8"]
    resumed, fresh = asyncio.run(with_agent(script, body))
    assert resumed["resumed"] is True
    assert resumed["progress"][0] == (1, 4) and resumed["progress"][-1] == (4, 4)
    overall = resumed["metrics"]["overall"]
    assert (overall["items"], overall["first_attempt_pass"]["k"]) == (4, 3)  # q3 said 7
    assert resumed["metrics"]["by_tag"]["odd"]["first_attempt_pass"]["k"] == 1
    assert (fresh["resumed"], fresh["metrics"]["overall"]["final_pass"]["k"]) == (False, 4)
    assert fresh["run_id"] != resumed["run_id"]


def test_a_gate_s_runs_are_its_cycle_s_own_and_a_taken_up_cycle_reuses_its_finished_ones() -> None:
    """A gate's run is kept under its cycle: run again for the same cycle (taken up after a
    stop), a finished run is reused without asking the model anything; another cycle's,
    or an ordinary run, starts afresh (its memory and adapters are another night's)."""

    async def body(agent: Agent) -> list[dict]:
        night = EvalOptions(reflect=False, concurrency=1, cycle="c1")
        first = await run_eval(agent, SUITE, night)
        again = await run_eval(agent, SUITE, night)  # the script has no answers for a rerun
        other = await run_eval(agent, SUITE, EvalOptions(reflect=False, concurrency=1, cycle="c2"))
        return [first, again, other]

    first, again, other = asyncio.run(with_agent(["2", "4", "7", "8"] * 2, body))
    assert (again["run_id"], again["resumed"]) == (first["run_id"], True)
    assert again["metrics"]["overall"] == first["metrics"]["overall"]
    assert other["run_id"] != first["run_id"] and other["resumed"] is False
    assert other["config"]["cycle"] == "c2"
    assert "cycle" not in EvalOptions().config()  # ordinary runs resume as before


def test_a_run_stops_when_the_server_goes_down_and_resumes_without_loss_or_repeats() -> None:
    import httpx
    import openai

    down = openai.APIConnectionError(request=httpx.Request("POST", "http://127.0.0.1:9/v1"))

    async def body(agent: Agent) -> tuple[str, dict]:
        options = EvalOptions(reflect=False, concurrency=1)
        with pytest.raises(ReflexaError, match=r"stopped answering.*1 of 4 items are recorded"):
            await run_eval(agent, SUITE, options)
        return "stopped", await run_eval(agent, SUITE, options)

    # q1 answered; q2 meets a dead server; after the restart the run resumes: q2 again, then
    # q3 and q4. The script would run out on any repeat.
    script = ["2", down, "4", "6", "8"]
    _, resumed = asyncio.run(with_agent(script, body))
    assert resumed["resumed"] is True
    assert [i["item_id"] for i in resumed["items"]] == ["q1", "q2", "q3", "q4"]
    assert resumed["metrics"]["overall"]["first_attempt_pass"]["k"] == 4
    assert resumed["metrics"]["overall"]["errors"] == 0


def test_the_harm_ledger_counts_what_reflection_broke_and_fixed() -> None:
    visible = [{"type": "regex", "pattern": "^\\d+$", "description": "be digits only"}]
    items = [
        SuiteItem.model_validate({"id": f"q{n}", "prompt": f"{n} + {n}?", "checks": visible,
                                  "scoring": [{"type": "numeric", "expected": 2 * n}]})
        for n in (1, 2)
    ]  # fmt: skip
    suite = Suite("harm", items, "test")
    diagnosis = '{"cause": "c", "fix": "f"}'

    async def body(agent: Agent) -> dict:
        return await run_eval(agent, suite, EvalOptions(max_repairs=1, concurrency=1))

    # q1: "2." is right but not digits only; the repair makes it wrong. q2: "5." → "4".
    run = asyncio.run(with_agent(["2.", diagnosis, "3", "5.", diagnosis, "4"], body))
    overall = run["metrics"]["overall"]
    assert overall["harm"] == {"scored": 2, "right_to_wrong": 1, "wrong_to_right": 1, "net": 0.0}
    assert (overall["first_attempt_pass"]["k"], overall["checks_pass"]["k"]) == (1, 0)
    assert "no untouched test split" in run["note"]
    from reflexa.evals.report import markdown

    assert "1 right→wrong, 1 wrong→right of 2 scored items" in markdown(run)
    feedback = run["metrics"]["by_strategy"]["feedback"]
    assert {k: feedback[k] for k in ("repairs", "passed", "fixed", "broke")} == {
        "repairs": 2,
        "passed": 2,
        "fixed": 1,
        "broke": 1,
    }
    assert feedback["tokens"] == 2 * (10 + 1) and feedback["tokens_per_fix"] == 22
    assert "| feedback | 2 | 2 | 1 | 1 | 0 | 22 | 22 |" in markdown(run)


def test_mcnemar_exact_p_values() -> None:
    from reflexa.evals.compare import mcnemar_p

    assert mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(5, 5) == 1.0
    assert mcnemar_p(0, 6) == pytest.approx(2 / 64)  # 2 * (1/2)^6
    assert mcnemar_p(1, 9) == pytest.approx(2 * 11 / 1024)
    assert mcnemar_p(9, 1) == mcnemar_p(1, 9)


def test_compare_two_recorded_runs() -> None:
    from reflexa.agent.app.eval_run import compare_eval_runs
    from reflexa.agent.errors import ReflexaError

    async def body(agent: Agent) -> tuple[dict, dict, Agent]:
        a = await run_eval(agent, SUITE, EvalOptions(reflect=False))
        b = await run_eval(agent, SUITE, EvalOptions(reflect=False, max_repairs=1))
        return a, b, agent

    # run A: q1, q2 right; run B: all four right
    a, b, agent = asyncio.run(with_agent(["2", "4", "0", "0", "2", "4", "6", "8"], body))
    doc = compare_eval_runs(agent.store, a["run_id"], b["run_id"])
    first = doc["first_attempt"]
    assert (doc["items"], first["a"], first["b"]) == (4, 0.5, 1.0)
    assert (first["only_a_passed"], first["only_b_passed"]) == (0, 2)
    assert first["p_value"] == 0.5
    with pytest.raises(ReflexaError, match="no eval run 'nope'"):
        compare_eval_runs(agent.store, a["run_id"], "nope")


def _verdicts(item: SuiteItem, answer: str) -> list:
    from reflexa.evals import VerifyContext, run_checks

    checks = [*item.checks, *item.scoring]
    return asyncio.run(run_checks(checks, answer, VerifyContext(item.user_prompt)))


def test_humaneval_canonical_solutions_pass_and_empty_bodies_fail() -> None:
    from reflexa.evals import VerifyContext, run_checks
    from reflexa.evals.builtin.humaneval import problems

    suite, solutions = BUILTIN["humaneval"](), problems()
    assert len(suite.items) == 164

    async def all_of(answers: list[str]) -> list[bool]:
        gate = asyncio.Semaphore(8)

        async def one(item: SuiteItem, answer: str) -> bool:
            async with gate:
                (v,) = await run_checks(item.checks, answer, VerifyContext(item.user_prompt))
                return v.passed

        return list(
            await asyncio.gather(*(one(i, a) for i, a in zip(suite.items, answers, strict=True)))
        )

    canonical = [f"```python\n{p['prompt']}{p['canonical_solution']}```" for p in solutions]
    empty = [f"```python\n{p['prompt']}    pass\n```" for p in solutions]
    assert sum(asyncio.run(all_of(canonical))) == 164
    assert sum(asyncio.run(all_of(empty))) == 0


REFERENCE = {
    "say-ok": "OK", "capital-japan": "Tokyo", "capital-france": "Paris.", "colour-sky": "Blue",
    "three-lines": "apple\nbanana\ncherry", "uppercase": "HELLO", "reverse-word": "god",
    "count-list": "[1, 2, 3]", "json-object": '{"colour": "red"}', "small-sum": "5",
    "python-is-even": "```python\ndef is_even(n):\n    return n % 2 == 0\n```",
    "python-reverse": "```python\ndef reverse(s):\n    return s[::-1]\n```",
    "no-apology": "Keep the same bedtime every night.",
}  # fmt: skip


INSTRUCTED = {  # an answer each instruction passes, on topic k
    "lowercase": lambda k: "the sea is wide.", "uppercase": lambda k: "COLD AND WET",
    "at-most-words": lambda k: "Quiet and blue.", "no-commas": lambda k: "It rains. It pours.",
    "keyword": lambda k: f"The word here is {KEYWORDS[k]}.",
    "bullets": lambda k: "\n".join(["- a fact"] * (2 + k % 3)),
    "numbered": lambda k: "\n".join(f"{i}. an idea" for i in range(1, 4 + k % 2)),
    "json-shape": lambda k: '{"name": "rain", "fact": "it is wet"}',
    "question": lambda k: "Why does it rain?", "quoted": lambda k: '"The moon is bright."',
    "starts-with": lambda k: "Today the trains are late.",
}  # fmt: skip
REFUSAL = "I cannot help with that, sorry, because it is not something that I am able to do."


def test_every_capability_item_is_verifiable_and_can_be_passed_and_failed() -> None:
    """The frozen suite: over 100 items, none judged by a model, each passed by a right
    answer and failed by a refusal (its visible checks, or its scoring where it has one)."""
    suite = BUILTIN["capabilities"]()
    assert len(suite.items) >= 100
    assert all(c.type != "judge" for i in suite.items for c in [*i.checks, *i.scoring])
    for item in suite.items:
        kind, _, k = item.id.rpartition("-")
        right = REFERENCE[item.id] if item.id in REFERENCE else INSTRUCTED[kind](int(k))
        assert all(v.passed for v in _verdicts(item, right)), item.id
        assert not all(v.passed for v in _verdicts(item, REFUSAL)), item.id


def test_report_json_html_markdown(tmp_path: Path) -> None:
    import base64

    from reflexa.evals.report import cumulative_pass, write_report

    async def body(agent: Agent) -> dict:
        return await run_eval(agent, SUITE, EvalOptions(max_repairs=1, concurrency=1))

    # q1 right; q2 wrong then repaired; q3, q4 right
    run = asyncio.run(with_agent(["2", "5", '{"cause": "c", "fix": "f"}', "4", "6", "8"], body))
    assert cumulative_pass(run["items"], 1) == [0.75, 1.0]
    paths = write_report(run, tmp_path / "r")
    assert json.loads(paths["json"].read_text())["run_id"] == run["run_id"]
    md = paths["md"].read_text()
    assert "| first-attempt pass | 75.0% (95% CI" in md and "| final pass | 100.0%" in md
    page = paths["html"].read_text()
    images = page.split('src="data:image/png;base64,')[1:]
    assert len(images) == 3  # by attempt, by tag, latency
    assert all(base64.b64decode(i.split('"')[0])[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    assert "<script" not in page  # self-contained and static


def test_a_suite_that_shows_the_answer_is_refused_before_anything_runs(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from reflexa.agent.cli import cli
    from reflexa.agent.settings import load_settings
    from reflexa.agent.store import Store

    path = write(tmp_path, "capitals.yaml", "- id: japan\n  prompt: Capital of Japan?\n"
                 "  checks: [{type: regex, pattern: '^Tokyo$'}]\n")  # fmt: skip
    result = CliRunner().invoke(cli, ["eval", "run", str(path), "--no-reflect"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"{path}:1: item 'japan': checks.0: the regex check states the answer" in result.output
    assert "put it under `scoring`" in result.output
    with Store.open(load_settings().database) as store:  # nothing recorded
        assert store.failures() == [] and store.eval_run_source("capitals") is None


def test_another_night_s_answers_to_the_same_request_are_reused_until_recall_changes() -> None:
    """With `reuse` (the gate's frozen suite), an item another cycle's run asked with the
    same model, options and prompt, and that recall would show the same memories now, is
    copied into this run, not asked again; once a new memory would be recalled into its
    prompt, it is asked again. The earlier run keeps its own episodes."""
    from reflexa.agent.app.checkpointer import open_checkpointer
    from reflexa.agent.app.memory import Memory
    from reflexa.agent.settings import load_settings
    from reflexa.agent.store import Store
    from reflexa.graphs import ReflectionContext, build_reflection_graph
    from tests.fakes import ScriptedChatModel

    settings = load_settings()
    store = Store.open(settings.database)
    memory = Memory(store, settings.memory, lambda s: len(s) // 3 + 1)

    async def night(cycle: str, script: list[str]) -> dict:
        llm = ScriptedChatModel(script=script)  # runs out (an error) if asked more
        context = ReflectionContext(llm=llm, model_name="fake", recall=memory.recall,
                                    strategies=("feedback",))  # fmt: skip
        async with open_checkpointer(settings) as saver:
            agent = Agent(build_reflection_graph(saver), store, context, settings.reflect, memory)
            options = EvalOptions(reflect=False, concurrency=1, cycle=cycle)
            return await run_eval(agent, SUITE, options, reuse=True)

    first = asyncio.run(night("c1", ["2", "4", "7", "8"]))
    again = asyncio.run(night("c2", []))  # nothing may be asked
    assert [i["first_passed"] for i in again["items"]] == [True, True, False, True]
    copies = {i["episode_id"] for i in again["items"]}
    assert not copies & {i["episode_id"] for i in first["items"]} and len(copies) == 4
    assert len(store.run_episodes(first["run_id"])) == 4
    store.add_correction(
        None, prompt="What is 30 + 30?", chosen="60", source="user", verified=True
    )  # fmt: skip  (now recalled for every item)
    after = asyncio.run(night("c3", ["2", "4", "6", "8"]))
    assert [i["first_passed"] for i in after["items"]] == [True, True, True, True]
    assert all(i["recalled"] for i in after["items"])
