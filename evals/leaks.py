"""Visible checks that state the answer: what the loop sees must not give gold away.

A check the model sees (in its feedback, as a shape its repair decodes under) is evidence of
form; a check that only one answer can pass is the answer itself, and belongs in `scoring`.
Refused in `checks`: a regex that can only match one literal text (`^blue\\.?$`, `Tokyo`), a
JSON Schema `const` or single-value `enum`, a `choice` of one option. A regex of many
literal texts (`^(yes|no)$`), many-value enums and formats stay visible: they say what form
an answer takes, not which one is right.
"""

from __future__ import annotations

import re
import re._constants as sre
import re._parser as sre_parse
from collections.abc import Iterator, Sequence
from typing import Any

from reflexa.evals.json_check import JsonCheck
from reflexa.evals.match_checks import ChoiceCheck, RegexCheck, normalize

TEXTS = 32  # a pattern that can match more literal texts than this is a form
REPEATS = 8  # a bounded repeat up to this many times is spelled out; beyond, a form
# JSON Schema keywords whose value is a schema, a list of schemas, or a map of names to schemas.
ONE_SCHEMA = ("items", "additionalProperties", "not", "if", "then", "else", "contains",
              "propertyNames", "unevaluatedProperties", "unevaluatedItems",
              "additionalItems")  # fmt: skip
SCHEMA_LIST = ("allOf", "anyOf", "oneOf", "prefixItems", "items")
SCHEMA_MAP = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")


def stated_answer(check: Any) -> str | None:
    """What gives the answer away in a visible check, in words; None when it states none."""
    if isinstance(check, RegexCheck) and check.must_match:
        texts = literal_texts(check.pattern)
        answers = {normalize(t) for t in texts or ()} - {""}
        if texts is not None and len(answers) == 1:
            return f"its pattern {check.pattern!r} matches only the text {answers.pop()!r}"
    if isinstance(check, JsonCheck) and check.json_schema is not None:
        return next(_schema_answers(check.json_schema, "schema"), None)
    if isinstance(check, ChoiceCheck) and len({normalize(o) for o in check.options}) == 1:
        return f"its one option is {check.options[0]!r}"
    return None


def stated_answers(checks: Sequence[Any]) -> list[str]:
    """`checks.N: …` for each visible check that states the answer, with the move to make."""
    return [
        f"checks.{i}: the {check.type} check states the answer ({why}), which the model "
        "would see; put it under `scoring`"
        for i, check in enumerate(checks)
        if (why := stated_answer(check)) is not None
    ]


def literal_texts(pattern: str) -> set[str] | None:
    """The texts `pattern` can match when they are a few literal ones (anchors, optional
    parts, alternatives, small classes and bounded repeats spelled out); None when it matches
    open-ended text, or uses syntax Python's `re` does not parse (not judged here)."""
    try:
        return _texts(sre_parse.parse(pattern))
    except (re.error, RecursionError, OverflowError):
        return None


def _texts(items: Any) -> set[str] | None:
    texts = {""}
    for op, arg in items:
        options = _options(op, arg)
        if options is None:
            return None
        texts = {a + b for a in texts for b in options}
        if len(texts) > TEXTS:
            return None
    return texts


def _options(op: Any, arg: Any) -> set[str] | None:
    if op is sre.LITERAL:
        return {chr(arg)}
    if op is sre.AT:
        return {""}
    if op is sre.SUBPATTERN:
        return _texts(arg[-1])
    if op is sre.BRANCH:
        found: set[str] = set()
        for branch in arg[1]:
            texts = _texts(branch)
            if texts is None:
                return None
            found |= texts
        return found
    if op is sre.IN:
        return _class(arg)
    if op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
        low, high, sub = arg
        part = _texts(sub)
        if part is None or high is sre.MAXREPEAT or high > REPEATS:
            return None
        out: set[str] = set()
        for n in range(low, high + 1):
            texts = {""}
            for _ in range(n):
                texts = {a + b for a in texts for b in part}
                if len(texts) > TEXTS:
                    return None
            out |= texts
        return out
    return None  # any character, a category (\d, \w), a lookaround, a backreference


def _class(items: Any) -> set[str] | None:
    chars: set[str] = set()
    for op, arg in items:
        if op is sre.LITERAL:
            chars.add(chr(arg))
        elif op is sre.RANGE and arg[1] - arg[0] < TEXTS:
            chars |= {chr(c) for c in range(arg[0], arg[1] + 1)}
        else:  # a negated class, a category, a wide range
            return None
    return chars if len(chars) <= TEXTS else None


def _schema_answers(schema: Any, where: str) -> Iterator[str]:
    """Where a JSON Schema (or a part of it) admits one value only."""
    if not isinstance(schema, dict):
        return
    if "const" in schema:
        yield f"{where} has const {schema['const']!r}"
    enum = schema.get("enum")
    if isinstance(enum, list) and len(enum) == 1:
        yield f"{where} has a single-value enum {enum!r}"
    for key in ONE_SCHEMA:
        yield from _schema_answers(schema.get(key), f"{where}.{key}")
    for key in SCHEMA_LIST:
        if isinstance(schema.get(key), list):
            for i, sub in enumerate(schema[key]):
                yield from _schema_answers(sub, f"{where}.{key}.{i}")
    for key in SCHEMA_MAP:
        if isinstance(schema.get(key), dict):
            for name, sub in schema[key].items():
                yield from _schema_answers(sub, f"{where}.{key}.{name}")
