"""Deterministic answer checks: exact or normalised match, numbers with a tolerance, regex."""

from __future__ import annotations

import asyncio
import re
import string
from typing import Annotated, Literal

import regex  # `re` with a timeout
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from reflexa.evals.verdict import Verdict, VerifyContext

REGEX_S = 1.0  # the longest a user's pattern may run on one answer
NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?")


def normalize(text: str) -> str:
    """Case, surrounding punctuation and quotes, and runs of whitespace do not matter."""
    text = " ".join(text.lower().split())
    return text.strip(string.punctuation + " \u201c\u201d\u2018\u2019")  # and curly quotes


def numbers_in(text: str) -> list[float]:
    return [float(m.replace(",", "")) for m in NUMBER.findall(text)]


class ExactCheck(BaseModel):
    """The answer equals `expected` (after normalisation unless `normalize` is false)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["exact"] = "exact"
    expected: str
    normalize: bool = True

    async def verify(self, answer: str, ctx: VerifyContext) -> Verdict:
        got, want = (normalize(answer), normalize(self.expected)) if self.normalize else (
            answer.strip(), self.expected.strip())  # fmt: skip
        if got == want:
            return Verdict("exact", True, 1.0)
        if want and want in got:
            feedback = "The right answer is in there, but the reply must be only the answer."
        else:
            feedback = "The answer is not correct."
        return Verdict("exact", False, 0.0, feedback)


class ChoiceCheck(BaseModel):
    """The answer is one of `options` (after normalisation): a form, like "A, B, C or D",
    which the loop may see; which option is right is an `exact` check's (gold)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["choice"] = "choice"
    options: list[Annotated[str, StringConstraints(min_length=1, max_length=200)]] = Field(
        min_length=1, max_length=100
    )

    async def verify(self, answer: str, ctx: VerifyContext) -> Verdict:
        if normalize(answer) in {normalize(o) for o in self.options}:
            return Verdict("choice", True, 1.0)
        listed = ", ".join(repr(o) for o in self.options[:20])
        return Verdict("choice", False, 0.0, f"The answer must be exactly one of: {listed}.")


class NumericCheck(BaseModel):
    """The answer's number equals `expected` within `tolerance`; without `expected`, the
    answer is a number (a check of form, which the loop may see).

    strict: the whole answer must be the number; otherwise its last number counts.
    """

    model_config = ConfigDict(extra="forbid")
    type: Literal["numeric"] = "numeric"
    expected: float | None = None
    tolerance: float = Field(default=0.0, ge=0)
    strict: bool = False

    async def verify(self, answer: str, ctx: VerifyContext) -> Verdict:
        found = numbers_in(answer)
        if not found:
            return Verdict(
                "numeric", False, 0.0, "The answer contains no number; reply with a number."
            )
        value = found[-1]
        only_number = NUMBER.fullmatch(answer.strip().rstrip(".")) is not None
        if self.expected is None:
            if only_number or not self.strict:
                return Verdict("numeric", True, 1.0)
            return Verdict("numeric", False, 0.5, "Reply with only the number, nothing else.")
        right = abs(value - self.expected) <= self.tolerance
        if right and (only_number or not self.strict):
            return Verdict("numeric", True, 1.0)
        if right:
            return Verdict(
                "numeric", False, 0.5, "The number is right, but reply with only the number."
            )
        return Verdict("numeric", False, 0.0, f"{_fmt(value)} is not the correct number.")


def _fmt(value: float) -> str:
    return str(int(value)) if value.is_integer() else str(value)


class RegexCheck(BaseModel):
    """The answer matches (or, with `must_match` false, does not match) `pattern`."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["regex"] = "regex"
    pattern: str
    must_match: bool = True
    full: bool = False
    ignore_case: bool = False
    description: str | None = Field(default=None, description="Shown to the model on failure.")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            regex.compile(pattern)
        except regex.error as e:
            raise ValueError(f"invalid regular expression: {e}") from None
        return pattern

    async def verify(self, answer: str, ctx: VerifyContext) -> Verdict:
        flags = regex.IGNORECASE if self.ignore_case else 0
        text = answer.strip()
        find = regex.fullmatch if self.full else regex.search
        try:  # a pattern from a request or a suite may backtrack for ever: bounded, off the loop
            match = await asyncio.to_thread(
                find, self.pattern, text, flags, concurrent=True, timeout=REGEX_S
            )
        except TimeoutError:
            return Verdict("regex", False, 0.0, kind="grounded",
                           error=f"the pattern took over {REGEX_S:g} s on this answer")  # fmt: skip
        if (match is not None) == self.must_match:
            return Verdict("regex", True, 1.0)
        rule = self.description or (
            f"{'match' if self.must_match else 'not match'} the pattern {self.pattern!r}"
        )
        return Verdict("regex", False, 0.0, f"The answer must {rule}.")
