"""Which repair can fix a failure, and the two repairs that do not rely on the model taking
its own advice (a small model does not: measured, feedback alone fixed 0 of 16 json-extract
failures).

- sample: N candidates in one request, each run through the visible checks (not the
  judge); among those that pass, the most common normalised answer is chosen. First choice
  when a tool or test decides the failure (the arithmetic tool, the prompt's examples run
  on the answer's code, python_tests, an exact value), decoded under the task's formal
  shape if it has one, so one request fixes form and value together. When only the judge
  objected, no check can tell candidates apart: self-consistency chooses (a majority of
  all candidates, else the answer stays).
- constrained: a failed visible check has a formal shape (a regex, a number, a JSON
  Schema, one of listed options); the repair decodes under vLLM's structured outputs with
  it, so that format failure cannot come back.
- feedback: the verifiers' feedback and the model's diagnosis, as a prompt.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from reflexa.evals.checks import value_deciders
from reflexa.evals.signal import normalise

Strategy = Literal["constrained", "sample", "feedback"]
NUMBER = r"-?[0-9]{1,30}(\.[0-9]{1,30})?"  # bounded: unbounded, the model wrote 512 digits


STRATEGIES: tuple[Strategy, ...] = ("constrained", "sample", "feedback")


def route(
    verdicts: Sequence[Mapping[str, Any]],
    checks: Sequence[dict[str, Any]],
    tried: Sequence[str],
    samples: int,
    allowed: Sequence[str] = STRATEGIES,
) -> tuple[Strategy, str, dict[str, Any] | None]:
    """The strategy for the failed verdicts (an allowed one, not already tried this turn),
    why, and the structured-output shape to decode under (None: free text). Feedback is
    the last resort, and always there."""
    failed = {v["verifier"] for v in verdicts if v["error"] is None and not v["passed"]}
    usable = set(allowed) - set(tried)
    can_sample = "sample" in usable and samples > 1
    if can_sample and failed & (values := value_deciders(checks)):
        shape = shape_for(checks)
        deciders = ", ".join(sorted(failed & values))
        within = f", decoded under the task's shape ({next(iter(shape))})" if shape else ""
        return "sample", f"{deciders} can check each of {samples} candidates{within}", shape
    if "constrained" in usable and (shape := shape_for(checks, failed)) is not None:
        kind = next(iter(shape))
        return "constrained", f"a failed check has a formal shape ({kind})", shape
    if can_sample:
        by = "the checks" if failed - {"judge"} else "a majority (only the judge objected)"
        return "sample", f"{samples} candidates, chosen by {by}", shape_for(checks)
    return "feedback", "no other strategy applies, or is left", None


def batches(samples: int, escalate: bool = True) -> list[int]:
    """How many candidates each request of a sampling repair draws: 2, then as many as drawn
    so far, until `samples` in all ([2, 2, 4] for 8); one request of all when not
    escalating. The repair stops at the first request with a verified candidate."""
    if not escalate or samples <= 2:
        return [samples]
    sizes = [2]
    while (drawn := sum(sizes)) < samples:
        sizes.append(min(drawn, samples - drawn))
    return sizes


def shape_for(
    checks: Sequence[dict[str, Any]], failed: set[str] | None = None
) -> dict[str, Any] | None:
    """A structured-output shape from a check (of those `failed`, if given): its JSON
    Schema, its regex (to match whole), its options, or a bare number for a strict numeric
    check."""
    for spec in checks:
        kind = spec.get("type")
        if failed is not None and kind not in failed:
            continue
        if kind == "json" and isinstance(spec.get("schema"), dict):
            return {"json": spec["schema"]}
        if kind == "regex" and spec.get("must_match", True) and not spec.get("ignore_case"):
            return {"regex": _whole(spec["pattern"], spec.get("full", False))}
        if kind == "choice" and spec.get("options"):
            return {"choice": list(spec["options"])}
        if kind == "numeric" and spec.get("strict"):
            return {"regex": NUMBER}
    return None


def _whole(pattern: str, full: bool = False) -> str:
    """A search pattern as a whole-answer one: structured outputs match the entire text."""
    core = pattern.removeprefix("^").removesuffix("$")
    starts = full or pattern.startswith("^")
    ends = full or (pattern.endswith("$") and not pattern.endswith("\\$"))
    return ("" if starts else ".*") + f"(?:{core})" + ("" if ends else ".*")


def select(
    candidates: Sequence[str], passed: Sequence[bool | None], checks: Sequence[dict[str, Any]]
) -> tuple[str | None, str]:
    """The candidate to answer with, and a note. Among those that passed, the most common
    normalised answer (ties: the earliest). When no check could judge them (every `passed`
    is None), the answer at least half the candidates agree on and no other ties; else None
    (the answer stays)."""
    n = len(candidates)
    if n and all(ok is None for ok in passed):
        forms = [normalise(c, checks) for c in candidates]
        ranked = Counter(forms).most_common(2)
        best, agree = ranked[0]
        if 2 * agree < n or (len(ranked) > 1 and ranked[1][1] == agree):
            return None, f"no check decides, and no majority among {n} candidates ({agree} agree)"
        return candidates[forms.index(best)], f"no check decides; {agree} of {n} candidates agree"
    winners = [c for c, ok in zip(candidates, passed, strict=True) if ok]
    if not winners:
        return None, f"none of {n} candidates passed the checks"
    forms = [normalise(c, checks) for c in winners]
    best, agree = Counter(forms).most_common(1)[0]
    chosen = winners[forms.index(best)]
    return chosen, f"{len(winners)} of {n} candidates passed; {agree} agree"
