"""A tool-grounded check for code that needs no label: the answer's own code, run on the
examples the prompt gives in doctest form (`>>> add(2, 3)`, then `5` on the next line).

Only examples that are a call of a plain name with literal arguments, and a literal result,
are used (parsed here, never run here): so what runs in the sandbox is the model's code and
those calls, never code from the prompt. The prompt already shows the expected results, so
the feedback may name them.
"""

from __future__ import annotations

import ast
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict

from reflexa.evals.python_check import CODE_BLOCK, PythonTestsCheck
from reflexa.evals.verdict import Verdict, VerifyContext

DOCTEST = re.compile(r"^[ \t]*>>>[ \t]?(?P<call>.+)\n[ \t]*(?P<out>(?!>>>)\S.*)$", re.MULTILINE)
MAX_EXAMPLES = 20
MAX_CHARS = 500  # per call or result


def stated_examples(prompt: str) -> list[tuple[str, str]]:
    """The prompt's (call, result) examples that are safe to run: `name(literals)` and a
    literal result; at most MAX_EXAMPLES."""
    found = []
    for m in DOCTEST.finditer(prompt):
        call, out = m.group("call").strip(), m.group("out").strip()
        if len(call) <= MAX_CHARS and len(out) <= MAX_CHARS and _literal_call(call):
            try:
                ast.literal_eval(out)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
            found.append((call, out))
    return found[:MAX_EXAMPLES]


def _literal_call(text: str) -> bool:
    try:
        node = ast.parse(text, mode="eval").body
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        return False
    try:
        for arg in [*node.args, *(k.value for k in node.keywords)]:
            ast.literal_eval(arg)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False
    return all(k.arg is not None for k in node.keywords)  # no **kwargs


def has_code(answer: str) -> bool:
    return bool(CODE_BLOCK.search(answer)) or bool(re.search(r"^\s*def \w+\(", answer, re.M))


class ExamplesCheck(BaseModel):
    """The answer's code gives the prompt's own examples their stated results."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["examples"] = "examples"

    async def verify(self, answer: str, ctx: VerifyContext) -> Verdict:
        examples = stated_examples(ctx.prompt)
        if not examples:
            return Verdict("examples", False, 0.0, error="the prompt gives no examples to run")
        tests = "\n".join(
            f"assert ({call}) == ({out}), {f'{call} should be {out} (the example in the prompt)'!r}"
            for call, out in examples
        )
        ran = await PythonTestsCheck(tests=tests).verify(answer, ctx)
        feedback = ran.feedback and ran.feedback.replace("The tests failed", "An example failed")
        return Verdict("examples", ran.passed, ran.score, feedback, error=ran.error)
