"""Checks that apply to any answer when a task carries none: a JSON the prompt asked for
must parse, and Python code blocks must compile."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict

from reflexa.evals.json_check import NoJson, extract_json
from reflexa.evals.verdict import Verdict, VerifyContext

ASKS_FOR_JSON = re.compile(r"\bjson\b", re.IGNORECASE)
PYTHON_BLOCK = re.compile(r"```(?:python|py)\s*\n(.*?)```", re.DOTALL | re.IGNORECASE)


class JsonParsesCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["json_parses"] = "json_parses"

    async def verify(self, answer: str, ctx: VerifyContext) -> Verdict:
        try:
            extract_json(answer)
        except NoJson as e:
            return Verdict("json_parses", False, 0.0, f"The prompt asks for JSON but {e}.")
        return Verdict("json_parses", True, 1.0)


class PythonCompilesCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["python_compiles"] = "python_compiles"

    async def verify(self, answer: str, ctx: VerifyContext) -> Verdict:
        for n, block in enumerate(PYTHON_BLOCK.findall(answer), start=1):
            try:
                compile(block, f"<block {n}>", "exec")
            except (SyntaxError, ValueError) as e:
                where = f"line {e.lineno}" if isinstance(e, SyntaxError) else "somewhere"
                reason = e.args[0] if e.args else e
                feedback = f"Python code block {n} does not compile ({where}: {reason})."
                return Verdict("python_compiles", False, 0.0, feedback)
        return Verdict("python_compiles", True, 1.0)


def intrinsic_checks(prompt: str, answer: str) -> list[JsonParsesCheck | PythonCompilesCheck]:
    checks: list[JsonParsesCheck | PythonCompilesCheck] = []
    if ASKS_FOR_JSON.search(prompt):
        checks.append(JsonParsesCheck())
    if PYTHON_BLOCK.search(answer):
        checks.append(PythonCompilesCheck())
    return checks
