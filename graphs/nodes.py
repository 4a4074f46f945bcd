"""The graph's nodes: generate, evaluate, diagnose, repair, finish. Each is
`(state, runtime) -> partial state`; the model and judge come from the run's context."""

from __future__ import annotations

import asyncio
import time
from hashlib import sha1
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, convert_to_messages
from langchain_core.outputs import ChatGeneration
from langchain_core.runnables import Runnable
from langgraph.runtime import Runtime
from pydantic import BaseModel, Field

from reflexa.evals import JudgeResult, VerifyContext, checks_for, parse_checks, run_checks
from reflexa.evals.arithmetic import stated_expression
from reflexa.evals.checks import value_deciders
from reflexa.evals.verdict import outcome
from reflexa.graphs.prompts import DIAGNOSE, SYSTEM, failure_feedback, repair_request
from reflexa.graphs.repair import STRATEGIES, batches, route, select
from reflexa.graphs.state import Attempt, Recall, ReflectionContext, ReflectionState, Status
from reflexa.graphs.tracing import model_call, usage


async def recall(state: ReflectionState, runtime: Runtime[ReflectionContext]) -> dict[str, Any]:
    """Past corrections similar to the request, to show as worked examples."""
    fn = runtime.context.recall
    if fn is None or not state.get("use_memory", True):
        found = Recall(note="memory off")
    else:
        try:
            found = await asyncio.to_thread(
                fn, state["messages"][-1]["content"], state.get("suite")
            )
        except Exception as e:  # memory is a help: a broken index never costs the answer
            first = str(e).splitlines()[0][:200] if str(e) else ""
            found = Recall(note=f"memory unavailable ({type(e).__name__}: {first}); "
                                "answered without it")  # fmt: skip
    return {"recalled": found.memories, "memory": found.trace()}


async def generate(state: ReflectionState, runtime: Runtime[ReflectionContext]) -> dict[str, Any]:
    messages = [{"role": "system", "content": SYSTEM}, *_examples(state), *state["messages"]]
    first = await _answer(state, runtime.context, messages, "generate")
    if not state.get("draws"):
        return first
    ctx, length = runtime.context, first["attempts"][-1]["completion_tokens"]
    cap = min(ctx.max_tokens, max(64, 2 * length))
    drawn = await _draw(ctx, messages, state["draws"], state.get("draw_temperature", 1.0), cap)
    return first | {"drawn": drawn}


async def _draw(
    ctx: ReflectionContext, messages: list[dict[str, str]], n: int, temperature: float, cap: int
) -> list[str]:
    """`n` more answers to the same prompt in one request (vLLM's `n`; the prompt's prefix is
    cached from the first answer), each at most `cap` tokens: twice the first answer's
    length, at least 64 (measured: at temperature the model rambles, and a draw of 512
    tokens cost more than the greedy answer it backs; bench/results/gate-cost-*.json)."""
    with model_call(ctx.model_name, temperature=temperature, max_tokens=cap) as span:
        result = await ctx.llm.agenerate(
            [convert_to_messages(messages)], n=n, temperature=temperature, max_tokens=cap,
            stream=False,
        )  # fmt: skip
        replies = [g.message for g in result.generations[0] if isinstance(g, ChatGeneration)]
        usage(span, *_tokens(replies), choices=n)
    return [str(r.text) for r in replies]


def _examples(state: ReflectionState) -> list[dict[str, str]]:
    """Recalled memories as solved turns before the conversation, the most similar first:
    last, nearest the request, it was copied from (measured: names taken from it)."""
    turns: list[dict[str, str]] = []
    for m in state.get("recalled") or []:
        turns.append({"role": "user", "content": m["prompt"]})
        turns.append({"role": "assistant", "content": m["answer"]})
    return turns


async def repair(state: ReflectionState, runtime: Runtime[ReflectionContext]) -> dict[str, Any]:
    """The strategy the diagnosis chose (see graphs/repair.py), within the turn's tokens."""
    ctx, last = runtime.context, state["attempts"][-1]
    diagnosis = last["diagnosis"] or {}
    strategy, shape = diagnosis.get("strategy", "feedback"), diagnosis.get("shape")
    left = min(ctx.max_tokens, ctx.repair_tokens - _repair_tokens(state))
    if strategy == "sample":
        return await _sample(state, ctx, shape, left)
    messages = [
        {"role": "system", "content": SYSTEM},
        *_examples(state),
        *state["messages"],
        {"role": "assistant", "content": last["answer"]},
        {"role": "user", "content": repair_request(last["verdicts"], diagnosis)},
    ]
    llm = ctx.llm.bind(max_tokens=left)
    if strategy == "constrained":
        constrained = ctx.llm.bind(max_tokens=left, extra_body={"structured_outputs": shape})
        try:
            return await _answer(state, ctx, messages, "repair", "constrained", constrained)
        except Exception as e:  # vLLM could not compile the shape (400): plain feedback
            if getattr(e, "status_code", None) != 400:
                raise
            note = f"the shape could not be decoded under ({e}); repaired from feedback"
            return await _answer(state, ctx, messages, "repair", "feedback", llm, note)
    return await _answer(state, ctx, messages, "repair", "feedback", llm)


