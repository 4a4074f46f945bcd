"""Checks in Python: a user's own check, with the contract of the built-in ones.

A check is a function (or a class) marked with `@check`:

    from reflexa.evals import Verdict, check

    @check(decides="value")
    def sql_columns(answer: str, ctx, *, columns: list[str]) -> Verdict | bool | tuple[bool, str]:
        ...

It is named in a suite or a request by its `reflexa.checks` entry-point name (as pytest and
llm find plugins: `[project.entry-points."reflexa.checks"] sql_columns =
"mypkg.checks:sql_columns"`), or by import path (`"type": "mypkg.checks:sql_columns"`); the
spec's other fields are its keyword arguments. A class is built with them and its
`verify(answer, ctx)` called. It may be sync (run in a thread) or async; it returns a
`Verdict`, a bool, or (passed, feedback). The one rule holds: a check that raises, or
returns anything else, gives an errored verdict, which never passes.

`decides`: "value" when the check tells a right answer from a wrong one (the repair router
samples candidates for it to choose among; a pass of it justifies a training row), "form"
when it only checks the shape.

A plugin is trusted code: it runs in this process, unlike model-written code, which runs
only in the sandbox. Over the HTTP API only entry-point names are accepted, never an import
path (a request must not choose what the server imports).
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, model_validator

from reflexa.evals.verdict import Verdict, VerifyContext

GROUP = "reflexa.checks"
MARK = "__reflexa_check__"
Decides = Literal["value", "form"]
F = TypeVar("F")


def check(decides: Decides = "value") -> Callable[[F], F]:
    """Mark a function or class as a Reflexa check (see the module's docstring)."""
    if decides not in ("value", "form"):
        raise ValueError(f"decides must be 'value' or 'form', not {decides!r}")

    def mark(target: F) -> F:
        setattr(target, MARK, {"decides": decides})
        return target

    return mark


class PluginError(ValueError):
    """A plugin that cannot be used; the message names it."""


def is_import_path(name: str) -> bool:
    return ":" in name


def registered() -> dict[str, str]:
    """Entry-point name → `module:attr`, for the installed plugins."""
    return {ep.name: ep.value for ep in entry_points(group=GROUP)}


@functools.cache
def resolve(name: str) -> Any:
    """The check a spec's `type` names: an entry point's, or an import path's. Raises
    PluginError in one line for a name nobody registered, an import that fails, or an object
    that is not marked with `@check`."""
    target = name if is_import_path(name) else registered().get(name)
    if target is None:
        raise PluginError(f"unknown check type {name!r}")
    module, _, attr = target.partition(":")
    try:
        found: Any = importlib.import_module(module)
        for part in attr.split("."):
            found = getattr(found, part)
    except Exception as e:  # an import runs the plugin's module: anything can go wrong
        raise PluginError(f"check plugin {name!r} ({target}) failed to load: "
                          f"{type(e).__name__}: {e}") from None  # fmt: skip
    if not isinstance(getattr(found, MARK, None), dict):
        raise PluginError(f"check plugin {name!r} ({target}) is not marked with "
                          "@reflexa.evals.check")  # fmt: skip
    return found


def decides_value(name: str) -> bool:
    try:
        return bool(getattr(resolve(name), MARK)["decides"] == "value")
    except PluginError:
        return False


class PluginCheck(BaseModel):
    """A spec naming a plugin: its `type` and its keyword arguments (the other fields)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: str

    @model_validator(mode="after")
    def _loads(self) -> PluginCheck:
        target = resolve(self.type)  # PluginError is a ValueError: a validation error
        if inspect.isclass(target):
            try:
                target(**self.params)
            except Exception as e:
                raise PluginError(f"check plugin {self.type!r}: {type(e).__name__}: {e}") from None
        return self

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    async def verify(self, answer: str, ctx: VerifyContext) -> Verdict:
        target = resolve(self.type)
        if inspect.isclass(target):
            instance: Any = target(**self.params)
            call: Callable[..., Any] = instance.verify
            args: tuple[Any, ...] = (answer, ctx)
            kwargs: dict[str, Any] = {}
        else:
            call, args, kwargs = target, (answer, ctx), self.params
        if inspect.iscoroutinefunction(call):
            got = await call(*args, **kwargs)
        else:  # a sync check may block (a database, a subprocess): not on the event loop
            got = await asyncio.to_thread(call, *args, **kwargs)
        return as_verdict(self.type, got)


def as_verdict(name: str, got: Any) -> Verdict:
    """A plugin's return as a verdict under its own name; anything unrecognised is an error."""
    if isinstance(got, Verdict):
        return Verdict(name, got.passed, got.score, got.feedback, "grounded", got.error)
    if isinstance(got, bool):
        return Verdict(name, got, float(got))
    if (
        isinstance(got, tuple)
        and len(got) == 2
        and isinstance(got[0], bool)
        and isinstance(got[1], str)
    ):
        return Verdict(name, got[0], float(got[0]), got[1])
    shown = repr(got)[:80]
    return Verdict(name, False, 0.0, kind="grounded",
                   error=f"check plugin {name!r} returned {shown}, not a verdict")  # fmt: skip
