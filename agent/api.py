"""`reflexa serve`: an OpenAI-compatible HTTP API in front of the reflection agent.

    POST /v1/chat/completions   OpenAI's schema (stream=true: server-sent events); the answer
                                is the reflection graph's final one, its trace in `reflexa`
    GET  /v1/models             the base model and the promoted adapter
    GET  /v1/episodes/{id}      a recorded episode with its attempts
    POST /v1/feedback           a user's correction of an episode's answer
    GET  /health, /metrics      liveness; Prometheus metrics
    GET  /                      a small chat page

Errors are 4xx in OpenAI's error shape. A bearer token (`serve.api_token`) is required
whenever the host is not loopback.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import replace
from importlib import resources
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from agent.episodes import (
    Agent,
    EpisodeRequest,
    EpisodeResult,
    open_agent,
    refuse_bad_input,
)
from agent.errors import ReflexaError
from agent.model_client import ModelClient
from agent.settings import ServeSettings, Settings
from agent.store import Store, open_store
from trainers.registry import resolve_adapter


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
        description="Checks the model may see; an `expected` value in one only scores.",
    )
    scoring: list[dict[str, Any]] = Field(
        default_factory=list, description="Checks that only score the episode (gold)."
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
    model_config = ConfigDict(extra="forbid")
    episode_id: str = Field(min_length=1, max_length=64)
    correction: str = Field(min_length=1)
    comment: str | None = Field(default=None, max_length=2000)


def _error(status: int, message: str, param: str | None = None) -> JSONResponse:
    kind = {
        401: "authentication_error",
        404: "not_found_error",
        413: "invalid_request_error",
        429: "rate_limit_error",
    }.get(status, "invalid_request_error" if status < 500 else "server_error")
    body = {"error": {"message": message, "type": kind, "param": param, "code": None}}
    return JSONResponse(body, status_code=status)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "reflexa_http_requests", "HTTP requests", ["path", "status"], registry=self.registry
        )
        self.episodes = Counter(
            "reflexa_episodes", "Episodes by outcome", ["status"], registry=self.registry
        )
        self.repairs = Counter("reflexa_repairs", "Repair attempts", registry=self.registry)
        self.latency = Histogram(
            "reflexa_episode_seconds",
            "Episode wall time",
            buckets=(0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
            registry=self.registry,
        )

    def record(self, result: EpisodeResult) -> None:
        self.episodes.labels(result.status).inc()
        self.repairs.inc(max(len(result.attempts) - 1, 0))
        self.latency.observe(result.latency_s)


def create_app(settings: Settings, client: ModelClient, opener: Opener | None = None) -> FastAPI:
    """The API on `client`'s vLLM server. Agents are opened by `opener` (default: on that
    server, with the store and checkpointer) and kept for the app's life."""
    limits = settings.serve
    metrics = Metrics()
    agents = Agents(opener or (lambda adapter: open_agent(settings, client, adapter)))
    store = open_store(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        with store:
            async with agents.stack:
                yield

    app = FastAPI(title="Reflexa", version="0.1.0", lifespan=lifespan)
    token = limits.api_token.get_secret_value() if limits.api_token else None

    @app.middleware("http")
    async def guard(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        path = request.url.path
        if (
            path.startswith("/v1/")
            and token
            and request.headers.get("authorization") != f"Bearer {token}"
        ):
            response: Response = _error(401, "missing or wrong bearer token")
        elif int(request.headers.get("content-length") or 0) > limits.max_body_bytes:
            response = _error(413, f"request body over {limits.max_body_bytes} bytes")
        else:
            response = await call_next(request)
        route = request.scope.get("route")  # the template (/v1/episodes/{episode_id}), not ids
        metrics.requests.labels(getattr(route, "path", "other"), str(response.status_code)).inc()
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"] if p != "body")
        return _error(400, f"{where}: {first['msg']}" if where else first["msg"], where or None)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, e: HTTPException) -> JSONResponse:
        return _error(e.status_code, str(e.detail), getattr(e, "param", None))

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return resources.files("agent").joinpath("static/chat.html").read_text()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        promoted = store.promoted_adapter()
        ids = [client.model] + ([promoted["version"]] if promoted else [])
        return {
            "object": "list",
            "data": [
                {"id": i, "object": "model", "created": 0, "owned_by": "reflexa"} for i in ids
            ],
        }

    @app.get("/v1/episodes/{episode_id}")
    async def episode(episode_id: str) -> dict[str, Any]:
        found = store.episode(episode_id)
        if found is None:
            raise ApiError(404, f"no episode {episode_id!r}", "episode_id")
        return found

    @app.post("/v1/feedback")
    async def feedback(body: Feedback) -> dict[str, Any]:
        found = store.episode(body.episode_id)
        if found is None:
            raise ApiError(404, f"no episode {body.episode_id!r}", "episode_id")
        correction_id = store.add_correction(
            body.episode_id,
            prompt=found["prompt"],
            chosen=body.correction,
            rejected=found["answer"],
            source="user",
            verified=True,
        )
        return {"id": correction_id, "episode_id": body.episode_id, "recorded": True}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatRequest) -> JSONResponse | StreamingResponse:
        request, max_tokens = _episode_request(body, limits)
        if refused := refuse_bad_input(store, request, client.model, settings.reflect):
            raise ApiError(400, f"{refused.error} (recorded as episode {refused.episode_id})")
        adapter = _adapter(settings, store, client, body.model)
        agent = await agents.get(adapter, max_tokens)
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        model = body.model or client.model
        if body.stream:
            return StreamingResponse(
                _stream(agent, request, completion_id, model, metrics),
                media_type="text/event-stream",
            )
        result = await agent.run(request)
        metrics.record(result)
        if result.error:
            raise ApiError(502, f"the model failed: {result.error} (episode {result.episode_id})")
        return JSONResponse(_completion(result, completion_id, model))

    return app


