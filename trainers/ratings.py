"""KTO's rows: what people said of answers, good or bad (thumbs, and a user's corrections)."""

from __future__ import annotations

from typing import Any

from reflexa.evals.contamination import Guard, prompt_hash
from reflexa.evals.held_out import held_out_guard
from reflexa.trainers.examples import Compiled
from reflexa.trainers.ports import CorrectionSource


def rating_records(
    store: CorrectionSource, protected: Guard | None = None
) -> tuple[list[dict[str, Any]], Compiled]:
    """KTO rows: each answer people rated (thumbs up: desirable, down: not) and each user
    correction (its answer desirable, the one it replaced not), as prompt, completion and
    label; one row per prompt and answer: the last rating of it, and a user's correction
    over any rating (a right answer given outranks a thumb). Never a protected (held-out or
    gate) prompt. The rows, and what was skipped, in a Compiled."""
    protected = held_out_guard(store.held_out_prompts()) if protected is None else protected
    said: dict[tuple[str, str], tuple[bool, str, list[str]]] = {}  # (hash, answer) → label
    for r in store.ratings():
        if r["answer"]:
            said[(prompt_hash(r["prompt"]), r["answer"])] = (r["rating"] == "good", r["prompt"],
                                                             [r["episode_id"]])  # fmt: skip
    for c in store.corrections():
        if c.source == "user" and c.verified and c.chosen:
            ids = [c.episode_id] if c.episode_id else []
            said[(c.prompt_hash, c.chosen)] = (True, c.prompt, ids)
            if c.rejected and c.rejected.strip() != c.chosen.strip():
                said[(c.prompt_hash, c.rejected)] = (False, c.prompt, ids)
    rows, skipped = [], 0
    for (key, answer), (label, prompt, ids) in said.items():
        if protected.protects(prompt):
            skipped += 1
            continue
        rows.append({
            "prompt": [{"role": "user", "content": prompt}],
            "completion": [{"role": "assistant", "content": answer}],
            "label": label, "source": "rating", "justification": "user",
            "prompt_hash": key, "episode_ids": ids,
        })  # fmt: skip
    return rows, Compiled([], skipped, 0)
