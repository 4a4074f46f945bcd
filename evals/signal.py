"""What may justify learning from an answer (a training row, a memory), and self-consistency.

Justifications, strongest first:
  user         a person gave the answer
  gold         the item's scoring spelled it out, where gold may be learnt from
  consistency  the visible checks passed it and enough samples of the model agree with it
  checks       the visible grounded checks passed it, one of them deciding its value (a tool
               that computes a stated sum, tests that run the code, an expected value)
  form         the visible checks passed it, but they check its form alone (a schema
               without values, a format): no evidence of the values, so it admits a row or
               a memory only where its precision was measured and found high (a suite's
               dev split, `trainers.admission`)
Only `gold` needs a label. Scoring may still say, after the fact, whether a row admitted by
the others was right: that is each justification's precision, measured; it selects only
through that measurement, on held-out items, never row by row.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from reflexa.evals.checks import checks_values, parse_checks, tool_checks
from reflexa.evals.json_check import NoJson, extract_json
from reflexa.evals.match_checks import numbers_in
from reflexa.evals.verdict import grounded

JUSTIFICATIONS = ("user", "gold", "consistency", "checks", "form", "rehearsal")
ADMITTED = ("user", "gold", "consistency", "checks")  # by default; `form` where measured


def by_checks(checks: Sequence[dict[str, Any]], prompt: str, answer: str) -> str:
    """What justifies an answer that the visible grounded `checks` passed: `checks` where
    one of them, or a tool that applies to it, decides its value; else `form`."""
    parsed = parse_checks(grounded(checks))
    return "checks" if checks_values(parsed) or tool_checks(prompt, answer, parsed) else "form"


def justification_of(source: str) -> str:
    """The justification a correction has by its source alone (before self-consistency)."""
    return source if source in ("user", "gold") else "checks"


def normalise(answer: str, checks: Sequence[dict[str, Any]]) -> str:
    """The answer's canonical form for voting, by what the checks expect: a number, a JSON
    value (keys sorted), else the text with case and runs of whitespace folded."""
    types = {c.get("type") for c in checks}
    if "numeric" in types and (found := numbers_in(answer)):
        value = found[-1]
        return str(int(value)) if value.is_integer() else repr(value)
    if "json" in types or "json_parses" in types:
        try:
            return json.dumps(extract_json(answer), sort_keys=True, ensure_ascii=False)
        except NoJson:
            pass
    return " ".join(answer.lower().split()).strip(" .")


@dataclass(frozen=True)
class Vote:
    """The answer self-consistency picks, and how many of the answers agree with it."""

    answer: str
    agree: int
    total: int
    greedy: bool  # the picked answer is the model's own first (greedy) answer


def vote(
    greedy: str,
    samples: Sequence[str],
    checks: Sequence[dict[str, Any]],
    passes: Sequence[bool],
    min_greedy: int = 3,
    min_majority: int = 5,
) -> Vote | None:
    """Self-consistency over the greedy answer and `samples` (`passes[i]`: the visible
    checks passed answer i, greedy first). The greedy answer when it passes and at least
    `min_greedy` answers agree with it; else the largest agreeing group with a passing
    member, when it has at least `min_majority`; else None."""
    answers = [greedy, *samples]
    forms = [normalise(a, checks) for a in answers]
    counts = Counter(forms)
    if passes[0] and counts[forms[0]] >= min_greedy:
        return Vote(greedy, counts[forms[0]], len(answers), greedy=True)
    for form, n in counts.most_common():
        if n < min_majority:
            break
        passing = [a for a, f, ok in zip(answers, forms, passes, strict=True) if f == form and ok]
        if passing:
            return Vote(passing[0], n, len(answers), greedy=form == forms[0])
    return None
