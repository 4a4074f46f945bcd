"""`json-extract`: pull a person's fields out of a sentence into schema-checked JSON.

Measured here: the base model gets 72 % of these right with a bare prompt (failures: extra
keys, wrong name spans, code instead of JSON). The loop sees the JSON Schema (no values);
the right object only scores.
"""

from __future__ import annotations

import random

from reflexa.evals.suite import Suite, SuiteItem

SPLITS = {"train": 200, "dev": 100, "test": 100}
FIRST = [
    "Ada",
    "Alan",
    "Grace",
    "Linus",
    "Margaret",
    "Edsger",
    "Barbara",
    "Donald",
    "Frances",
    "Ken",
    "Radia",
    "John",
    "Katherine",
    "Tim",
    "Hedy",
    "Dennis",
    "Sophie",
    "Guido",
]
LAST = [
    "Lovelace",
    "Turing",
    "Hopper",
    "Torvalds",
    "Hamilton",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Allen",
    "Thompson",
    "Perlman",
    "McCarthy",
    "Johnson",
    "Berners-Lee",
    "Lamarr",
    "Ritchie",
    "Wilson",
    "van Rossum",
]
CITIES = ["London", "Paris", "Oslo", "Lagos", "Lima", "Kyoto", "Austin", "Dublin", "Accra"]
SENTENCES = [
    "{name} is {age} years old and lives in {city}.",
    "Meet {name}, {age}, from {city}.",
    "At {age}, {name} moved to {city}.",
    "{city} resident {name} turned {age} this year.",
]
PROMPT = "Return a JSON object with keys name and age for: {sentence}"
SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


def json_extract(seed: int = 0) -> Suite:
    rng = random.Random(seed)
    items: list[SuiteItem] = []
    seen: set[str] = set()
    for split, count in SPLITS.items():
        n = 0
        while n < count:
            name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
            age = rng.randint(18, 90)
            template = rng.randrange(len(SENTENCES))
            sentence = SENTENCES[template].format(name=name, age=age, city=rng.choice(CITIES))
            if sentence in seen:
                continue
            seen.add(sentence)
            gold = {"type": "json", "schema": SCHEMA, "expected": {"name": name, "age": age}}
            items.append(
                SuiteItem(
                    id=f"{split}-{n:03d}",
                    prompt=PROMPT.format(sentence=sentence),
                    checks=[{"type": "json", "schema": SCHEMA}],  # type: ignore[list-item]
                    scoring=[gold],  # type: ignore[list-item]
                    tags=[f"template-{template}"],
                    split=split,
                )
            )
            n += 1
    description = "name and age from a sentence, as JSON"
    return Suite("json-extract", items, "built-in", description, allow_gold=True)
