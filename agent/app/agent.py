"""Running one request through the reflection graph and recording it, exactly once.

The episode row is written when the request starts (status `running`) and completed when it
ends, whatever the ending: answered, unresolved, refused as bad input, or failed because the
model timed out or returned an error.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any, cast

import openai
from langchain_core.messages import AIMessageChunk
from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import StateSnapshot, StreamMode
from opentelemetry.trace import StatusCode

from reflexa.agent.app.checkpointer import open_checkpointer
from reflexa.agent.app.memory import Memory, token_counter
from reflexa.agent.app.outcome import corrections_from, gold_memory
from reflexa.agent.app.routing import RepairTable
from reflexa.agent.model.client import ModelClient
from reflexa.agent.model.connect import external_urls
from reflexa.agent.model.replicas import affinity
from reflexa.agent.settings import ReflectSettings, Settings
from reflexa.agent.store import Store
from reflexa.agent.store.db import StoreUnavailable
from reflexa.evals import CheckSpecError, make_judge, parse_checks
from reflexa.evals.checks import split_gold
from reflexa.evals.contamination import learnable
from reflexa.evals.leaks import stated_answers
from reflexa.evals.verify import score, score_draws
from reflexa.graphs import ReflectionContext, ReflectionState, build_reflection_graph, turn_input
from reflexa.graphs.tracing import tracer

# (event, payload): ("token", {"node", "text"}) while an answer streams, ("node", {"node",
# "update"}) after each node, ("resumed", {...}) when an interrupted turn is taken up again.
EventFn = Callable[[str, dict[str, Any]], Awaitable[None]]
STREAMED_NODES = ("generate", "repair")
STREAM_MODES: list[StreamMode] = ["updates", "messages"]


@dataclass(frozen=True)
class EpisodeRequest:
    """`checks` the loop may see; `gold` (scoring) only scores the episode once it ends. A
    check given with an `expected` value is gold: it moves to scoring, its form stays."""

    prompt: str
    checks: list[dict[str, Any]] = field(default_factory=list)
    gold: list[dict[str, Any]] = field(default_factory=list)
    allow_gold: bool = False  # a training item whose gold answer may be learnt from
    thread_id: str | None = None
    max_repairs: int | None = None
    suite: str | None = None
    split: str | None = None
    item_id: str | None = None
    history: list[dict[str, str]] = field(default_factory=list)
    eval_run_id: str | None = None
    memory: bool = True  # recall past corrections (when the agent has a memory)
    gold_memories: bool | None = None  # recall may show gold answers (None: the agent's default)
    draws: int = 0  # more answers to the first prompt, in one request (the gate's evidence)
    draw_temperature: float = 1.0


@dataclass(frozen=True)
class EpisodeResult:
    episode_id: str
    thread_id: str
    status: str  # passed | repaired | unresolved | verifier_error | error
    answer: str | None
    error: str | None
    attempts: list[dict[str, Any]]
    latency_s: float
    model_s: float
    scores: list[bool | None] = field(default_factory=list)  # per attempt, by scoring (after)

    @property
    def ok(self) -> bool:
        return self.status != "error"

    def to_dict(self) -> dict[str, Any]:
        return {
            "episode_id": self.episode_id,
            "thread_id": self.thread_id,
            "status": self.status,
            "answer": self.answer,
            "error": self.error,
            "latency_s": round(self.latency_s, 3),
            "attempts": self.attempts,
        }


class BadRequest(ValueError):
    pass


def validate_request(request: EpisodeRequest, reflect: ReflectSettings) -> None:
    """Refuse, with one clear line, what no model should be asked."""
    if not request.prompt.strip():
        raise BadRequest("the prompt is empty")
    if len(request.prompt) > reflect.max_prompt_chars:
        raise BadRequest(
            f"the prompt has {len(request.prompt):,} characters; the limit is "
            f"{reflect.max_prompt_chars:,} (reflect.max_prompt_chars)"
        )
    try:
        visible = parse_checks(request.checks)
        parse_checks(request.gold)
    except CheckSpecError as e:
        raise BadRequest(str(e)) from None
    if stated := stated_answers(visible):  # an `expected` value moves to scoring by itself
        raise BadRequest(stated[0])
    if where := _too_big(request.checks + request.gold, "checks"):
        raise BadRequest(f"{where}: an integer beyond 64 bits (write it as a string or float)")


def _too_big(value: Any, where: str) -> str | None:
    """Where an integer the thread's checkpoints cannot hold (msgpack: 64 bits) is, if any."""
    if isinstance(value, int) and not -(2**63) <= value < 2**64:
        return where
    if isinstance(value, dict):
        children = list(value.items())
    elif isinstance(value, list):
        children = list(enumerate(value))
    else:
        return None
    return next((found for k, v in children if (found := _too_big(v, f"{where}.{k}"))), None)


