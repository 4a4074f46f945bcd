"""The graph's nodes: generate, evaluate, diagnose, repair, finish. Each is
`(state, runtime) -> partial state`; the model and judge come from the run's context."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langgraph.runtime import Runtime
from pydantic import BaseModel, Field

from reflexa.evals import JudgeResult, VerifyContext, checks_for, parse_checks, run_checks
from reflexa.graphs.prompts import DIAGNOSE, REPAIR, SYSTEM
from reflexa.graphs.state import Attempt, Recall, ReflectionContext, ReflectionState, Status


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
    return await _answer(state, runtime.context, messages, "generate")


def _examples(state: ReflectionState) -> list[dict[str, str]]:
    """Recalled memories as solved turns before the conversation, the most similar first:
    last, nearest the request, it was copied from (measured: names taken from it)."""
    turns: list[dict[str, str]] = []
    for m in state.get("recalled") or []:
        turns.append({"role": "user", "content": m["prompt"]})
        turns.append({"role": "assistant", "content": m["answer"]})
    return turns


async def repair(state: ReflectionState, runtime: Runtime[ReflectionContext]) -> dict[str, Any]:
    last = state["attempts"][-1]
    diagnosis = last["diagnosis"] or {}
    instruction = REPAIR.format(
        feedback=failure_feedback(last["verdicts"]),
        cause=diagnosis.get("cause") or "see the problems above",
        fix=diagnosis.get("fix") or "correct those problems",
    )
    messages = [
        {"role": "system", "content": SYSTEM},
        *_examples(state),
        *state["messages"],
        {"role": "assistant", "content": last["answer"]},
        {"role": "user", "content": instruction},
    ]
    return await _answer(state, runtime.context, messages, "repair")


async def _answer(
    state: ReflectionState,
    ctx: ReflectionContext,
    messages: list[dict[str, str]],
    kind: Literal["generate", "repair"],
) -> dict[str, Any]:
    started = time.perf_counter()
    reply = await ctx.llm.ainvoke(messages)
    seconds = time.perf_counter() - started
    usage = reply.usage_metadata
    attempt: Attempt = {
        "kind": kind,
        "answer": reply.text,
        "verdicts": [],
        "passed": False,
        "score": 0.0,
        "gold_passed": None,
        "diagnosis": None,
        "prompt_tokens": usage["input_tokens"] if usage else 0,
        "completion_tokens": usage["output_tokens"] if usage else 0,
        "latency_s": round(seconds, 3),
        "model": ctx.model_name,
        "memory": state.get("memory") or {},
    }
    return {"attempts": [*state["attempts"], attempt], "model_s": state["model_s"] + seconds}


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
    counted = [v for v in verdicts if v.error is None]
    last["verdicts"] = [v.to_dict() for v in verdicts]
    if checks:
        last["passed"] = bool(counted) and all(v.passed for v in counted)
        last["score"] = sum(v.score for v in counted) / len(counted) if counted else 0.0
    else:  # nothing applies (no task checks, judge off): accepted unchecked
        last["passed"], last["score"] = True, 1.0
    if state["gold"]:
        gold = await run_checks(parse_checks(state["gold"]), last["answer"], ctx)
        last["gold_passed"] = all(v.passed for v in gold if v.error is None)
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
    last = state["attempts"][-1].copy()
    llm: BaseChatModel = runtime.context.diagnose_llm or runtime.context.llm
    started = time.perf_counter()
    try:
        out = await llm.with_structured_output(Diagnosis, method="json_schema").ainvoke(
            DIAGNOSE.format(
                request=state["messages"][-1]["content"],
                answer=last["answer"],
                feedback=failure_feedback(last["verdicts"]),
            )
        )
        assert isinstance(out, Diagnosis)
        last["diagnosis"] = out.model_dump()
    except Exception as e:  # advisory: a repair can still go on the verifiers' feedback
        last["diagnosis"] = {"cause": "", "fix": "", "error": f"{type(e).__name__}: {e}"}
    seconds = time.perf_counter() - started
    attempts = [*state["attempts"][:-1], last]
    return {"attempts": attempts, "model_s": state["model_s"] + seconds}


def finish(state: ReflectionState) -> dict[str, Any]:
    attempts = state["attempts"]
    last = attempts[-1]
    if last["passed"]:
        index = len(attempts) - 1
        status: Status = "passed" if index == 0 else "repaired"
    else:
        index = max(range(len(attempts)), key=lambda i: (attempts[i]["score"], -i))
        counted = [v for v in last["verdicts"] if v["error"] is None]
        status = "unresolved" if counted else "verifier_error"
    answer = attempts[index]["answer"]
    return {
        "status": status,
        "answer": answer,
        "final_index": index,
        "messages": [{"role": "assistant", "content": answer}],
    }


def failure_feedback(verdicts: list[dict[str, Any]]) -> str:
    lines = [
        f"- {v['feedback'] or v['verifier'] + ' check failed'}"
        for v in verdicts
        if v["error"] is None and not v["passed"]
    ]
    return "\n".join(lines) or "- (no details)"
