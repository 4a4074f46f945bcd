"""From the store to training data: SFT examples and DPO pairs as Hugging Face datasets.

Sources, best first (one example per normalised prompt; the others add provenance):
  user     a user's correction
  repair   the model's own repair, passed by grounded checks
  gold     the item's gold answer (from its checks, verified by them), where repair failed
  sampled  one of several samples from the model that the verifiers passed
  self     the model's own first answer, passed by grounded checks
Only `gold` needs a gold answer. A prompt of any gate or held-out split is never used.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agent.errors import ReflexaError
from agent.memory import contamination_guard
from agent.store import Store
from evals.contamination import TRAIN_SPLIT, Guard, prompt_hash
from evals.gold import gold_answer, passes

Format = Literal["sft", "dpo"]
SOURCES = ("user", "repair", "gold", "sampled", "self")


@dataclass
class Example:
    prompt_hash: str
    prompt: str
    chosen: str
    source: str
    rejected: str | None = None
    episode_ids: list[str] = field(default_factory=list)
    suites: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Compiled:
    """The examples, and what was left out and why."""

    examples: list[Example]
    protected_skipped: int  # rows whose prompt belongs to a gate or held-out split
    merged: int  # rows folded into an example with the same prompt

    def by_source(self) -> dict[str, int]:
        counts = {s: 0 for s in SOURCES}
        for e in self.examples:
            counts[e.source] += 1
        return {s: n for s, n in counts.items() if n}

    def suites(self) -> list[str]:
        return sorted({s for e in self.examples for s in e.suites})


def compile_examples(
    store: Store, *, allow_gold: bool = True, protected: Guard | None = None
) -> Compiled:
    """Every usable example in the store, deduplicated by normalised prompt."""
    protected = contamination_guard(store) if protected is None else protected
    rows = _rows(store, allow_gold)
    kept: dict[str, Example] = {}
    skipped = merged = 0
    for row in rows:
        if protected.protects(row.prompt):
            skipped += 1
            continue
        best = kept.get(row.prompt_hash)
        if best is None:
            kept[row.prompt_hash] = row
            continue
        merged += 1
        winner, other = (row, best) if _rank(row) < _rank(best) else (best, row)
        winner.episode_ids = sorted(set(winner.episode_ids) | set(other.episode_ids))
        winner.suites = sorted(set(winner.suites) | set(other.suites))
        winner.rejected = winner.rejected or other.rejected
        kept[row.prompt_hash] = winner
    examples = sorted(kept.values(), key=lambda e: (_rank(e), e.prompt_hash))
    return Compiled(examples, skipped, merged)


def _rank(e: Example) -> int:
    return SOURCES.index(e.source)


def _rows(store: Store, allow_gold: bool) -> list[Example]:
    episodes = store.training_episodes(TRAIN_SPLIT)
    suite_of = {e["id"]: [e["suite"]] if e["suite"] else [] for e in episodes}
    rows, corrected = [], set()
    for c in store.corrections():
        if c["verified"] and c["chosen"] and (allow_gold or c["source"] != "gold"):
            ids = [c["episode_id"]] if c["episode_id"] else []
            rows.append(
                Example(
                    c["prompt_hash"],
                    c["prompt"],
                    c["chosen"],
                    c["source"],
                    c["rejected"],
                    ids,
                    suite_of.get(c["episode_id"], []),
                )
            )
            corrected.add(c["episode_id"])
    golds = []
    for e in episodes:
        first = e["attempts"][0]
        row = Example(
            prompt_hash(e["prompt"]),
            e["prompt"],
            first["answer"],
            "self",
            None,
            [e["id"]],
            suite_of[e["id"]],
        )
        if e["first_passed"] and _grounded_pass(first):
            rows.append(row)
        elif allow_gold and e["id"] not in corrected and (gold := gold_answer(e["checks"])):
            row.chosen, row.source, row.rejected = gold, "gold", first["answer"]
            golds.append((row, e["checks"]))

    async def verify() -> list[bool]:
        return await asyncio.gather(*(passes(checks, r.prompt, r.chosen) for r, checks in golds))

    verified = asyncio.run(verify()) if golds else []
    return rows + [r for (r, _), ok in zip(golds, verified, strict=True) if ok]


def _grounded_pass(attempt: dict[str, Any]) -> bool:
    verdicts = [v for v in attempt["verdicts"] if v["error"] is None]
    return bool(verdicts) and all(v["kind"] == "grounded" and v["passed"] for v in verdicts)


def to_records(examples: Sequence[Example], fmt: Format) -> list[dict[str, Any]]:
    """Rows in TRL's conversational formats: `messages` for SFT, prompt/chosen/rejected for
    DPO (only examples with a rejected answer), each with its provenance."""
    records = []
    for e in examples:
        user = [{"role": "user", "content": e.prompt}]
        meta = {"source": e.source, "prompt_hash": e.prompt_hash, "episode_ids": e.episode_ids}
        if fmt == "sft":
            records.append({"messages": [*user, {"role": "assistant", "content": e.chosen}]} | meta)
        elif e.rejected is not None and e.rejected.strip() != e.chosen.strip():
            records.append(
                {
                    "prompt": user,
                    "chosen": [{"role": "assistant", "content": e.chosen}],
                    "rejected": [{"role": "assistant", "content": e.rejected}],
                }
                | meta
            )
    return records


def dataset_hash(records: Sequence[dict[str, Any]]) -> str:
    """Hash of the training content (not the provenance): same data, same hash."""
    content = [{k: v for k, v in r.items() if k not in ("episode_ids", "source")} for r in records]
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def write_dataset(records: list[dict[str, Any]], out: Path, fmt: Format, **manifest: Any) -> Path:
    """Save as a Hugging Face dataset folder with a `manifest.json` beside the data."""
    from datasets import Dataset, disable_progress_bars  # heavy: only when writing

    disable_progress_bars()

    if not records:
        raise ReflexaError(f"no {fmt} examples to write")
    out.mkdir(parents=True, exist_ok=True)
    Dataset.from_list(records).save_to_disk(str(out))
    by_source: dict[str, int] = {}
    for r in records:
        by_source[r["source"]] = by_source.get(r["source"], 0) + 1
    doc = {
        "format": fmt,
        "examples": len(records),
        "by_source": by_source,
        "dataset_hash": dataset_hash(records),
    } | manifest
    (out / "manifest.json").write_text(json.dumps(doc, indent=2) + "\n")
    return out
