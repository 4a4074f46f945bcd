"""Which repair can fix a failure, and the two repairs that do not rely on the model taking
its own advice (a small model does not: measured, feedback alone fixed 0 of 16 json-extract
failures).

- constrained: a failed visible check has a formal shape (a regex, a number, a JSON
  Schema); the repair decodes under vLLM's structured outputs with it, so that format
  failure cannot come back.
- sample: a tool or test decides each answer (the arithmetic tool, python_tests, an exact
  value); N candidates come in one request, each is checked, and among those that pass
  the most common (normalised) answer is chosen. None passing: the answer stays.
- feedback: the verifiers' feedback and the model's diagnosis, as a prompt.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

from reflexa.evals.signal import normalise

Strategy = Literal["constrained", "sample", "feedback"]
DECIDED_BY_TOOLS = {"arithmetic", "python_tests", "exact"}  # a candidate can be checked
NUMBER = r"-?[0-9]{1,30}(\.[0-9]{1,30})?"  # bounded: unbounded, the model wrote 512 digits


STRATEGIES: tuple[Strategy, ...] = ("constrained", "sample", "feedback")


def route(
    verdicts: Sequence[dict[str, Any]],
    checks: Sequence[dict[str, Any]],
    tried: Sequence[str],
    samples: int,
    allowed: Sequence[str] = STRATEGIES,
) -> tuple[Strategy, str, dict[str, Any] | None]:
    """The strategy for the failed verdicts (an allowed one, not already tried this turn),
    why, and the structured-output shape for a constrained repair. Feedback is the last
    resort, and always there."""
    failed = {v["verifier"] for v in verdicts if v["error"] is None and not v["passed"]}
    usable = set(allowed) - set(tried)
    if "constrained" in usable and (shape := shape_for(failed, checks)) is not None:
        kind = next(iter(shape))
        return "constrained", f"a failed check has a formal shape ({kind})", shape
    if "sample" in usable and samples > 1 and failed & DECIDED_BY_TOOLS:
        deciders = ", ".join(sorted(failed & DECIDED_BY_TOOLS))
        return "sample", f"{deciders} can check each of {samples} candidates", None
    return "feedback", "no other strategy applies, or is left", None


def shape_for(failed: set[str], checks: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """A structured-output shape from a failed check: its JSON Schema, its regex (to match
    whole), or a bare number for a strict numeric check."""
    for spec in checks:
        kind = spec.get("type")
        if kind not in failed:
            continue
        if kind == "json" and isinstance(spec.get("schema"), dict):
            return {"json": spec["schema"]}
        if kind == "regex" and spec.get("must_match", True) and not spec.get("ignore_case"):
            return {"regex": _whole(spec["pattern"])}
        if kind == "numeric" and spec.get("strict"):
            return {"regex": NUMBER}
    return None


def _whole(pattern: str) -> str:
    """A search pattern as a whole-answer one: structured outputs match the entire text."""
    core = pattern.removeprefix("^").removesuffix("$")
    starts, ends = pattern.startswith("^"), pattern.endswith("$") and not pattern.endswith("\\$")
    return ("" if starts else ".*") + f"(?:{core})" + ("" if ends else ".*")


def select(
    candidates: Sequence[str], passed: Sequence[bool], checks: Sequence[dict[str, Any]]
) -> tuple[str | None, str]:
    """The candidate to answer with, and a note: among those that passed, the most common
    normalised answer (ties: the earliest); None when none passed."""
    winners = [c for c, ok in zip(candidates, passed, strict=True) if ok]
    if not winners:
        return None, f"none of {len(candidates)} candidates passed the checks"
    forms = [normalise(c, checks) for c in winners]
    best, agree = Counter(forms).most_common(1)[0]
    chosen = winners[forms.index(best)]
    return chosen, f"{len(winners)} of {len(candidates)} candidates passed; {agree} agree"
