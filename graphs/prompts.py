"""The prompts. Small models need precise, grounded feedback: what exactly was wrong, and
what form is wanted; so the repair prompt quotes the verifiers' feedback verbatim."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

SYSTEM = (
    "You are a careful assistant. Answer exactly what is asked, in exactly the form that is "
    "asked for, with nothing extra."
)

DIAGNOSE = """A previous answer to the request below was checked and failed.

REQUEST:
{request}

ANSWER:
{answer}

CHECK RESULTS:
{feedback}

In one sentence each: what is the cause of the failure, and how should the answer be fixed?"""

REPAIR = """Your answer was checked and it is wrong.

Problems found:
{feedback}

Cause: {cause}
Fix: {fix}

Answer the original request again, correctly. Reply with only the corrected answer, in the \
requested form."""


def repair_request(verdicts: Sequence[Mapping[str, Any]], diagnosis: dict[str, Any] | None) -> str:
    """The user turn that asks for a feedback repair (and that a repair turn is trained on)."""
    d = diagnosis or {}
    return REPAIR.format(
        feedback=failure_feedback(verdicts),
        cause=d.get("cause") or "see the problems above",
        fix=d.get("fix") or "correct those problems",
    )


def failure_feedback(verdicts: Sequence[Mapping[str, Any]]) -> str:
    lines = [
        f"- {v['feedback'] or v['verifier'] + ' check failed'}"
        for v in verdicts
        if v["error"] is None and not v["passed"]
    ]
    return "\n".join(lines) or "- (no details)"
