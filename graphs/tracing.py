"""OpenTelemetry spans for the loop: each graph node, and each model call with the GenAI
semantic conventions (operation, provider, model, token usage). Through the OpenTelemetry
API only: with no SDK configured (`agent.app.tracing`), every span is a no-op."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from opentelemetry import trace

F = TypeVar("F", bound=Callable[..., Any])
TRACER = "reflexa"


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER)


def traced(name: str, fn: F) -> F:
    """`fn` (a graph node, sync or async) inside a span `reflexa.node.NAME`. The signature
    is kept (functools.wraps): LangGraph reads it to hand the node its runtime."""
    span = f"reflexa.node.{name}"
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            with tracer().start_as_current_span(span):
                return await fn(*args, **kwargs)

        return run_async  # type: ignore[return-value]

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        with tracer().start_as_current_span(span):
            return fn(*args, **kwargs)

    return run  # type: ignore[return-value]


@contextmanager
def model_call(model: str, **request: Any) -> Iterator[trace.Span]:
    """A span for one chat request to the model server (GenAI conventions); the caller adds
    the usage with `usage()` once the answer is in."""
    attributes = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "vllm",
                  "gen_ai.request.model": model}  # fmt: skip
    attributes |= {f"gen_ai.request.{k}": v for k, v in request.items() if v is not None}
    with tracer().start_as_current_span(
        f"chat {model}", kind=trace.SpanKind.CLIENT, attributes=attributes
    ) as span:
        yield span


def usage(span: trace.Span, input_tokens: int, output_tokens: int, choices: int = 1) -> None:
    span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
    span.set_attribute("gen_ai.usage.output_tokens", output_tokens)
    if choices != 1:
        span.set_attribute("gen_ai.request.choice.count", choices)
