"""JSON answers: parse (from a bare reply or a fenced block), then check a JSON Schema."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from reflexa.evals.json_schema import PatternTooSlow, check_schema, schema_errors
from reflexa.evals.verdict import Verdict, VerifyContext

FENCE = re.compile(r"```(?:json)?\s*\n(.*?)```", re.DOTALL | re.IGNORECASE)


class NoJson(ValueError):
    pass


def extract_json(text: str, strict: bool = False) -> Any:
    """The JSON value in `text`: the whole reply or a fenced block, or (unless strict) the
    first object or array inside other text. Strict: the reply is the JSON alone (bare, or
    one fenced block). Fails with the parser's own complaint, which says exactly where the
    JSON breaks."""
    text = text.strip()
    if (fenced := FENCE.search(text)) and (not strict or fenced.group(0) == text):
        text = fenced.group(1).strip()
    try:
        return json.loads(text)
    except ValueError as e:
        first_error = e
    starts = [i for i, c in enumerate(text) if c in "{["]
    decoder = json.JSONDecoder()
    for n, start in enumerate(starts):
        try:
            value = decoder.raw_decode(text, start)[0]
        except ValueError as e:
            if n == 0 and start > 0:
                first_error = e
            continue
        if strict:
            raise NoJson("the reply must be the JSON alone, with no text around it")
        return value
    if not starts:
        raise NoJson("the reply contains no JSON object or array")
    raise NoJson(f"the JSON is invalid: {first_error}")


class JsonCheck(BaseModel):
    """The answer is JSON, valid against `schema` and, if given, equal to `expected`.

    strict: the reply is the JSON alone (bare, or one fenced block), not text that contains
    some; the default when a schema is given, since an object of that shape was asked for.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    type: Literal["json"] = "json"
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    expected: Any = None
    strict: bool | None = None

    @field_validator("json_schema")
    @classmethod
    def _valid_schema(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        if schema is not None:
            check_schema(schema)
        return schema

    async def verify(self, answer: str, ctx: VerifyContext) -> Verdict:
        try:
            strict = self.strict if self.strict is not None else self.json_schema is not None
            value = extract_json(answer, strict)
        except NoJson as e:
            return Verdict("json", False, 0.0, f"Reply with valid JSON: {e}.")
        errors = []
        if self.json_schema is not None:
            try:  # off the event loop: a big answer takes a while, and patterns up to 1 s each
                errors = await asyncio.to_thread(schema_errors, value, self.json_schema)
            except PatternTooSlow as e:
                return Verdict("json", False, 0.0, error=f"{e} on this answer")
        if errors:
            return Verdict(
                "json", False, 0.3, "The JSON does not fit the schema: " + "; ".join(errors)
            )
        if self.expected is not None and value != self.expected:
            return Verdict("json", False, 0.5, _difference(value, self.expected))
        return Verdict("json", True, 1.0)


def _difference(value: Any, expected: Any) -> str:
    """Where the JSON is wrong, without giving the right values away."""
    if isinstance(value, dict) and isinstance(expected, dict):
        wrong = [k for k in expected if k in value and value[k] != expected[k]]
        missing = [k for k in expected if k not in value]
        extra = [k for k in value if k not in expected]
        parts = [
            f"wrong value for {', '.join(map(repr, wrong))}" if wrong else "",
            f"missing {', '.join(map(repr, missing))}" if missing else "",
            f"unexpected {', '.join(map(repr, extra))}" if extra else "",
        ]
        return "The JSON is not right: " + "; ".join(p for p in parts if p) + "."
    return "The JSON value is not right."
