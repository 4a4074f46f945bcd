"""The dataset compiler: sources, dedup, the contamination guard, both formats, export."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from datasets import load_from_disk

from reflexa.agent.cli import cli
from reflexa.agent.store import Store, prompt_hash
from reflexa.agent.store.db import sqlite_url
from reflexa.evals.builtin import BUILTIN
from reflexa.evals.contamination import Guard
from reflexa.evals.verify import gold_answer
from reflexa.trainers.dataset import compile_examples, to_records, write_dataset

NUMERIC_42 = [{"type": "numeric", "expected": 42, "strict": True}]  # scoring
NUMBER_ONLY = [{"type": "numeric", "strict": True}]  # what the loop sees


def attempt(
    answer: str, passed: bool, kind: str = "grounded", correct: bool | None = None
) -> dict[str, Any]:
    """An attempt; scoring finds it right when it passed, unless `correct` says otherwise."""
    verdict = {"verifier": "numeric", "passed": passed, "score": float(passed), "feedback": "",
               "kind": kind, "error": None}  # fmt: skip
    return {"kind": "generate", "answer": answer, "verdicts": [verdict], "passed": passed,
            "score": float(passed), "model": "m",
            "correct": passed if correct is None else correct}  # fmt: skip


def episode(
    store: Store,
    prompt: str,
    attempts: list[dict[str, Any]],
    *,
    split: str | None = "train",
    status: str | None = None,
    checks: list[dict[str, Any]] | None = None,
    scoring: list[dict[str, Any]] | None = None,
    corrections: list[dict[str, Any]] = (),  # type: ignore[assignment]
    draws: list[dict[str, Any]] | None = None,
) -> str:
    id = uuid.uuid4().hex
    store.start_episode(
        id=id, thread_id=id, prompt=prompt, messages=[{"role": "user", "content": prompt}],
        checks=NUMBER_ONLY if checks is None else checks,
        scoring=NUMERIC_42 if scoring is None else scoring, gold_allowed=True,
        model="m", suite="s", split=split,
    )  # fmt: skip
    passed = attempts[-1]["passed"]
    status = status or (
        "passed" if attempts[0]["passed"] else "repaired" if passed else "unresolved"
    )
    scores = [a["correct"] for a in attempts]  # the application's scoring, after the loop
    store.finish_episode(id, status=status, answer=attempts[-1]["answer"], error=None,
                         attempts=attempts, latency_s=0.1, corrections=corrections,
                         scores=scores, draws=draws)  # fmt: skip
    return id


def repaired_episode(store: Store, prompt: str, wrong: str, right: str) -> str:
    """A failed first answer, then a repair that grounded checks passed."""
    correction = {"prompt": prompt, "rejected": wrong, "chosen": right, "source": "repair",
                  "verified": True, "justification": "checks", "correct": True}  # fmt: skip
    return episode(store, prompt, [attempt(wrong, False), attempt(right, True)],
                   corrections=[correction])  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store.open(sqlite_url(tmp_path / "db.sqlite")) as s:
        yield s  # type: ignore[misc]


def test_each_source_and_its_priority(store: Store) -> None:
    self_id = episode(store, "What is 40 + 2?", [attempt("42", True)])
    repaired_id = repaired_episode(store, "What is 41 + 1?", "41+1=43", "42")
    gold_id = episode(store, "What is 39 + 3?", [attempt("39 + 3 = 45", False)])
    episode(store, "Judge only?", [attempt("yes", True, kind="judge")], checks=[])
    examples = {e.prompt: e for e in compile_examples(store, protected=Guard()).examples}
    assert set(examples) == {"What is 40 + 2?", "What is 41 + 1?", "What is 39 + 3?"}
    assert (examples["What is 40 + 2?"].source, examples["What is 40 + 2?"].episode_ids) == (
        "self",
        [self_id],
    )
    repaired = examples["What is 41 + 1?"]
    assert (repaired.source, repaired.chosen, repaired.rejected) == ("repair", "42", "41+1=43")
    assert repaired.episode_ids == [repaired_id]
    gold = examples["What is 39 + 3?"]
    assert (gold.source, gold.chosen, gold.rejected, gold.episode_ids) == (
        "gold", "42", "39 + 3 = 45", [gold_id])  # fmt: skip

    no_gold = compile_examples(store, allow_gold=False, protected=Guard())
    assert {e.source for e in no_gold.examples} == {"self", "repair"}


def test_justifications_rank_filter_and_report_their_precision(store: Store) -> None:
    # Passed the form check but scoring says wrong; gold is allowed: gold replaces it.
    episode(store, "What is 40 + 2?", [attempt("43", True, correct=False)])
    # The form check alone, right by scoring.
    episode(store, "What is 30 + 12?", [attempt("42", True)])
    voted = episode(store, "What is 35 + 7?", [attempt("41", True, correct=False)])
    store.add_correction(voted, prompt="What is 35 + 7?", chosen="42", rejected="41",
                         source="sampled", verified=True, justification="consistency",
                         correct=True)  # fmt: skip
    compiled = compile_examples(store, protected=Guard())
    by_prompt = {e.prompt: (e.justification, e.chosen) for e in compiled.examples}
    assert by_prompt == {"What is 40 + 2?": ("gold", "42"), "What is 30 + 12?": ("checks", "42"),
                         "What is 35 + 7?": ("consistency", "42")}  # fmt: skip
    assert compiled.precision() == {
        "gold": {"examples": 1, "scored": 1, "right": 1, "precision": 1.0},
        "consistency": {"examples": 1, "scored": 1, "right": 1, "precision": 1.0},
        "checks": {"examples": 1, "scored": 1, "right": 1, "precision": 1.0},
    }
    label_free = compile_examples(store, allow_gold=False, protected=Guard())
    assert label_free.precision()["checks"] == {"examples": 2, "scored": 2, "right": 1,
                                                "precision": 0.5}  # fmt: skip
    held = Guard()
    held.add("What is 35 + 8? Reply with only the number.", "43")  # shares no word with gold
    held.add("Ada Lovelace is 36. JSON of name and age?", '{"name": "Ada Lovelace", "age": 36}')
    held.add("Alan Turing is 35. JSON of name and age?", '{"name": "Alan Turing", "age": 35}')
    assert compile_examples(store, protected=held).sharing_entities == 1  # 35, with 35 + 7
    only = compile_examples(store, allow_gold=False, protected=Guard(),
                            justifications=["consistency"])  # fmt: skip
    assert [e.prompt for e in only.examples] == ["What is 35 + 7?"]
    assert only.unjustified == 3  # three first answers passed by the form check alone
    records = to_records(only.examples, "sft")
    assert records[0]["justification"] == "consistency"
    assert "42" not in json.dumps([e for e in label_free.examples if e.source == "gold"])


def test_dedup_by_normalised_prompt_keeps_the_best_source_and_all_provenance(store: Store) -> None:
    a = episode(store, "What is 40 + 2?", [attempt("42", True)])
    b = repaired_episode(store, "  what is 40 +   2?", "x", "42")
    compiled = compile_examples(store, protected=Guard())
    assert len(compiled.examples) == 1 and compiled.merged >= 1
    only = compiled.examples[0]
    assert only.source == "repair" and only.rejected == "x"
    assert set(only.episode_ids) == {a, b}


def test_unverified_repairs_and_gold_that_fails_its_checks_are_left_out(store: Store) -> None:
    episode(
        store, "Say hi", [attempt("bye", False), attempt("hi", True, kind="judge")],
        checks=[{"type": "judge"}], scoring=[],
        corrections=[{"prompt": "Say hi", "rejected": "bye", "chosen": "hi", "source": "repair",
                      "verified": False}],
    )  # fmt: skip
    # The gold text from `exact` is refused by the item's own regex check: not verified.
    checks, scoring = (
        [{"type": "regex", "pattern": "^kyoto$"}],
        [{"type": "exact", "expected": "Tokyo"}],
    )
    episode(store, "Capital?", [attempt("Osaka", False)], checks=checks, scoring=scoring)
    assert compile_examples(store, protected=Guard()).examples == []


def test_contamination_guard_never_trains_on_gate_or_heldout_prompts(store: Store) -> None:
    heldout = next(i for i in BUILTIN["arithmetic"]().items if i.split == "dev")
    frozen = BUILTIN["capabilities"]().items[0]
    # Asked in chat (no split) and answered right: still a held-out / gate prompt.
    episode(store, heldout.user_prompt, [attempt("x", True)], split=None)
    episode(store, frozen.user_prompt.upper(), [attempt("OK", True)], split=None)
    # A custom suite's held-out item recorded by an eval run, then seen again in chat.
    episode(store, "Custom held-out question", [attempt("a", False)], split="heldout")
    episode(store, "custom held-out   QUESTION", [attempt("42", True)], split=None)
    kept = episode(store, "A training question: what is 40 + 2?", [attempt("42", True)])
    compiled = compile_examples(store)
    assert [e.episode_ids for e in compiled.examples] == [[kept]]
    assert compiled.protected_skipped == 3


def test_gold_answer_from_checks() -> None:
    assert gold_answer(NUMERIC_42) == "42"
    assert gold_answer([{"type": "numeric", "expected": 2.5}]) == "2.5"
    assert gold_answer([{"type": "exact", "expected": "Paris"}]) == "Paris"
    assert json.loads(gold_answer([{"type": "json", "expected": {"a": 1}}]) or "") == {"a": 1}
    assert gold_answer([{"type": "regex", "pattern": "x"}]) is None


def test_both_formats_round_trip_through_datasets(store: Store, tmp_path: Path) -> None:
    episode(store, "What is 40 + 2?", [attempt("42", True)])
    episode(store, "What is 39 + 3?", [attempt("45", False)])
    examples = compile_examples(store, protected=Guard()).examples
    sft, dpo = to_records(examples, "sft"), to_records(examples, "dpo")
    assert len(sft) == 2 and len(dpo) == 1  # a self example has no rejected side
    write_dataset(sft, tmp_path / "sft", "sft")
    write_dataset(dpo, tmp_path / "dpo", "dpo")
    rows = list(load_from_disk(str(tmp_path / "sft")))
    assert {r["messages"][-1]["content"] for r in rows} == {"42"}
    assert all(r["messages"][0]["role"] == "user" for r in rows)
    pair = load_from_disk(str(tmp_path / "dpo"))[0]
    assert pair["chosen"] == [{"role": "assistant", "content": "42"}]
    assert pair["rejected"] == [{"role": "assistant", "content": "45"}]
    assert pair["prompt_hash"] == prompt_hash("What is 39 + 3?")
    manifest = json.loads((tmp_path / "dpo" / "manifest.json").read_text())
    assert manifest["examples"] == 1 and manifest["by_source"] == {"gold": 1}


def test_failures_export_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFLEXA_HOME", str(tmp_path / "home"))
    runner = CliRunner()
    empty = runner.invoke(cli, ["failures", "export", "--format", "sft", "--out", "x"])
    assert empty.exit_code == 1 and "0 sft examples, fewer than the 1 needed" in empty.output
    with Store.open(sqlite_url(tmp_path / "home" / "reflexa.db")) as store:
        episode(store, "What is 39 + 3?", [attempt("45", False)])
    out = tmp_path / "out"
    result = runner.invoke(cli, ["failures", "export", "--format", "dpo", "--out", str(out),
                                 "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["by_source"] == {"gold": 1}
    assert len(load_from_disk(str(out))) == 1
    again = runner.invoke(cli, ["failures", "export", "--format", "dpo", "--out", str(out)])
    assert again.exit_code == 1 and "not empty" in again.output
    grpo = runner.invoke(cli, ["failures", "export", "--format", "grpo", "--out",
                               str(tmp_path / "grpo")])  # fmt: skip
    assert grpo.exit_code == 0, grpo.output
    (row,) = load_from_disk(str(tmp_path / "grpo"))
    assert row["prompt"][0]["content"] == "What is 39 + 3?" and row["source"] == "prompt"


def test_an_own_repair_is_also_a_repair_turn_with_only_visible_feedback(store: Store) -> None:
    """The wrong first answer and the feedback it was shown (never the scoring's value),
    then the repair; the loss is on that last turn (train.py: prompt = all but the last)."""
    wrong = attempt("41+1=43", False)
    wrong["verdicts"][0]["feedback"] = "Reply with only the number, nothing else."
    wrong["diagnosis"] = {"strategy": "feedback", "cause": "extra text", "fix": "number only"}
    correction = {"prompt": "What is 41 + 1?", "rejected": "41+1=43", "chosen": "42",
                  "source": "repair", "verified": True, "justification": "checks",
                  "correct": True}  # fmt: skip
    episode(store, "What is 41 + 1?", [wrong, attempt("42", True)], corrections=[correction])
    examples = compile_examples(store, protected=Guard()).examples
    plain, turn = to_records(examples, "sft")
    assert plain["messages"][-1] == {"role": "assistant", "content": "42"}
    assert turn["source"] == "repair_turn"
    user, first, asked, fixed = turn["messages"]
    assert (user["content"], first["content"], fixed["content"]) == (
        "What is 41 + 1?",
        "41+1=43",
        "42",
    )
    assert asked["role"] == "user" and "Reply with only the number" in asked["content"]
    assert "Cause: extra text" in asked["content"] and "42" not in asked["content"]
    assert len(to_records(examples, "sft", repair_turns=False)) == 1
    assert len(to_records(examples, "dpo")) == 1  # pairs are unchanged


def test_gold_and_first_answers_never_become_repair_turns(store: Store) -> None:
    episode(store, "What is 40 + 2?", [attempt("42", True)])
    episode(store, "What is 39 + 3?", [attempt("45", False)])  # gold: not the model's repair
    records = to_records(compile_examples(store, protected=Guard()).examples, "sft")
    assert {r["source"] for r in records} == {"self", "gold"}


def test_kto_rows_are_what_people_said_the_last_word_winning(store: Store) -> None:
    """Thumbs and user corrections as KTO rows (prompt, completion, label); a held-out
    prompt never; an answer rated twice counts once, as it was rated last."""
    from reflexa.trainers.ratings import rating_records

    liked = episode(store, "Name a colour.", [attempt("blue", True)], split=None)
    store.add_rating(liked, "good", by="ana")
    disputed = episode(store, "Name a fruit.", [attempt("carrot", True)], split=None)
    store.add_rating(disputed, "good", by="ana")
    store.add_rating(disputed, "bad", by="ben")  # the last word
    store.add_correction(disputed, prompt="Name a fruit.", rejected="carrot", chosen="apple",
                         source="user", verified=True)  # fmt: skip
    heldout = next(i for i in BUILTIN["arithmetic"]().items if i.split == "dev")
    peeked = episode(store, heldout.user_prompt, [attempt("7", True)], split=None)
    store.add_rating(peeked, "good")
    rows, compiled = rating_records(store)
    said = {(r["prompt"][0]["content"], r["completion"][0]["content"]): r["label"] for r in rows}
    assert said == {("Name a colour.", "blue"): True, ("Name a fruit.", "carrot"): False,
                    ("Name a fruit.", "apple"): True}  # fmt: skip
    assert compiled.protected_skipped == 1