async def _sample(
    state: ReflectionState, ctx: ReflectionContext, shape: dict[str, Any] | None, left: int
) -> dict[str, Any]:
    """Up to N answers to the original request (under `shape`, if given), drawn in growing
    requests (2, then 2, then 4 for N = 8: `repair.batches`) that stop at the first one
    in which a candidate passes the checks; each is checked (no judge: it is not evidence),
    and repair.select chooses. None chosen: the answer stays. Each candidate may be 4 times
    as long as the first answer (at least 64 tokens: at temperature 1 the model rambles),
    and all N of them `left` tokens together."""
    prompt, last = state["messages"][-1]["content"], state["attempts"][-1]
    messages = [{"role": "system", "content": SYSTEM}, *_examples(state), *state["messages"]]
    each = max(1, min(left // ctx.samples, max(64, 4 * state["attempts"][0]["completion_tokens"])))
    options: dict[str, Any] = {"extra_body": {"structured_outputs": shape}} if shape else {}
    candidates: list[str] = []
    passed: list[bool | None] = []
    prompt_tokens = completion_tokens = 0  # the prompt counted once, every candidate
    started = time.perf_counter()
    requests = batches(ctx.samples, ctx.escalate)
    while requests:
        n = requests.pop(0)
        try:
            with model_call(ctx.model_name, temperature=ctx.sample_temperature,
                            max_tokens=each) as span:  # fmt: skip
                result = await ctx.llm.agenerate(
                    [convert_to_messages(messages)], n=n, temperature=ctx.sample_temperature,
                    max_tokens=each, stream=False, **options,  # n answers come back whole
                )  # fmt: skip
                replies = [g.message for g in result.generations[0]
                           if isinstance(g, ChatGeneration)]  # fmt: skip
                asked, said = _tokens(replies)
                usage(span, asked, said, choices=n)
        except Exception as e:  # vLLM could not compile the shape (400): sample free text
            if not shape or getattr(e, "status_code", None) != 400:
                raise
            return await _sample(state, ctx, None, left)
        prompt_tokens, completion_tokens = max(prompt_tokens, asked), completion_tokens + said
        drawn = [str(r.text) for r in replies]
        candidates += drawn
        passed += await _passing(prompt, state["checks"], drawn, ctx)
        if any(passed):  # verified: more candidates would only cost
            break
        if all(ok is None for ok in passed):  # no check decides: a majority needs them all
            requests = [sum(requests)] if requests else []
    seconds = time.perf_counter() - started
    numbers = [{"type": "numeric"}] if stated_expression(prompt) else []  # vote on the value
    chosen, note = select(candidates, passed, [*state["checks"], *numbers])
    attempt = _attempt(state, ctx, "repair", "sample", note, chosen or last["answer"], seconds)
    attempt["prompt_tokens"], attempt["completion_tokens"] = prompt_tokens, completion_tokens
    return {"attempts": [*state["attempts"], attempt], "model_s": state["model_s"] + seconds}


def _tokens(replies: list[BaseMessage]) -> tuple[int, int]:
    """(prompt, completion) tokens of one request's `n` replies: the prompt counted once."""
    used = [r.usage_metadata for r in replies if isinstance(r, AIMessage) and r.usage_metadata]
    return max((u["input_tokens"] for u in used), default=0), sum(u["output_tokens"] for u in used)


def _repair_tokens(state: ReflectionState) -> int:
    return sum(a["completion_tokens"] for a in state["attempts"][1:])


async def _passing(
    prompt: str, specs: list[dict[str, Any]], candidates: list[str], ctx: ReflectionContext
) -> list[bool | None]:
    """Whether each candidate passes the checks that apply to it (the judge left out);
    None where none applied."""
    task_checks = parse_checks(specs)
    vctx = VerifyContext(prompt, None, ctx.allow_unconfined)
    checked = await asyncio.gather(
        *(run_checks(checks_for(prompt, c, task_checks, judge=False), c, vctx) for c in candidates)
    )
    return [{"passed": True, "failed": False, "unchecked": None}[outcome(vs)] for vs in checked]


async def _answer(
    state: ReflectionState,
    ctx: ReflectionContext,
    messages: list[dict[str, str]],
    kind: Literal["generate", "repair"],
    strategy: str | None = None,
    llm: Runnable[Any, BaseMessage] | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    started = time.perf_counter()
    with model_call(ctx.model_name, max_tokens=ctx.max_tokens) as span:
        reply = await (llm or ctx.llm).ainvoke(messages)
        seconds = time.perf_counter() - started
        attempt = _attempt(state, ctx, kind, strategy, note, reply.text, seconds)
        if isinstance(reply, AIMessage) and reply.usage_metadata:
            attempt["prompt_tokens"] = reply.usage_metadata["input_tokens"]
            attempt["completion_tokens"] = reply.usage_metadata["output_tokens"]
        usage(span, attempt["prompt_tokens"], attempt["completion_tokens"])
    return {"attempts": [*state["attempts"], attempt], "model_s": state["model_s"] + seconds}


def _attempt(
    state: ReflectionState,
    ctx: ReflectionContext,
    kind: Literal["generate", "repair"],
    strategy: str | None,
    note: str | None,
    answer: str,
    seconds: float,
) -> Attempt:
    return {
        "kind": kind,
        "strategy": strategy,
        "note": note,
        "answer": answer,
        "verdicts": [],
        "passed": False,
        "score": 0.0,
        "diagnosis": None,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "latency_s": round(seconds, 3),
        "model": ctx.model_name,
        "memory": state.get("memory") or {},
    }


async def evaluate(state: ReflectionState, runtime: Runtime[ReflectionContext]) -> dict[str, Any]:
    prompt = state["messages"][-1]["content"]
    last = state["attempts"][-1].copy()
    judge_s = 0.0

    async def timed_judge(prompt: str, answer: str, rubric: str) -> JudgeResult:
        nonlocal judge_s
        assert runtime.context.judge is not None
        started = time.perf_counter()
        try:
            return await runtime.context.judge(prompt, answer, rubric)
        finally:
            judge_s += time.perf_counter() - started

    judge = timed_judge if runtime.context.judge else None
    ctx = VerifyContext(prompt, judge, runtime.context.allow_unconfined)
    task_checks = parse_checks(state["checks"])
    checks = checks_for(prompt, last["answer"], task_checks, judge=ctx.judge is not None)
    verdicts = await run_checks(checks, last["answer"], ctx)
    last["verdicts"] = [v.to_dict() for v in verdicts]
    last["passed"] = outcome(verdicts) == "passed"  # nothing applied: unchecked, not passed
    last["score"] = sum(v.score for v in verdicts) / len(verdicts) if verdicts else 0.0
    attempts = [*state["attempts"][:-1], last]
    return {"attempts": attempts, "model_s": state["model_s"] + judge_s}


def after_evaluate(state: ReflectionState) -> str:
    last = state["attempts"][-1]
    failed = [v for v in last["verdicts"] if v["error"] is None and not v["passed"]]
    repairs_done = len(state["attempts"]) - 1
    if last["passed"] or not failed or repairs_done >= state["max_repairs"]:
        return "finish"
    return "diagnose"


class Diagnosis(BaseModel):
    cause: str = Field(max_length=160, description="Why the answer failed.")
    fix: str = Field(max_length=160, description="How to fix it.")


async def diagnose(state: ReflectionState, runtime: Runtime[ReflectionContext]) -> dict[str, Any]:
    """Route the failure to a repair strategy; only a feedback repair asks the model why.
    With the turn's repair budget spent, no strategy (`after_diagnose`: finish)."""
    last = state["attempts"][-1].copy()
    tried = [str(a.get("strategy")) for a in state["attempts"] if a.get("strategy")]
    checks = state["checks"]
    ctx = runtime.context
    if spent := budget_spent(state, ctx):
        last["diagnosis"] = {"strategy": None, "why": spent}
        return {"attempts": [*state["attempts"][:-1], last]}
    futile = _futile(await _record(state, ctx), state["attempts"], checks, ctx.min_tries)
    allowed = tuple(s for s in ctx.strategies if s not in futile)
    strategy, why, shape = route(last["verdicts"], checks, tried, ctx.samples, allowed)
    skipped = {"skipped": futile} if futile else {}
    if strategy in futile:  # feedback, the last resort, has never fixed here either
        last["diagnosis"] = {"strategy": None, "why": futile[strategy]} | skipped
        return {"attempts": [*state["attempts"][:-1], last]}
    if strategy != "feedback":
        last["diagnosis"] = {"strategy": strategy, "why": why, "shape": shape} | skipped
        return {"attempts": [*state["attempts"][:-1], last]}
    llm: BaseChatModel = runtime.context.diagnose_llm or runtime.context.llm
    started = time.perf_counter()
    try:
        with model_call(ctx.model_name):  # structured output: its usage is not returned
            out = await llm.with_structured_output(Diagnosis, method="json_schema").ainvoke(
                DIAGNOSE.format(
                    request=state["messages"][-1]["content"],
                    answer=last["answer"],
                    feedback=failure_feedback(last["verdicts"]),
                )
            )
        assert isinstance(out, Diagnosis)
        last["diagnosis"] = out.model_dump() | {"strategy": strategy, "why": why} | skipped
    except Exception as e:  # advisory: a repair can still go on the verifiers' feedback
        last["diagnosis"] = {"cause": "", "fix": "", "error": f"{type(e).__name__}: {e}",
                             "strategy": strategy, "why": why} | skipped  # fmt: skip
    seconds = time.perf_counter() - started
    attempts = [*state["attempts"][:-1], last]
    return {"attempts": attempts, "model_s": state["model_s"] + seconds}


EXPLORE = 10  # one turn in this many routes by rule alone, so the record can change its mind


async def _record(
    state: ReflectionState, ctx: ReflectionContext
) -> dict[str, tuple[int, int]] | None:
    """What the record shows of each strategy in this turn's place (repairs, passed); None on
    a turn that explores, or where the record cannot be read (routing by rule is always a
    safe answer)."""
    episode = state.get("episode_id") or ""
    explores = bool(episode) and int(sha1(episode.encode()).hexdigest(), 16) % EXPLORE == 0
    if ctx.routing is None or explores:
        return None
    try:
        return await asyncio.to_thread(
            ctx.routing, ctx.model_name, state.get("suite"), state["checks"]
        )
    except Exception:  # a help, like recall: a broken record never costs the repair
        return None


def _futile(
    record: dict[str, tuple[int, int]] | None,
    attempts: list[Attempt],
    checks: list[dict[str, Any]],
    min_tries: int,
) -> dict[str, str]:
    """The strategies to skip, with why: one that passed fewer than 1 in `min_tries` of its
    `min_tries` or more repairs here; and where a tool or test decides the failure and a
    sample it checked found nothing (this turn's, or the record's), every other one the record
    does not show fixing so (after such samples on sums, constrained fixed 0 of 99)."""
    if record is None:
        return {}
    fixes = {s: passed > 0 and passed * min_tries >= n for s, (n, passed) in record.items()}
    futile = {
        s: f"the record shows {s} passing {passed} of {n} repairs here with this model "
        f"(fewer than 1 in {min_tries})"
        for s, (n, passed) in record.items()
        if n >= min_tries and not fixes[s]
    }
    failed = {v["verifier"] for v in attempts[-1]["verdicts"] if not v["error"] and not v["passed"]}
    deciders = ", ".join(sorted(failed & value_deciders(checks)))
    sampled = "sample" in futile or any(a.get("strategy") == "sample" for a in attempts)
    others = [s for s in STRATEGIES if s not in (*futile, "sample") and not fixes.get(s)]
    for s in others if deciders and sampled else []:
        tried = record.get(s, (0, 0))[0]
        futile[s] = (f"samples checked by {deciders} found no passing answer, and the record "
                     f"shows no {s} repair fixing here ({tried} tried)")  # fmt: skip
    return futile


def budget_spent(state: ReflectionState, ctx: ReflectionContext) -> str | None:
    """Why no repair may start now, or None."""
    tokens = _repair_tokens(state)
    if tokens >= ctx.repair_tokens:
        return f"the turn's repair tokens are spent ({tokens} of {ctx.repair_tokens})"
    elapsed = time.time() - state.get("started", time.time())
    if elapsed >= ctx.repair_seconds:
        return f"the turn's repair time is spent ({elapsed:.1f} of {ctx.repair_seconds:g} s)"
    return None


def after_diagnose(state: ReflectionState) -> str:
    diagnosis = state["attempts"][-1]["diagnosis"] or {}
    return "finish" if diagnosis.get("strategy", "feedback") is None else "repair"


def finish(state: ReflectionState) -> dict[str, Any]:
    attempts = state["attempts"]
    last = attempts[-1]
    if last["passed"]:
        index = len(attempts) - 1
        status: Status = "passed" if index == 0 else "repaired"
    else:
        index = max(range(len(attempts)), key=lambda i: (attempts[i]["score"], -i))
        failed = [v for v in last["verdicts"] if v["error"] is None and not v["passed"]]
        if not last["verdicts"]:
            status = "unchecked"
        else:
            status = "unresolved" if failed else "verifier_error"
    answer = attempts[index]["answer"]
    return {
        "status": status,
        "answer": answer,
        "final_index": index,
        "messages": [{"role": "assistant", "content": answer}],
    }
