"""`arithmetic`: two-digit sums, differences and products, generated from a seed; `sums`:
the sums alone.

The base model answers "52 + 53 = 175"-style text. The loop sees one check, of form (the
reply is only a number); the right number only scores. Gold may be trained on (`sums` is
the gold-backed setting), where the user allows it.
"""

from __future__ import annotations

import operator
import random

from reflexa.evals.suite import Suite, SuiteItem

SPLITS = {"train": 200, "dev": 100, "test": 100}
OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}
OPS_TAGS = {"+": "add", "-": "subtract", "*": "multiply"}
PROMPT = "What is {a} {op} {b}? Reply with only the number."


def arithmetic(seed: int = 0, ops: str = "+-*", name: str = "arithmetic") -> Suite:
    rng = random.Random(seed)
    items: list[SuiteItem] = []
    seen: set[tuple[int, str, int]] = set()
    for split, count in SPLITS.items():
        while sum(i.split == split for i in items) < count:
            op = rng.choice(list(ops))
            a, b = rng.randint(10, 99), rng.randint(10, 99)
            if (a, op, b) in seen:  # no question is in both splits
                continue
            seen.add((a, op, b))
            n = sum(i.split == split for i in items)
            items.append(
                SuiteItem(
                    id=f"{split}-{n:03d}",
                    prompt=PROMPT.format(a=a, op=op, b=b),
                    checks=[{"type": "numeric", "strict": True}],  # type: ignore[list-item]
                    scoring=[{"type": "numeric", "expected": OPS[op](a, b), "strict": True}],  # type: ignore[list-item]
                    tags=[OPS_TAGS[op]],
                    split=split,
                )
            )
    description = f"two-digit {' '.join(ops)} with integer answers"
    return Suite(name, items, "built-in", description, allow_gold=True)


def sums(seed: int = 1) -> Suite:
    """Two-digit sums only: the setting of the feasibility run in FINDINGS (0 % → 68 %).
    A 135M model cannot learn two-digit products, so `arithmetic` caps what one fine-tune
    can show; this suite measures what it can learn."""
    return arithmetic(seed, "+", "sums")
