"""The contamination guard's idea of "the same item"."""

from __future__ import annotations

import json

from reflexa.agent.settings import load_settings
from reflexa.agent.store import Store
from reflexa.evals.builtin import BUILTIN
from reflexa.evals.contamination import Guard, canonical_hash, shared_entities
from reflexa.evals.held_out import held_out_guard
from reflexa.evals.verify import gold_answer

ADA = "Return a JSON object with keys name and age for: Ada Lovelace is 36 years old."
ADA_GOLD = json.dumps({"name": "Ada Lovelace", "age": 36})


def test_commuted_operands_are_the_same_item() -> None:
    guard = Guard()
    guard.add("What is 52 + 44? Reply with only the number.")
    assert guard.protects("what is 44 +   52? Reply with only the number.")
    assert guard.protects("What is 44+52? Reply with only the number.")
    assert not guard.protects("What is 44 - 52? Reply with only the number.")  # not commutative
    assert canonical_hash("3 * 12") == canonical_hash("12 * 3") != canonical_hash("12 * 4")


def test_the_same_entity_values_in_another_sentence_are_the_same_item() -> None:
    guard = Guard()
    guard.add(ADA, ADA_GOLD)
    other = "Return a JSON object with keys name and age for: At 36, Ada Lovelace moved to Oslo."
    assert guard.protects(other)
    assert not guard.protects(other.replace("36", "37"))  # another age: another item
    guard.add("What is the capital of Japan?", "Tokyo")  # shares no words with its gold
    assert not guard.protects("Tokyo is big. What is the capital of Japan now?")


def test_builtin_held_out_near_duplicates_are_protected() -> None:
    with Store.open(load_settings().database) as store:
        guard = held_out_guard(store.held_out_prompts())
    sums = BUILTIN["sums"]()
    test_item = sums.select("test")[0]
    a, b = test_item.user_prompt.removeprefix("What is ").split("?")[0].split(" + ")
    assert guard.protects(f"What is {b} + {a}? Reply with only the number.")
    person = BUILTIN["json-extract"]().select("dev")[0]
    gold = json.loads(gold_answer(person.scoring_specs()) or "")
    moved = f"Return a JSON object with keys name and age for: Meet {gold['name']}, {gold['age']}."
    assert guard.protects(moved)


def test_held_out_items_sharing_entities_with_training_are_counted() -> None:
    held = [(ADA, ADA_GOLD), (ADA.replace("Ada Lovelace", "Alan Turing"),
                              json.dumps({"name": "Alan Turing", "age": 36}))]  # fmt: skip
    training = ["Return a JSON object with keys name and age for: Ada Byron is 20 years old."]
    assert shared_entities(held, training) == 1  # Ada; `name`, `age` and 36 are in both held
