"""Python answers: run the code the model wrote, with the task's tests, in the sandbox."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from reflexa.evals.sandbox import SandboxLimits, SandboxResult, run_python
from reflexa.evals.verdict import Verdict, VerifyContext

CODE_BLOCK = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.DOTALL | re.IGNORECASE)
FEEDBACK_LINES = 12


def extract_code(answer: str) -> str:
    """The fenced code blocks of an answer, joined; the whole answer if it has none."""
    blocks = CODE_BLOCK.findall(answer)
    return "\n\n".join(blocks) if blocks else answer


class PythonTestsCheck(BaseModel):
    """The answer's code, then `tests`, runs in the sandbox, and the tests reach their end
    (the harness proves it with a per-run token: exiting early is failing)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["python_tests"] = "python_tests"
    tests: str = Field(description="Python appended after the answer's code: asserts, a check().")
    prefix: str = Field(default="", description="Python placed before the answer's code.")
    timeout_s: float = Field(default=10.0, gt=0, le=120)
    memory_mb: int = Field(default=512, ge=64, le=4096)

    async def verify(self, answer: str, ctx: VerifyContext) -> Verdict:
        limits = SandboxLimits(
            wall_s=self.timeout_s, cpu_s=int(self.timeout_s) + 1, memory_mb=self.memory_mb
        )
        result = await run_python(
            extract_code(answer),
            limits,
            prefix=self.prefix,
            tests=self.tests,
            allow_unconfined=ctx.allow_unconfined,
        )
        if result.ok:
            return Verdict("python_tests", True, 1.0)
        return Verdict("python_tests", False, 0.0, describe_failure(result, self.timeout_s))


def describe_failure(result: SandboxResult, timeout_s: float) -> str:
    if result.timed_out or result.exit_code in (-9, -24):
        return f"The code did not finish within {timeout_s:g} s (an infinite loop?)."
    if result.exit_code == -25:
        return "The code wrote too much data to a file."
    if result.exit_code == 0:  # a clean exit without the harness's token: left early
        return "The code exited before the tests ran to their end."
    # Drop the sandbox's own bootstrap frames; keep the end, where the error is.
    lines = [line for line in result.stderr.splitlines() if 'File "<string>"' not in line]
    tail = "\n".join(lines[-FEEDBACK_LINES:]) or f"exit status {result.exit_code}"
    return f"The tests failed:\n{tail}"
