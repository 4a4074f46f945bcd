"""An LLM judge: a rubric, the model's structured verdict (vLLM's guided JSON)."""

from __future__ import annotations

from typing import Literal

from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel, ConfigDict, Field

from reflexa.evals.verdict import JudgeFn, JudgeResult, Verdict, VerifyContext

DEFAULT_RUBRIC = (
    "The answer responds to the request, is correct, and follows every instruction about its "
    "form (length, format, language)."
)


class JudgeCheck(BaseModel):
    """The model itself grades the answer against `rubric`. Its verdicts are marked `judge`:
    self-critique alone can make answers worse, so they are never counted as grounded."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["judge"] = "judge"
    rubric: str = DEFAULT_RUBRIC

    async def verify(self, answer: str, ctx: VerifyContext) -> Verdict:
        if ctx.judge is None:
            raise RuntimeError("no judge model is configured")
        result = await ctx.judge(ctx.prompt, answer, self.rubric)
        # The explicit verdict decides; the score is kept for reports. (A small model's
        # scores contradict its verdicts often enough that a threshold would be noise.)
        return Verdict("judge", result.passed, result.score, result.feedback, kind="judge")


class JudgeOutput(BaseModel):
    """The judge's reply, enforced by guided decoding."""

    # The verdict comes first and the free text is capped: a small model otherwise rambles
    # in the string until it runs out of tokens.
    passed: bool
    score: int = Field(ge=0, le=10, description="0 = useless, 10 = perfect.")
    problems: str = Field(max_length=240, description="What is wrong; empty if nothing.")


def make_judge(chat_model: BaseChatModel) -> JudgeFn:
    structured = chat_model.with_structured_output(JudgeOutput, method="json_schema")

    async def judge(prompt: str, answer: str, rubric: str) -> JudgeResult:
        out = await structured.ainvoke(
            [
                ("system", JUDGE_SYSTEM),
                ("user", JUDGE_USER.format(prompt=prompt, answer=answer, rubric=rubric)),
            ]
        )
        assert isinstance(out, JudgeOutput)
        return JudgeResult(out.passed, out.score / 10, out.problems.strip())

    return judge


JUDGE_SYSTEM = "You grade answers strictly and briefly. Reply in JSON."

JUDGE_USER = """Grade the ANSWER to the REQUEST by this rubric: {rubric}

REQUEST:
{prompt}

ANSWER:
{answer}

List the answer's problems (empty if none), say whether it passes, and score it 0-10."""