def start_record(
    store: Store, request: EpisodeRequest, thread_id: str, model: str, reflect: ReflectSettings
) -> str:
    """Write the episode's row (status `running`) before anything can go wrong."""
    episode_id = uuid.uuid4().hex
    kept = request.prompt[: reflect.max_prompt_chars]  # an oversized prompt is cut
    store.start_episode(
        id=episode_id, thread_id=thread_id, prompt=kept,
        messages=[{"role": "user", "content": kept}], checks=request.checks,
        scoring=request.gold, gold_allowed=request.allow_gold, model=model,
        suite=request.suite, split=request.split, item_id=request.item_id,
        eval_run_id=request.eval_run_id,
    )  # fmt: skip
    return episode_id


def refuse_bad_input(
    store: Store, request: EpisodeRequest, model: str, reflect: ReflectSettings
) -> EpisodeResult | None:
    """None when `request` may go to a model; else it is refused, before any model is
    involved, and recorded all the same (its `error` says why)."""
    try:
        validate_request(request, reflect)
    except BadRequest as e:
        thread_id = request.thread_id or uuid.uuid4().hex
        episode_id = start_record(store, request, thread_id, model, reflect)
        return record_error(store, episode_id, thread_id, str(e), 0.0)
    return None


def record_error(
    store: Store, episode_id: str, thread_id: str, error: str, latency_s: float
) -> EpisodeResult:
    """Complete an episode that ended without an answer."""
    store.finish_episode(
        episode_id, status="error", answer=None, error=error, attempts=[], latency_s=latency_s
    )
    return EpisodeResult(episode_id, thread_id, "error", None, error, [], latency_s, 0.0)