def _episode_request(body: ChatRequest, limits: ServeSettings) -> tuple[EpisodeRequest, int | None]:
    if len(body.messages) > limits.max_messages:
        raise ApiError(
            400, f"{len(body.messages)} messages; at most {limits.max_messages}", "messages"
        )
    if body.messages[-1].role != "user":
        raise ApiError(400, "the last message must be the user's", "messages")
    max_tokens = body.max_completion_tokens or body.max_tokens
    if max_tokens is not None and max_tokens > limits.max_tokens:
        raise ApiError(
            400, f"max_tokens {max_tokens} over the limit {limits.max_tokens}", "max_tokens"
        )
    history = [{"role": m.role, "content": m.text} for m in body.messages[:-1]]
    request = EpisodeRequest(
        body.messages[-1].text,
        body.reflexa.checks,
        body.reflexa.scoring,
        history=history,
        max_repairs=body.reflexa.max_repairs,
        memory=body.reflexa.memory,
    )
    return request, max_tokens


def _completion(result: EpisodeResult, completion_id: str, model: str) -> dict[str, Any]:
    """OpenAI's chat.completion, plus `reflexa`: the episode and its trace."""
    prompt = sum(a.get("prompt_tokens", 0) for a in result.attempts)
    completion = sum(a.get("completion_tokens", 0) for a in result.attempts)
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
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
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
                "correct": a["gold_passed"],  # by the scoring checks; None: none given
                "verdicts": a["verdicts"],
                "diagnosis": a.get("diagnosis"),
                "memory": a.get("memory"),  # the corrections recalled into its prompt
            }
            for a in result.attempts
        ],
    }


# Opens an agent answering through an adapter (None: the base model).
Opener = Callable[[str | None], AbstractAsyncContextManager[Agent]]


class Agents:
    """One open agent per model (the base, or an adapter), opened on first use and closed
    with the app; a request's own max_tokens is set on a copy of that agent's model."""

    def __init__(self, opener: Opener) -> None:
        self.opener = opener
        self.stack = AsyncExitStack()
        self.open: dict[str | None, Agent] = {}
        self.lock = asyncio.Lock()

    async def get(self, adapter: str | None, max_tokens: int | None) -> Agent:
        async with self.lock:
            if adapter not in self.open:
                self.open[adapter] = await self.stack.enter_async_context(self.opener(adapter))
        agent = self.open[adapter]
        if max_tokens is None:
            return agent
        llm = agent.context.llm.model_copy(update={"max_tokens": max_tokens})
        return Agent(agent.graph, agent.store, replace(agent.context, llm=llm), agent.reflect)


async def _stream(
    agent: Agent, request: EpisodeRequest, completion_id: str, model: str, metrics: Metrics
) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's chunk format. Without repairs (max_repairs 0) the
    tokens stream as the model writes them; with reflection the answer is sent once it is
    final (a repair could replace it), with `: reflecting` comments meanwhile."""
    live = request.max_repairs == 0
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        body = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        } | extra
        return f"data: {json.dumps(body)}\n\n"

    async def on_event(kind: str, data: dict[str, Any]) -> None:
        if live and kind == "token" and data["node"] == "generate" and data["text"]:
            await queue.put(chunk({"content": data["text"]}))

    async def run() -> None:
        result = await agent.run(request, on_event if live else None)
        metrics.record(result)
        if not live and result.answer:
            await queue.put(chunk({"content": result.answer}))
        if result.error:
            await queue.put(chunk({}, "stop", reflexa=trace(result) | {"error": result.error}))
        else:
            await queue.put(chunk({}, "stop", reflexa=trace(result)))
        await queue.put(None)

    yield chunk({"role": "assistant", "content": ""})
    task = asyncio.create_task(run())
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), timeout=2.0)
            except TimeoutError:
                yield ": reflecting\n\n"
                continue
            if item is None:
                break
            yield item
        yield "data: [DONE]\n\n"
    finally:
        await task


def _adapter(
    settings: Settings, store: Store, client: ModelClient, model: str | None
) -> str | None:
    """The request's `model`: unset (the promoted adapter), the base model's name, a
    registered adapter version (v3), or an adapter the server already serves."""
    try:
        if model in (None, ""):
            return resolve_adapter(settings, store, client, None)
        if model == client.model:
            return None
        if store.adapter(model) is not None or model in client.adapters():
            return resolve_adapter(settings, store, client, model)
    except ReflexaError as e:
        raise ApiError(400, str(e), "model") from None
    raise ApiError(404, f"model {model!r} not found (see /v1/models)", "model")
