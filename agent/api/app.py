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
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import replace
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reflexa.agent.api.metrics import Metrics
from reflexa.agent.api.protocol import (
    ApiError,
    ChatRequest,
    Feedback,
    completion,
    error_response,
)
from reflexa.agent.api.streaming import stream
from reflexa.agent.app.agent import Agent, EpisodeRequest, open_agent, refuse_bad_input
from reflexa.agent.model.client import ModelClient
from reflexa.agent.settings import ServeSettings, Settings
from reflexa.agent.store import Store
from reflexa.evals.plugins import is_import_path
from reflexa.evals.validation import error_line
from reflexa.trainers.errors import TrainerError
from reflexa.trainers.registry import resolve_adapter


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


CODE = ("python_tests",)  # check types that run code
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def host_allowed(netloc: str, hosts: set[str]) -> bool:
    """Whether a Host header (or an Origin's netloc), port aside, names one of `hosts`."""
    name = netloc.rsplit("@", 1)[-1]
    name = name[1:].split("]", 1)[0] if name.startswith("[") else name.rsplit(":", 1)[0]
    return name.lower() in hosts


OPEN_PATHS = ("/health", "/")  # liveness and the chat page; everything else needs the token


class BodyLimit:
    """Reads each request's body before the app does, at most `limit` bytes however it is
    sent: a declared Content-Length over the limit (or not a number) is refused before
    reading, chunks are counted as they come; larger, 413 without reading on."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = (dict(scope["headers"]).get(b"content-length") or b"0").decode("latin-1")
        refused = None
        if not (declared.isascii() and declared.isdigit()):
            refused = error_response(400, f"Content-Length {declared[:20]!r} is not a number")
        elif len(declared) > 15 or int(declared) > self.limit:
            refused = error_response(413, f"request body over {self.limit} bytes")
        if refused is not None:
            return await refused(scope, receive, send)
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                too_big = error_response(413, f"request body over {self.limit} bytes")
                return await too_big(scope, receive, send)
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # a disconnect, for streaming responses to notice
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        return await self.app(scope, replay, send)


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


def create_app(
    settings: Settings, client: ModelClient, store: Store, opener: Opener | None = None
) -> FastAPI:
    """The API on `client`'s vLLM server, recording into `store` (the caller's, open for the
    app's life). Agents are opened by `opener` (default: on that server, with that store and
    the checkpointer) and kept for the app's life."""
    limits = settings.serve
    metrics = Metrics()
    agents = Agents(opener or (lambda adapter: open_agent(settings, client, store, adapter)))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with agents.stack:
            yield

    app = FastAPI(title="Reflexa", version="0.1.0", lifespan=lifespan)
    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)  # inside the guard below
    token = limits.api_token.get_secret_value() if limits.api_token else None
    names = (*LOOPBACK_NAMES, *limits.allowed_hosts, limits.host)
    hosts = {n.lower() for n in names} - {"0.0.0.0", "::", ""}

    @app.middleware("http")
    async def guard(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        origin = request.headers.get("origin")
        if not host_allowed(request.headers.get("host", ""), hosts):
            response: Response = error_response(
                400, "this Host is not served here: add it to serve.allowed_hosts", "host"
            )
        elif origin is not None and not host_allowed(urlsplit(origin).netloc, hosts):
            response = error_response(403, "requests from this Origin are not accepted", "origin")
        elif (
            request.url.path not in OPEN_PATHS
            and token
            and request.headers.get("authorization") != f"Bearer {token}"
        ):
            response = error_response(401, "missing or wrong bearer token")
        else:
            response = await call_next(request)
        route = request.scope.get("route")  # the template (/v1/episodes/{episode_id}), not ids
        metrics.requests.labels(getattr(route, "path", "other"), str(response.status_code)).inc()
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        where = ".".join(str(p) for p in e.errors()[0]["loc"] if p != "body")
        return error_response(400, error_line(e, skip=("body",)), where or None)

    @app.exception_handler(HTTPException)
    async def httperror_response(_: Request, e: HTTPException) -> JSONResponse:
        return error_response(e.status_code, str(e.detail), getattr(e, "param", None))

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return resources.files("reflexa.agent").joinpath("static/chat.html").read_text()

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
        out: dict[str, Any] = {"episode_id": body.episode_id, "recorded": True}
        if body.rating is not None:
            out["rating_id"] = store.add_rating(body.episode_id, body.rating, body.by, body.comment)
        if body.correction is not None:
            out["id"] = store.add_correction(
                body.episode_id,
                prompt=found["prompt"],
                chosen=body.correction,
                rejected=found["answer"],
                source="user",
                verified=True,
            )
        return out

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatRequest) -> JSONResponse | StreamingResponse:
        request, max_tokens = _episode_request(body, limits)
        if refused := refuse_bad_input(store, request, client.model, settings.reflect):
            raise ApiError(400, f"{refused.error} (recorded as episode {refused.episode_id})")
        adapter = _adapter(settings, store, client, body.model)
        agent = await agents.get(adapter, max_tokens)
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        model = body.model or adapter or client.model  # what answered: the promoted one
        if body.stream:
            return StreamingResponse(
                stream(agent, request, completion_id, model, metrics),
                media_type="text/event-stream",
            )
        result = await agent.run(request)
        metrics.record(result)
        if result.error:
            raise ApiError(502, f"the model failed: {result.error} (episode {result.episode_id})")
        return JSONResponse(completion(result, completion_id, model))

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
    code = [c for c in [*body.reflexa.checks, *body.reflexa.scoring] if c.get("type") in CODE]
    if code and not limits.allow_request_code:
        raise ApiError(
            400,
            "a python_tests check runs code on this machine: refused unless "
            "serve.allow_request_code is set (it needs serve.api_token)",
            "reflexa.checks",
        )
    named = [c for c in [*body.reflexa.checks, *body.reflexa.scoring]
             if is_import_path(str(c.get("type", "")))]  # fmt: skip
    if named:
        raise ApiError(
            400,
            f"check type {named[0]['type']!r}: over the API a check plugin is named by its "
            "entry point in 'reflexa.checks', never by import path (a request does not choose "
            "what the server imports)",
            "reflexa.checks",
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


def _adapter(
    settings: Settings, store: Store, client: ModelClient, model: str | None
) -> str | None:
    """The request's `model`: unset (the promoted adapter), the base model's name, a
    registered adapter version (v3), or an adapter the server already serves."""
    try:
        if model in (None, ""):
            return resolve_adapter(settings.workspace(), store, client, None)
        if model == client.model:
            return None
        if store.adapter(model) is not None or model in client.adapters():
            return resolve_adapter(settings.workspace(), store, client, model)
    except TrainerError as e:  # a registry failure (ReflexaError is one too)
        raise ApiError(400, str(e), "model") from None
    raise ApiError(404, f"model {model!r} not found (see /v1/models)", "model")