class Agent:
    """The reflection graph bound to a model, a store and a checkpointer."""

    def __init__(
        self,
        graph: CompiledStateGraph[Any, Any, Any, Any],
        store: Store,
        context: ReflectionContext,
        reflect: ReflectSettings,
        memory: Memory | None = None,
        gold_memories: bool = False,
    ) -> None:
        """`gold_memories`: by default, recall may show memories justified by gold (set
        where the deployment may learn from gold); a request may say otherwise."""
        self.graph, self.store, self.context, self.reflect = graph, store, context, reflect
        self.memory, self.gold_memories = memory, gold_memories

    def recalled(
        self, prompt: str, suite: str | None, memory: bool, gold: bool
    ) -> list[int] | None:
        """The ids of the memories a request would be shown now (none with memory off);
        None where recall fails (the request would be answered without it, and say so)."""
        if not memory or self.memory is None:
            return []
        try:
            return [m["id"] for m in self.memory.recall(prompt, suite, gold=gold).memories]
        except Exception:  # the graph's recall node notes the failure on the episode
            return None

    async def run(self, request: EpisodeRequest, on_event: EventFn | None = None) -> EpisodeResult:
        """Answer `request`; a turn of its thread that was interrupted is finished first."""
        thread_id = request.thread_id or uuid.uuid4().hex
        config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
        await self.resume(thread_id, on_event)
        model = self.context.model_name
        if refused := refuse_bad_input(self.store, request, model, self.reflect):
            return refused
        visible, gold = split_gold(request.checks)
        request = replace(request, checks=visible, gold=[*request.gold, *gold])
        episode_id = start_record(self.store, request, thread_id, model, self.reflect)
        if self.memory is not None and not learnable(request.split):
            self.memory.protect(request.prompt)  # a held-out item: never recall its memory
        max_repairs = (
            self.reflect.max_repairs if request.max_repairs is None else request.max_repairs
        )
        turn = turn_input(
            request.prompt, request.checks, max_repairs, episode_id, request.history,
            use_memory=request.memory, suite=request.suite, draws=request.draws,
            draw_temperature=request.draw_temperature,
        )  # fmt: skip
        golden = self.gold_memories if request.gold_memories is None else request.gold_memories
        return await self._drive(turn, episode_id, thread_id, config, on_event, golden)

    async def resume(self, thread_id: str, on_event: EventFn | None = None) -> EpisodeResult | None:
        """Finish the thread's interrupted turn (a crash, a model error) under its own
        episode; None if nothing was interrupted."""
        config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
        pending = await self._checkpoint(config)
        if not pending.next:
            return None
        episode_id = pending.values.get("episode_id") or uuid.uuid4().hex
        if on_event:
            await on_event("resumed", {"episode_id": episode_id})
        return await self._drive(None, episode_id, thread_id, config, None, gold_memories=False)

    async def _checkpoint(self, config: RunnableConfig) -> StateSnapshot:
        """The thread's checkpointed state; a database that is down is one clear error."""
        try:
            return await self.graph.aget_state(config)
        except Exception as e:
            raise StoreUnavailable(f"the thread's checkpoints could not be read: {e}") from None

    async def _drive(
        self,
        turn: ReflectionState | None,
        episode_id: str,
        thread_id: str,
        config: RunnableConfig,
        on_event: EventFn | None,
        gold_memories: bool,
    ) -> EpisodeResult:
        """The turn inside one OpenTelemetry span, the root of its tree (graphs.tracing)."""
        attributes = {"reflexa.episode.id": episode_id, "reflexa.thread.id": thread_id,
                      "gen_ai.request.model": self.context.model_name,
                      "reflexa.suite": (turn or {}).get("suite") or ""}  # fmt: skip
        with tracer().start_as_current_span("reflexa.episode", attributes=attributes) as span:
            result = await self._run(turn, episode_id, thread_id, config, on_event, gold_memories)
            span.set_attribute("reflexa.episode.status", result.status)
            if result.error is not None:
                span.set_status(StatusCode.ERROR, result.error)
            return result

    async def _run(
        self,
        turn: ReflectionState | None,
        episode_id: str,
        thread_id: str,
        config: RunnableConfig,
        on_event: EventFn | None,
        gold_memories: bool,
    ) -> EpisodeResult:
        started = time.perf_counter()
        context = self.context
        if self.memory is not None:  # gold memories only for a turn that may learn from gold
            context = replace(
                context, recall=functools.partial(self.memory.recall, gold=gold_memories)
            )
        # "messages" makes LangChain stream each model call (an SSE event per token from
        # vLLM): only worth its CPU when someone watches the tokens.
        modes: list[StreamMode] = STREAM_MODES if on_event else ["updates"]
        try:
            with affinity(thread_id):  # one replica per thread: its prefix stays cached
                async for part in self.graph.astream(
                    turn, config, context=context, stream_mode=modes
                ):
                    mode, chunk = cast(tuple[str, Any], part)  # a list of modes yields pairs
                    if on_event is None:
                        continue
                    if mode == "messages":
                        message, meta = chunk
                        node = meta.get("langgraph_node")
                        if isinstance(message, AIMessageChunk) and node in STREAMED_NODES:
                            await on_event("token", {"node": node, "text": message.text})
                    else:
                        for node, update in chunk.items():
                            await on_event("node", {"node": node, "update": update})
        except Exception as e:
            latency = time.perf_counter() - started
            return record_error(self.store, episode_id, thread_id, describe_model_error(e), latency)
        state = (await self._checkpoint(config)).values
        # Scored now that the loop has ended, from the episode's record: the graph never held it.
        episode = self.store.episode(episode_id)
        assert episode is not None, "start_record wrote it"
        prompt = state["messages"][-2]["content"]  # the user's turn; the last is our answer
        unconfined = self.context.allow_unconfined
        scores = await score(
            episode["scoring"], prompt, [a["answer"] for a in state["attempts"]],
            judge=self.context.judge, allow_unconfined=unconfined,
        )  # fmt: skip
        result = EpisodeResult(
            episode_id=episode_id,
            thread_id=thread_id,
            status=state["status"],
            answer=state["answer"],
            error=None,
            attempts=state["attempts"],
            latency_s=time.perf_counter() - started,
            model_s=state["model_s"],
            scores=scores,
        )
        final = state["final_index"]
        corrections = [c | {"correct": scores[final]} for c in corrections_from(state)]
        drawn = state.get("drawn") or []
        self.store.finish_episode(
            episode_id, status=result.status, answer=result.answer, error=None,
            attempts=result.attempts, latency_s=result.latency_s, final_index=final,
            scores=scores, corrections=corrections,
            draws=await score_draws(episode, prompt, drawn, unconfined) if drawn else None,
            gold_memory=await gold_memory(episode, prompt, scores[final], unconfined),
        )  # fmt: skip
        return result


