"""When two prompts are the same item: the contamination guard's rules.

A prompt is protected (never trained on, never recalled) when it matches a held-out or
gate item:
- the same text up to case and whitespace (`prompt_hash`);
- the same after canonicalising: commutative operands sorted (`52 + 44` is `44 + 52`);
- the same entity values: every word the item's prompt shares with its gold answer (a
  name, an age) appears in the other prompt, whatever the sentence around them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

TRAIN_SPLIT = "train"
COMMUTATIVE = re.compile(r"(-?\d+(?:\.\d+)?)\s*([+*\u00d7])\s*(-?\d+(?:\.\d+)?)")
MIN_ENTITY_WORDS = 2  # fewer shared words say too little to call two prompts the same


def learnable(split: str | None) -> bool:
    """Chat (no split) and training-split episodes may be learnt from: trained on, recalled."""
    return split is None or split == TRAIN_SPLIT


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def prompt_hash(prompt: str) -> str:
    """Same prompt up to case and whitespace, same hash: the key for dedup."""
    return _digest(" ".join(prompt.lower().split()))


def canonical_hash(prompt: str) -> str:
    """Same prompt up to case, whitespace and the order of commutative operands."""

    def ordered(m: re.Match[str]) -> str:
        a, op, b = m.groups()
        return f"{min(a, b, key=float)} {op} {max(a, b, key=float)}"

    return _digest(COMMUTATIVE.sub(ordered, " ".join(prompt.lower().split())))


def entity_words(prompt: str, gold: str | None) -> frozenset[str]:
    """The words an item's prompt shares with its gold answer (empty without gold)."""
    if not gold:
        return frozenset()
    shared = frozenset(words(prompt)) & frozenset(words(gold))
    return shared if len(shared) >= MIN_ENTITY_WORDS else frozenset()


@dataclass
class Guard:
    """The protected items, and whether a prompt is one of them."""

    hashes: set[str] = field(default_factory=set)
    entities: set[frozenset[str]] = field(default_factory=set)
    items: list[tuple[str, str | None]] = field(default_factory=list)  # (prompt, gold)

    def add(self, prompt: str, gold: str | None = None) -> None:
        self.items.append((prompt, gold))
        self.hashes |= {prompt_hash(prompt), canonical_hash(prompt)}
        if key := entity_words(prompt, gold):
            self.entities.add(key)

    def protects(self, prompt: str) -> bool:
        if prompt_hash(prompt) in self.hashes or canonical_hash(prompt) in self.hashes:
            return True
        present = set(words(prompt))
        return any(key <= present for key in self.entities)


def shared_entities(held_out: Iterable[tuple[str, str | None]], training: Iterable[str]) -> int:
    """How many held-out items (prompt, gold) share an entity word with a training prompt,
    leaving out words every held-out item has (the template's own, like `name`)."""
    keys = [entity_words(p, g) for p, g in held_out]
    keys = [k for k in keys if k]
    if not keys:
        return 0
    common = frozenset.intersection(*keys)
    seen = set().union(*(set(words(p)) for p in training))
    return sum(bool((k - common) & seen) for k in keys)
