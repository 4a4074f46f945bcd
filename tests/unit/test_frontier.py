"""What a night's dataset learns from: checks of form admit rows only where measured
precise, and the frontier (answers the model did not give by itself) weighs more."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reflexa.agent.store import Store
from reflexa.agent.store.db import sqlite_url
from reflexa.trainers.admission import wilson_lower
from reflexa.trainers.config import TrainConfig
from reflexa.trainers.dataset import build_dataset, compile_examples, to_records
from reflexa.trainers.train import same_steps

from .test_dataset import attempt, episode, repaired_episode

SCHEMA = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}
FORM = [{"type": "json", "schema": SCHEMA}]  # what the loop sees: the shape, no values
GOLD = [{"type": "json", "expected": {"name": "Ada"}}]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store.open(sqlite_url(tmp_path / "db.sqlite")) as s:
        yield s  # type: ignore[misc]


def form_rows(store: Store, n: int = 3) -> None:
    """Training first answers the schema passed: rows justified by form alone."""
    for k in range(n):
        episode(store, f"Name in: person {k} is Ada.", [attempt('{"name": "Ada"}', True)],
                checks=FORM, scoring=GOLD)  # fmt: skip


def dev_answers(store: Store, right: int, wrong: int) -> None:
    """Scored dev answers the schema passed, `right` of them right by scoring."""
    for k in range(right + wrong):
        ok = k < right
        episode(store, f"Name in: dev person {k}.", [attempt("{}", True, correct=ok)],
                split="dev", checks=FORM, scoring=GOLD)  # fmt: skip


def test_a_check_of_form_admits_rows_only_where_its_precision_was_measured(store: Store) -> None:
    form_rows(store)
    unmeasured = compile_examples(store, allow_gold=False)
    assert unmeasured.examples == [] and unmeasured.unjustified == 3
    assert unmeasured.admission == {}
    dev_answers(store, right=12, wrong=28)  # 30 % right: what the issue measured
    imprecise = compile_examples(store, allow_gold=False)
    assert imprecise.examples == [] and imprecise.admission["s"]["admitted"] is False
    measured = imprecise.admission["s"] | {"lower_95": 0}
    assert measured == {"measured": 40, "right": 12, "precision": 0.3, "lower_95": 0,
                        "admitted": False}  # fmt: skip
    outright = compile_examples(store, allow_gold=False, justifications=["form"])
    assert [e.justification for e in outright.examples] == ["form"] * 3


def test_a_measured_precise_form_admits_its_suite_s_rows(store: Store) -> None:
    form_rows(store)
    dev_answers(store, right=60, wrong=0)
    precise = compile_examples(store, allow_gold=False)
    assert len(precise.examples) == 3 and precise.admission["s"]["admitted"] is True
    assert precise.summary(3)["form_admission"]["s"]["measured"] == 60
    stricter = compile_examples(store, allow_gold=False, form_precision=0.99)
    assert stricter.examples == []  # 60 of 60: lower bound 0.94


def consistent_dev(store: Store, right: int, wrong: int) -> None:
    """Scored dev items whose greedy answer and 4 draws all agree (and pass the schema):
    `right` of them right by scoring, `wrong` the same wrong value every time."""
    for k in range(right + wrong):
        answer = '{"name": "Ada"}' if k < right else '{"name": "Lima"}'
        draw = {"answer": answer, "passed": True, "checks_passed": True, "correct": k < right}
        episode(store, f"Name in: dev person {k}.", [attempt(answer, True, correct=k < right)],
                split="dev", checks=FORM, scoring=GOLD, draws=[draw] * 4)  # fmt: skip


def test_self_consistency_is_refused_where_the_model_agrees_with_itself_on_wrong_answers(
    store: Store,
) -> None:
    """Unmeasured, or measured right, self-consistency admits rows; on a suite where the same
    vote over its scored dev answers was mostly wrong (a field filled with the wrong value,
    every time: what a user's label-free suite showed), it admits none there."""
    for k in range(3):
        prompt = f"Name in: person {k} is Ada."
        id = episode(store, prompt, [attempt("{}", False)], checks=FORM, scoring=GOLD)
        store.add_correction(id, prompt=prompt, chosen='{"name": "Ada"}', source="sampled",
                             verified=True, justification="consistency")  # fmt: skip
    assert len(compile_examples(store, allow_gold=False).examples) == 3  # nothing measured
    consistent_dev(store, right=4, wrong=36)
    refused = compile_examples(store, allow_gold=False)
    assert refused.examples == [] and refused.unjustified == 3
    measured = refused.consistency["s"]
    assert (measured["measured"], measured["right"], measured["admitted"]) == (40, 4, False)
    assert refused.summary(0)["consistency_admission"]["s"]["upper_95"] < 0.8
    lenient = compile_examples(store, allow_gold=False, consistency_precision=0.2)
    assert len(lenient.examples) == 3  # 10 % right: upper bound 0.23
    consistent_dev(store, right=200, wrong=0)  # now 204 of 240 right: upper bound 0.89
    assert len(compile_examples(store, allow_gold=False).examples) == 3


def test_a_tool_that_computes_the_value_is_not_a_check_of_form(store: Store) -> None:
    """A stated sum is computed by the arithmetic tool: its pass decides the value."""
    episode(store, "What is 40 + 2?", [attempt("42", True)])
    assert [e.justification for e in compile_examples(store, allow_gold=False).examples] == [
        "checks"
    ]


def test_the_frontier_weighs_more_and_the_steps_stay_the_same(store: Store, tmp_path: Path) -> None:
    repaired_episode(store, "What is 40 + 2?", "41", "42")  # the model did not say it first
    episode(store, "What is 20 + 22?", [attempt("42", True)])  # it says it already
    examples = compile_examples(store, allow_gold=False).examples
    assert sorted((e.source, e.frontier) for e in examples) == [
        ("repair", True), ("self", False)]  # fmt: skip
    rows = to_records(examples, "sft", repair_turns=True, frontier_weight=3)
    sources = sorted(r["source"] for r in rows)
    assert sources == ["repair"] * 3 + ["repair_turn"] * 3 + ["self"]
    _, unique = build_dataset(store, tmp_path / "d", "sft", allow_gold=False, frontier_weight=3)
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert (unique, manifest["unique_rows"], manifest["examples"]) == (3, 3, 7)
    config = same_steps(TrainConfig(epochs=3.0), manifest, 7)
    assert config.epochs * 7 == pytest.approx(3.0 * 3)  # rows x epochs: the same steps
    assert same_steps(TrainConfig(max_steps=5), manifest, 7).epochs == 3.0  # steps given
    build_dataset(store, tmp_path / "plain", "sft", allow_gold=False)
    assert "unique_rows" not in json.loads((tmp_path / "plain" / "manifest.json").read_text())


def test_the_wilson_bound() -> None:
    assert wilson_lower(0, 0) == 0.0
    assert wilson_lower(60, 60) == pytest.approx(0.9398, abs=1e-4)
    assert wilson_lower(19, 62) == pytest.approx(0.2058, abs=1e-4)


def test_form_evidence_is_read_alike_from_postgresql(postgres_url: str) -> None:
    with Store.open(postgres_url) as store:
        form_rows(store)
        dev_answers(store, right=60, wrong=0)
        compiled = compile_examples(store, allow_gold=False)
    assert compiled.admission["s"]["measured"] == 60 and len(compiled.examples) == 3


def test_a_few_votes_never_refuse_self_consistency_fourteen_wrong_ones_do(store: Store) -> None:
    """The upper bound carries how few votes there are; a floor of 10 keeps one or two from
    deciding. 0 right of 14 (what a user's suite measured on night 2 of a nights run, the
    customer's name in the item field every time; 7 of that night's 9 rows were wrong) is
    clear: upper bound 0.22."""
    prompt = "Name in: person 0 is Ada."
    id = episode(store, prompt, [attempt("{}", False)], checks=FORM, scoring=GOLD)
    store.add_correction(id, prompt=prompt, chosen='{"name": "Ada"}', source="sampled",
                         verified=True, justification="consistency")  # fmt: skip
    consistent_dev(store, right=0, wrong=9)
    few = compile_examples(store, allow_gold=False)
    assert len(few.examples) == 1 and few.consistency["s"]["admitted"] is True
    consistent_dev(store, right=0, wrong=5)
    refused = compile_examples(store, allow_gold=False)
    assert refused.examples == [] and refused.consistency["s"]["measured"] == 14
