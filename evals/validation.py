"""A validation error (pydantic's, or FastAPI's request error) as one line a person can act on."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol


class Invalid(Protocol):
    def errors(self) -> Sequence[Mapping[str, Any]]: ...


def error_line(e: Invalid, skip: Collection[str | int] = (), count: bool = False) -> str:
    """`where: what` for the first error; `skip`: location parts not worth naming (a request's
    `body`); `count`: say how many more errors there are."""
    errors = e.errors()
    err = errors[0]
    where = ".".join(str(p) for p in err["loc"] if p not in skip)
    line = f"{where}: " if where else ""
    line += str(err["msg"]).removeprefix("Value error, ")
    more = len(errors) - 1
    return line + (f" (and {more} more)" if count and more else "")
