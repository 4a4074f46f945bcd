"""Streaming answers as server-sent events in OpenAI's chunk format."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from reflexa.agent.api.metrics import Metrics
from reflexa.agent.api.protocol import trace
from reflexa.agent.app.agent import Agent, EpisodeRequest


async def stream(
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
        try:
            result = await agent.run(request, on_event if live else None)
            metrics.record(result)
            if not live and result.answer:
                await queue.put(chunk({"content": result.answer}))
            if result.error:
                await queue.put(chunk({}, "stop", reflexa=trace(result) | {"error": result.error}))
            else:
                await queue.put(chunk({}, "stop", reflexa=trace(result)))
        except Exception as e:  # the model's own failures are results; this is anything else
            error = {"message": f"the episode failed: {type(e).__name__}: {e}",
                     "type": "server_error", "param": None, "code": None}  # fmt: skip
            await queue.put(f"data: {json.dumps({'error': error})}\n\n")
        finally:
            await queue.put(None)  # the stream always ends

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
