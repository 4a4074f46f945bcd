"""Check specs (as written in suites and task requests) and running them on an answer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Annotated, Any

from opentelemetry import trace
from pydantic import Discriminator, Tag, TypeAdapter, ValidationError

from reflexa.evals.arithmetic import ArithmeticCheck, stated_expression
from reflexa.evals.examples import ExamplesCheck, has_code, stated_examples
from reflexa.evals.intrinsic import JsonParsesCheck, PythonCompilesCheck, intrinsic_checks
from reflexa.evals.json_check import JsonCheck
from reflexa.evals.judge import JudgeCheck
from reflexa.evals.match_checks import ChoiceCheck, ExactCheck, NumericCheck, RegexCheck
from reflexa.evals.plugins import PluginCheck, decides_value
from reflexa.evals.python_check import PythonTestsCheck
from reflexa.evals.validation import error_line
from reflexa.evals.verdict import Kind, Verdict, VerifyContext

CHECK_TYPES = ("exact", "choice", "numeric", "regex", "json", "python_tests", "judge",
               "arithmetic", "examples")  # fmt: skip
PLUGIN = "plugin"  # any other type names a check plugin (evals/plugins.py)


def _tag(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if kind in BUILT_IN else PLUGIN


Check = Annotated[
    Annotated[ExactCheck, Tag("exact")]
    | Annotated[ChoiceCheck, Tag("choice")]
    | Annotated[NumericCheck, Tag("numeric")]
    | Annotated[RegexCheck, Tag("regex")]
    | Annotated[JsonCheck, Tag("json")]
    | Annotated[PythonTestsCheck, Tag("python_tests")]
    | Annotated[JudgeCheck, Tag("judge")]
    | Annotated[JsonParsesCheck, Tag("json_parses")]
    | Annotated[PythonCompilesCheck, Tag("python_compiles")]
    | Annotated[ArithmeticCheck, Tag("arithmetic")]
    | Annotated[ExamplesCheck, Tag("examples")]
    | Annotated[PluginCheck, Tag(PLUGIN)],
    Discriminator(_tag),
]
BUILT_IN = frozenset({*CHECK_TYPES, "json_parses", "python_compiles"})
CHECKS: TypeAdapter[list[Check]] = TypeAdapter(list[Check])


class CheckSpecError(ValueError):
    """A check spec that does not validate; the message names the check and field."""


def parse_checks(specs: Sequence[dict[str, Any]]) -> list[Check]:
    try:
        return CHECKS.validate_python(list(specs))
    except ValidationError as e:
        raise CheckSpecError(f"checks.{describe_validation_error(e)}") from None


def describe_validation_error(e: ValidationError) -> str:
    """`where: what` for the first error, in words a suite author can act on."""
    line = error_line(e, skip={PLUGIN})
    if "unknown check type" in line:
        line += (f"; known: {', '.join(CHECK_TYPES)}, or a check plugin's name (an entry point "
                 "in 'reflexa.checks') or import path (module:function)")  # fmt: skip
    return line


# The check types that decide an answer's value (a tool, tests, an exact answer), not its form
# alone; a numeric or json check does too when it carries an `expected` value (scoring).
VALUE_TYPES = frozenset({"exact", "python_tests", "arithmetic", "examples"})


def checks_values(checks: Sequence[Check]) -> bool:
    """Some check among `checks` decides the answer's value; else only its form is checked."""
    return any(
        c.type in VALUE_TYPES
        or (isinstance(c, NumericCheck | JsonCheck) and c.expected is not None)
        or (isinstance(c, PluginCheck) and decides_value(c.type))
        for c in checks
    )


def value_deciders(specs: Sequence[dict[str, Any]]) -> frozenset[str]:
    """The verifier names that decide an answer's value among those `specs` may produce: the
    built-in ones, and each plugin that says it decides the value."""
    plugins = {str(s.get("type")) for s in specs if s.get("type") not in BUILT_IN}
    return VALUE_TYPES | {name for name in plugins if decides_value(name)}


GOLD_TYPES = ("exact", "numeric", "json")  # the check types that can carry an `expected` value
FORM_ONLY = {"numeric": ("expected", "tolerance"), "json": ("expected",)}  # left visible


def split_gold(
    specs: Sequence[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(visible, scoring): a check that carries an `expected` value is gold, so it moves to
    scoring; what it says about form (a number alone, JSON of a schema) stays visible."""
    visible: list[dict[str, Any]] = []
    scoring: list[dict[str, Any]] = []
    for spec in specs:
        if not _is_gold(spec):
            visible.append(dict(spec))
            continue
        scoring.append(dict(spec))
        if spec["type"] in FORM_ONLY:
            visible.append({k: v for k, v in spec.items() if k not in FORM_ONLY[spec["type"]]})
    return visible, scoring


def carries_gold(specs: Sequence[dict[str, Any]]) -> bool:
    return any(_is_gold(s) for s in specs)


def _is_gold(spec: dict[str, Any]) -> bool:
    return spec.get("type") in GOLD_TYPES and spec.get("expected") is not None


def checks_for(
    prompt: str, answer: str, task_checks: Sequence[Check], judge: bool = True
) -> list[Check]:
    """The task's own checks; with none, the judge (if there is one) plus the intrinsic
    checks that apply. Either way, the tool-grounded checks that apply and the task has not
    got: arithmetic, when the prompt asks for the value of an expression; examples, when it
    gives doctest examples, the answer has code and the task has no tests. May be empty:
    then nothing checks the answer."""
    tools = tool_checks(prompt, answer, task_checks)
    if task_checks:
        return [*task_checks, *tools]
    return [*([JudgeCheck()] if judge else []), *intrinsic_checks(prompt, answer), *tools]


def tool_checks(prompt: str, answer: str, task_checks: Sequence[Check]) -> list[Check]:
    """The tool-grounded checks that apply and the task has not got (see `checks_for`)."""
    has = {c.type for c in task_checks}
    tools: list[Check] = []
    if "arithmetic" not in has and stated_expression(prompt):
        tools.append(ArithmeticCheck())
    code_checked = has & {"examples", "python_tests"}
    if not code_checked and has_code(answer) and stated_examples(prompt):
        tools.append(ExamplesCheck())
    return tools


async def run_checks(checks: Sequence[Check], answer: str, ctx: VerifyContext) -> list[Verdict]:
    """Every check's verdict. A check that raises gives a verdict with `error` set."""
    return list(await asyncio.gather(*(_safe(check, answer, ctx) for check in checks)))


async def _safe(check: Check, answer: str, ctx: VerifyContext) -> Verdict:
    kind: Kind = "judge" if check.type == "judge" else "grounded"
    with trace.get_tracer("reflexa").start_as_current_span(f"reflexa.check {check.type}") as span:
        try:
            verdict = await check.verify(answer, ctx)
        except Exception as e:
            verdict = Verdict(check.type, False, 0.0, kind=kind, error=f"{type(e).__name__}: {e}")
        span.set_attributes({"reflexa.check.type": check.type, "reflexa.check.kind": kind,
                             "reflexa.check.passed": verdict.passed,
                             "reflexa.check.score": verdict.score})  # fmt: skip
        if verdict.error is not None:
            span.set_attribute("reflexa.check.error", verdict.error)
        return verdict
