"""The API's wire format: OpenAI's chat request and response shapes, its error body, and
Reflexa's additions (the `reflexa` options and trace)."""

from __future__ import annotations

import time
from typing import Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.exceptions import HTTPException

from reflexa.agent.app.agent import EpisodeResult

MAX_CHECKS = 16  # per list, per request


class ApiError(HTTPException):
    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(status, message)
        self.param = param


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]

    @property
    def text(self) -> str:
        return (
            self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        )


class ReflexaOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    checks: list[dict[str, Any]] = Field(
        default_factory=list,
        max_length=MAX_CHECKS,
        description="Checks the model may see; an `expected` value in one only scores.",
    )
    scoring: list[dict[str, Any]] = Field(
        default_factory=list,
        max_length=MAX_CHECKS,
        description="Checks that only score the episode (gold).",
    )
    max_repairs: int | None = Field(default=None, ge=0, le=10)
    memory: bool = Field(default=True, description="Recall past corrections as examples.")


class ChatRequest(BaseModel):
    """OpenAI's chat request; options Reflexa does not use are accepted and ignored."""

    model_config = ConfigDict(extra="allow")
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    reflexa: ReflexaOptions = Field(default_factory=ReflexaOptions)


class Feedback(BaseModel):
    """A person's word on an answer: a thumbs up or down (`rating`), the right answer
    (`correction`), or both; `by` says who."""

    model_config = ConfigDict(extra="forbid")
    episode_id: str = Field(min_length=1, max_length=64)
    rating: Literal["good", "bad"] | None = None
    correction: str | None = Field(default=None, min_length=1)
    comment: str | None = Field(default=None, max_length=2000)
    by: str | None = Field(default=None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _says_something(self) -> Feedback:
        if self.rating is None and self.correction is None:
            raise ValueError("give a rating (good or bad), a correction, or both")
        return self


def error_response(status: int, message: str, param: str | None = None) -> JSONResponse:
    kind = {
        401: "authentication_error",
        404: "not_found_error",
        413: "invalid_request_error",
        429: "rate_limit_error",
    }.get(status, "invalid_request_error" if status < 500 else "server_error")
    body = {"error": {"message": message, "type": kind, "param": param, "code": None}}
    return JSONResponse(body, status_code=status)


def completion(result: EpisodeResult, completion_id: str, model: str) -> dict[str, Any]:
    """OpenAI's chat.completion, plus `reflexa`: the episode and its trace."""
    prompt = sum(a.get("prompt_tokens", 0) for a in result.attempts)
    generated = sum(a.get("completion_tokens", 0) for a in result.attempts)
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": result.answer or ""},
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": generated,
            "total_tokens": prompt + generated,
        },
        "reflexa": trace(result),
    }


def trace(result: EpisodeResult) -> dict[str, Any]:
    return {
        "episode_id": result.episode_id,
        "status": result.status,
        "attempts": [
            {
                "kind": a["kind"],
                "answer": a["answer"],
                "passed": a["passed"],  # by the visible checks
                "correct": right,  # by the scoring checks, after the loop; None: none given
                "verdicts": a["verdicts"],
                "diagnosis": a.get("diagnosis"),
                "memory": a.get("memory"),  # the corrections recalled into its prompt
            }
            for a, right in zip(
                result.attempts, result.scores or [None] * len(result.attempts), strict=True
            )
        ],
    }