UNREACHABLE = "cannot reach the model server"  # how an episode's error starts when it was down


def describe_model_error(e: Exception) -> str:
    """One line a user can act on, for the ways a model request fails."""
    if isinstance(e, openai.APITimeoutError):
        return "the model did not answer in time (request_timeout_s)"
    if isinstance(e, openai.APIConnectionError):
        return f"{UNREACHABLE}: {e}"
    if isinstance(e, openai.APIStatusError):
        detail = e.body.get("message", e.message) if isinstance(e.body, dict) else e.message
        return f"the model server refused the request ({e.status_code}): {detail}"
    return f"{type(e).__name__}: {e}"


@asynccontextmanager
async def open_agent(
    settings: Settings,
    client: ModelClient,
    store: Store,
    adapter: str | None = None,
    recall_policy: bool = True,
) -> AsyncIterator[Agent]:
    """An Agent on `client`'s server (answering through `adapter` if given) recording into
    `store`, with the thread checkpointer open for its lifetime. `recall_policy` False:
    recall even where the gate turned it off (the gate, measuring recall again)."""
    r = settings.reflect
    # The agent owns its HTTP client: langchain-openai's default one is cached per process
    # and bound to the first event loop, which breaks the next asyncio.run().
    async with client.async_http(timeout=settings.request_timeout_s) as http:
        answerer = client.chat_model(
            adapter, temperature=r.temperature, max_tokens=r.max_tokens, http_async_client=http
        )
        helper = client.chat_model(adapter, temperature=0, max_tokens=200, http_async_client=http)
        memory = None
        if settings.memory.enabled:
            counter = token_counter(None if external_urls(settings) else settings.model_dir)
            memory = Memory(store, settings.memory, counter, model=adapter, policy=recall_policy)
        context = ReflectionContext(
            llm=answerer,
            model_name=adapter or client.model,
            judge=make_judge(helper) if r.judge else None,
            diagnose_llm=helper,
            recall=memory.recall if memory else None,
            allow_unconfined=settings.sandbox.allow_unconfined,
            samples=r.samples,
            escalate=r.escalate,
            sample_temperature=r.sample_temperature,
            strategies=tuple(r.strategies),
            routing=RepairTable(store) if r.route_by_record else None,
            max_tokens=r.max_tokens,
            repair_tokens=r.repair_tokens,
            repair_seconds=r.repair_seconds,
        )
        async with open_checkpointer(settings) as saver:
            graph = build_reflection_graph(saver)
            yield Agent(graph, store, context, r, memory, gold_memories=settings.cycle.allow_gold)
