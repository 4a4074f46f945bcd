"""What a compile makes of the store: examples (one per prompt, with their provenance and
justification) and the account of what was left out, and why."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from reflexa.evals.signal import JUSTIFICATIONS

Format = Literal["sft", "dpo", "grpo", "kto"]
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
    justification: str = "checks"
    correct: bool | None = None  # scoring's view, where the item has scoring
    repair_request: str | None = None  # a repair's: the feedback turn its first answer got
    logged_at: datetime | None = None  # when its newest evidence was logged (trainers/replay.py)

    @property
    def frontier(self) -> bool:
        """The model did not give this answer by itself: the greedy or first one failed."""
        return self.source != "self"


@dataclass(frozen=True)
class Compiled:
    """The examples, and what was left out and why."""

    examples: list[Example]
    protected_skipped: int  # rows whose prompt is (a duplicate of) a gate or held-out item
    merged: int  # rows folded into an example with the same prompt
    unjustified: int = 0  # rows whose justification is not allowed
    sharing_entities: int = 0  # held-out items sharing an entity word with a training row
    prompt_suites: tuple[str, ...] = ()  # GRPO: the suites its prompts come from
    alike: int = 0  # GRPO: prompts left out, not among those whose samples disagreed
    gold_replaced: int = 0  # with gold: rows scoring found wrong, dropped (gold added instead)
    admission: dict[str, dict[str, Any]] = field(default_factory=dict)  # form, per suite
    consistency: dict[str, dict[str, Any]] = field(default_factory=dict)  # its vote, per suite
    replay: dict[str, Any] = field(default_factory=dict)  # rows from before the last night

    def by_source(self) -> dict[str, int]:
        counts = {s: 0 for s in SOURCES}
        for e in self.examples:
            counts[e.source] += 1
        return {s: n for s, n in counts.items() if n}

    def summary(self, records: int) -> dict[str, Any]:
        """What was compiled, for `failures export --json` and the cycle's compile stage."""
        return (
            {
                "examples": records,
                "by_source": self.by_source(),
                "protected_skipped": self.protected_skipped,
                "duplicates_merged": self.merged,
                "unjustified_skipped": self.unjustified,
                "gold_replaced": self.gold_replaced,
                "heldout_sharing_entities": self.sharing_entities,
                "repairs_with_turns": sum(1 for e in self.examples if e.repair_request),
                "frontier": sum(e.frontier for e in self.examples),
                "rehearsal": sum(e.justification == "rehearsal" for e in self.examples),
                "precision": self.precision(),
            }
            | ({"alike_skipped": self.alike} if self.alike else {})
            | ({"form_admission": self.admission} if self.admission else {})
            | ({"consistency_admission": self.consistency} if self.consistency else {})
            | ({"replay": self.replay} if self.replay else {})
        )

    def suites(self) -> list[str]:
        return sorted({s for e in self.examples for s in e.suites} | set(self.prompt_suites))

    def precision(self) -> dict[str, dict[str, Any]]:
        """Per justification: examples, how many scoring could judge, how many it found
        right, and the share (None when nothing could be scored)."""
        out = {}
        for j in JUSTIFICATIONS:
            rows = [e for e in self.examples if e.justification == j]
            if not rows:
                continue
            scored = [e for e in rows if e.correct is not None]
            right = sum(bool(e.correct) for e in scored)
            share = round(right / len(scored), 4) if scored else None
            out[j] = {"examples": len(rows), "scored": len(scored), "right": right,
                      "precision": share}  # fmt: skip
        return out
