"""JSON Schema validation whose patterns run with a time limit.

A schema comes from a request or a suite, so its `pattern`s are untrusted: jsonschema runs
them with Python's `re`, where `(a+)+$` on a long key backtracks for minutes and holds the
GIL. These keywords use the `regex` package instead, with a timeout, releasing the GIL.
`unevaluatedProperties` beside `patternProperties` is refused: jsonschema matches those
patterns itself, with no limit.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jsonschema
import regex
from jsonschema import ValidationError
from jsonschema.protocols import Validator

from reflexa.evals.match_checks import REGEX_S


class PatternTooSlow(Exception):
    def __init__(self, pattern: str) -> None:
        super().__init__(f"the schema's pattern {pattern!r} took over {REGEX_S:g} s")


def _search(pattern: str, text: str) -> bool:
    try:
        return regex.search(pattern, text, concurrent=True, timeout=REGEX_S) is not None
    except TimeoutError:
        raise PatternTooSlow(pattern) from None


def _pattern(validator: Validator, pattern: str, instance: Any, _: Any) -> Iterator[Any]:
    if validator.is_type(instance, "string") and not _search(pattern, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Validator, patterns: dict[str, Any], instance: Any, _: Any
) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if _search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(
    validator: Validator, additional: Any, instance: Any, schema: dict[str, Any]
) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    named, patterns = schema.get("properties", {}), schema.get("patternProperties", {})
    extras = [
        key
        for key in instance
        if key not in named and not any(_search(pattern, key) for pattern in patterns)
    ]
    if validator.is_type(additional, "object"):
        for key in extras:
            yield from validator.descend(instance[key], additional, path=key)
    elif additional is False and extras:
        listed = ", ".join(map(repr, sorted(extras)))
        verb = "was" if len(extras) == 1 else "were"
        yield ValidationError(f"Additional properties are not allowed ({listed} {verb} unexpected)")


TimedValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    {
        "pattern": _pattern,
        "patternProperties": _pattern_properties,
        "additionalProperties": _additional_properties,
    },
)


def check_schema(schema: dict[str, Any]) -> None:
    """Raise ValueError for a schema that is invalid or that we cannot run safely."""
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as e:
        raise ValueError(f"invalid JSON Schema: {e.message}") from None
    if _uses(schema, "unevaluatedProperties") and _uses(schema, "patternProperties"):
        raise ValueError("unevaluatedProperties with patternProperties is not supported")


def _uses(schema: Any, keyword: str) -> bool:
    if isinstance(schema, dict):
        return keyword in schema or any(_uses(v, keyword) for v in schema.values())
    return isinstance(schema, list) and any(_uses(v, keyword) for v in schema)


def schema_errors(value: Any, schema: dict[str, Any], limit: int = 3) -> list[str]:
    """Up to `limit` errors, in document order; PatternTooSlow if a pattern ran too long."""
    errors = sorted(TimedValidator(schema).iter_errors(value), key=lambda e: list(e.absolute_path))
    return [f"at {e.json_path}: {e.message}" for e in errors[:limit]]
