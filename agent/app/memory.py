"""Correction memory: past verified corrections recalled as worked examples.

Between fine-tunes the agent should not repeat a mistake it has corrected once. Each request
searches the store's memories (full-text: BM25 on SQLite, ts_rank on PostgreSQL), keeps the
best `k` that are similar enough and fit the token budget, and the graph puts them before the
request as solved examples. What was recalled, or why nothing was, goes into the trace.

Never recalled: a memory justified by gold where the asker may not learn from gold (a turn,
gate or candidate without gold), a memory whose prompt is an item of a held-out or gate
split (the contamination guard the training data has too), one the answering adapter was
shown to pass unaided (retired for it), one that hurt more often than it helped when
measured (harmful), or, for a model and suite whose recall the gate turned off (it made
answers worse there), the suite's memories and anything on the suite's items.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from reflexa.agent.settings import MemorySettings
from reflexa.agent.store import Store
from reflexa.evals.builtin import all_prompts
from reflexa.evals.contamination import Guard, words
from reflexa.evals.held_out import held_out_guard
from reflexa.graphs.state import Recall

TokenCounter = Callable[[str], int]
TURN_OVERHEAD = 8  # chat-template tokens around a user turn and an assistant turn
CANDIDATES = 4  # full-text hits examined per memory wanted
# A word in more than this share of the memories is searched for only where the others find
# too few: its BM25 weight is near nothing, and searching for it ranked nearly every memory
# (at 10,000 memories recall took 15.9 ms p50 alone, 2.7 ms without: bench/results/memory-
# 2026-12-07*.json; the same memories were recalled for each of 300 held-out prompts).
COMMON = 0.2


Weight = Callable[[str], float]  # a word's weight: its rarity


def terms(text: str) -> list[str]:
    """The words of `text`, every number the same word: a shared number is no sign that
    two prompts ask the same thing (an age in one, an operand in another)."""
    return ["0" if w.isdigit() else w for w in words(text)]


def similarity(a: str, b: str, weight: Weight = lambda _: 1.0) -> float:
    """Cosine of the two texts' term counts, each term weighted by `weight`; 0 to 1."""
    ca = {w: n * weight(w) for w, n in Counter(terms(a)).items()}
    cb = {w: n * weight(w) for w, n in Counter(terms(b)).items()}
    dot = sum(x * cb.get(w, 0.0) for w, x in ca.items())
    norm = math.sqrt(sum(x * x for x in ca.values()) * sum(x * x for x in cb.values()))
    return dot / norm if norm else 0.0


def rarity(prompts: Iterable[str]) -> Weight:
    """BM25's inverse document frequency over `prompts`: a term in every prompt weighs
    almost nothing, a term in none the most."""
    df: Counter[str] = Counter()
    n = 0
    for prompt in prompts:
        df.update(set(terms(prompt)))
        n += 1
    return lambda w: math.log((n - df[w] + 0.5) / (df[w] + 0.5) + 1)


def common_words(prompts: list[str], share: float = COMMON) -> frozenset[str]:
    """The words in more than `share` of `prompts`."""
    df = Counter(w for p in prompts for w in set(words(p)))
    return frozenset(w for w, n in df.items() if n > share * len(prompts))


def token_counter(model_dir: Path | None) -> TokenCounter:
    """The served model's own tokenizer when its folder is here; else about 3 characters a
    token (an over-estimate for English, so the budget holds)."""
    path = model_dir / "tokenizer.json" if model_dir else None
    if path is not None and path.is_file():
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(path))
        return lambda s: len(tokenizer.encode(s, add_special_tokens=False).ids)
    return lambda s: len(s) // 3 + 1


class Memory:
    """Recall over one store, for one answering model (`model`: the adapter, None: base)."""

    def __init__(
        self,
        store: Store,
        settings: MemorySettings,
        count_tokens: TokenCounter,
        model: str | None = None,
        protected: Guard | None = None,
        policy: bool = True,
    ) -> None:
        """`policy`: honour the recall policy (False: the gate, measuring recall itself)."""
        self.store, self.settings, self.model = store, settings, model
        self.count_tokens = count_tokens
        self.protected = (
            held_out_guard(store.held_out_prompts()) if protected is None else protected
        )
        # Rare across tasks (every built-in prompt as background): over the memories alone,
        # a store of one task would weigh that task's own words at nothing, and a request of
        # the same task would look unrelated.
        memories = store.memory_prompts()
        self.weight = rarity([*all_prompts(), *memories])
        self.common = common_words(memories)
        policies = store.recall_policies(model or "") if policy else []
        self.off = {p["suite"]: p["reason"] for p in policies if not p["recall"]}

    def protect(self, prompt: str) -> None:
        """`prompt` is a held-out or gate item: its memory (if any) is never recalled."""
        self.protected.add(prompt)

    def recall(self, prompt: str, suite: str | None = None, gold: bool = False) -> Recall:
        """The memories for `prompt` (an item of `suite`, if given); those justified by gold
        only where `gold` (the asker may learn from gold). A broken index raises: the graph's
        recall node turns that into no recall and a note."""
        started = time.perf_counter()
        if suite in self.off:
            return Recall(note=f"recall off for {suite} with this model: {self.off[suite]}")
        s = self.settings
        rows = self.store.search_memories(
            prompt, s.k * CANDIDATES, self.model, gold=gold, common=self.common
        )
        chosen: list[dict[str, Any]] = []
        left = {"protected": 0, "recall off": 0, "dissimilar": 0, "over budget": 0}
        budget = s.token_budget
        for row in rows:
            if len(chosen) == s.k:
                break
            if self.protected.protects(row["prompt"]):
                left["protected"] += 1
                continue
            if row["suite"] in self.off:
                left["recall off"] += 1
                continue
            sim = similarity(prompt, row["prompt"], self.weight)
            if sim < s.min_similarity:
                left["dissimilar"] += 1
                continue
            tokens = self.count_tokens(row["prompt"]) + self.count_tokens(row["answer"])
            tokens += TURN_OVERHEAD
            if tokens > budget:
                left["over budget"] += 1
                continue
            budget -= tokens
            chosen.append(row | {"similarity": round(sim, 3), "tokens": tokens})
        return Recall(chosen, _note(rows, chosen, left), time.perf_counter() - started)


def _note(rows: list[Any], chosen: list[Any], left: dict[str, int]) -> str | None:
    if not rows:
        return "nothing recalled: no stored correction shares words with this request"
    skipped = ", ".join(f"{n} {why}" for why, n in left.items() if n)
    if not chosen:
        return f"nothing recalled ({skipped})"
    return f"left out: {skipped}" if skipped else None
