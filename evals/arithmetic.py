"""A tool-grounded check that needs no label: an arithmetic expression the prompt asks about
("What is 34 + 41?", "Compute (12 - 4) * 3"), evaluated exactly, against the answer's number.

The prompt is the evidence, as a calculator would use it: the check never sees a suite's
gold, and its feedback names the expression, never its value (the repair must find it).
"""

from __future__ import annotations

import ast
import re
from fractions import Fraction
from typing import Literal

from pydantic import BaseModel, ConfigDict

from reflexa.evals.match_checks import NUMBER
from reflexa.evals.verdict import Verdict, VerifyContext

TIMES, DIVIDED = "\u00d7", "\u00f7"  # the signs people write besides * and /
EXPRESSION = rf"(?P<expr>[-(\d][\d\s.,+\-*/{TIMES}{DIVIDED}()]*[\d)])"
# A cue that the prompt asks for a value, then the expression; or the expression, then "=".
ASKED = re.compile(
    r"(?:what\s+is|what's|compute|calculate|evaluate|how\s+much\s+is|solve)\s*:?\s*" + EXPRESSION,
    re.IGNORECASE,
)
TRAILING_EQUALS = re.compile(EXPRESSION + r"\s*=\s*\??\s*$")
OPERATORS = {ast.Add: Fraction.__add__, ast.Sub: Fraction.__sub__,
             ast.Mult: Fraction.__mul__, ast.Div: Fraction.__truediv__}  # fmt: skip
MAX_DIGITS = 30  # bigger numbers are not chat arithmetic
DATE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}|\d{1,2}/\d{1,2}/\d{2,4}")  # not a - b - c, a / b / c


def stated_expression(prompt: str) -> str | None:
    """The one arithmetic expression `prompt` asks to evaluate, or None (none, several, or
    only a bare number)."""
    found = {m.group("expr").strip() for m in ASKED.finditer(prompt)}
    found |= {m.group("expr").strip() for m in TRAILING_EQUALS.finditer(prompt.strip())}
    exprs = {e for e in found if not DATE.fullmatch(e) and evaluate(e) is not None}
    return exprs.pop() if len(exprs) == 1 else None


def evaluate(expression: str) -> Fraction | None:
    """The exact value of `expression` (+, -, times, divided by, brackets, over decimal
    numbers), or None if it is not one (a bare number, a division by zero)."""
    text = expression.replace(TIMES, "*").replace(DIVIDED, "/").replace(",", "")
    if len(text) > 200:
        return None
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError:
        return None
    if not isinstance(tree, ast.BinOp):
        return None
    try:
        return _value(tree)
    except (ValueError, ZeroDivisionError):
        return None


def _value(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        if isinstance(node.value, bool) or len(str(node.value)) > MAX_DIGITS:
            raise ValueError("not a number for arithmetic")
        return Fraction(str(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _value(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
        return OPERATORS[type(node.op)](_value(node.left), _value(node.right))
    raise ValueError("not arithmetic")


class ArithmeticCheck(BaseModel):
    """The answer's number (its last, or its only) equals the value of the arithmetic
    expression the prompt asks about, evaluated exactly."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["arithmetic"] = "arithmetic"

    async def verify(self, answer: str, ctx: VerifyContext) -> Verdict:
        expression = stated_expression(ctx.prompt)
        value = evaluate(expression) if expression else None
        if expression is None or value is None:
            return Verdict("arithmetic", False, 0.0, error="the prompt states no expression")
        found = NUMBER.findall(answer)
        if not found:
            return Verdict("arithmetic", False, 0.0, f"The answer has no number for {expression}.")
        # Exactly, from the text: a 500-digit answer is a wrong number, not a float overflow.
        got = Fraction(found[-1].replace(",", ""))
        scale = max(Fraction(1), abs(value))
        if abs(got - value) <= scale / 10**6:  # "0.333333" is 1/3
            return Verdict("arithmetic", True, 1.0)
        shown = found[-1] if len(found[-1]) <= 24 else found[-1][:20] + "…"
        return Verdict(
            "arithmetic", False, 0.0,
            f"{shown} is not the value of {expression} (checked by evaluating it exactly).",
        )  # fmt: skip
