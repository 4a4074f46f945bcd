"""A user's own label-free suite for the nights benchmark, `orders`: a shop's order lines
into a JSON object. The loop sees only the schema (no values; no gold on training items);
dev and test items carry scoring, which measures and never teaches. Dev and test are fixed
(a user's file: the gate reuses its dev split every night); each night's traffic is a
fresh batch of training lines from its own seed."""

from __future__ import annotations

import random
from typing import Any

NAMES = ["Maria", "Kofi", "Aiko", "Lars", "Priya", "Diego", "Chloe", "Omar", "Nina", "Tomas"]
ITEMS = ["lamp", "chair", "kettle", "notebook", "backpack", "mug", "towel", "clock", "pillow"]
LINES = [
    "Order {n}: {name} bought {qty} {item}s at {price} dollars each.",
    "{name} ordered {qty} {item}s ({price} dollars apiece), order {n}.",
    "Order {n} - {qty} x {item} for {name}, {price} dollars per unit.",
]
PROMPT = (
    "Return a JSON object with keys customer, item, quantity and unit_price for this order "
    "line, and nothing else: {line}"
)
SCHEMA = {
    "type": "object",
    "properties": {
        "customer": {"type": "string"},
        "item": {"type": "string"},
        "quantity": {"type": "integer"},
        "unit_price": {"type": "number"},
    },
    "required": ["customer", "item", "quantity", "unit_price"],
    "additionalProperties": False,
}


def items(split: str, count: int, seed: int) -> list[dict[str, Any]]:
    """`count` items of `split`, each with its scoring."""
    rng = random.Random(seed)
    out = []
    for k in range(count):
        name, item = rng.choice(NAMES), rng.choice(ITEMS)
        qty, price, n = rng.randint(2, 9), rng.randint(3, 90), rng.randint(1000, 9999)
        line = rng.choice(LINES).format(n=n, name=name, qty=qty, item=item, price=price)
        expected = {"customer": name, "item": item, "quantity": qty, "unit_price": price}
        out.append({
            "id": f"{split}-{seed}-{k:03d}",
            "prompt": PROMPT.format(line=line),
            "checks": [{"type": "json", "schema": SCHEMA}],
            "scoring": [{"type": "json", "expected": expected}],
            "split": split,
        })  # fmt: skip
    return out


def suite(night: int, train: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The suite file as the user has it on `night` (that night's training lines, without
    scoring: the user has none; and the fixed dev and test splits), and the scoring of
    those training lines, which only the bench holds, by prompt."""
    train_rows = items("train", train, 100 + night)
    key = {r["prompt"]: r["scoring"] for r in train_rows}
    rows = [{k: v for k, v in r.items() if k != "scoring"} for r in train_rows]
    rows += items("dev", 100, 1) + items("test", 100, 2)
    doc = {"name": "orders", "description": "order lines into JSON (label-free)", "items": rows}
    return doc, key
