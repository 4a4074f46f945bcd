"""Retiring memories: what an adapter now answers unaided needs no recalling for it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from reflexa.evals.signal import normalise
from reflexa.evals.verdict import grounded
from reflexa.evals.verify import passes
from reflexa.graphs.prompts import SYSTEM
from reflexa.trainers.ports import MemoryLedger, ModelServer
from reflexa.trainers.workspace import Workspace


async def retire_passed(
    ws: Workspace,
    store: MemoryLedger,
    client: ModelServer,
    adapter: str,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, int]:
    """Ask `adapter` each memory's prompt unaided (one answer, nothing recalled); the
    memories whose answer it gives again (the same up to form, and passing the memory's
    visible checks) are retired for it. Memories without grounded checks cannot be tested
    and stay. (Visible checks alone would not do: "a number" passes a wrong sum.)"""
    todo = [m for m in store.memories(status="active") if grounded(m["checks"])]
    limit = asyncio.Semaphore(ws.cycle.concurrency)
    passed: list[int] = []
    done = 0
    async with client.async_http(timeout=ws.request_timeout_s) as http:
        llm = client.chat_model(
            adapter, temperature=0, max_tokens=ws.max_tokens, http_async_client=http
        )

        async def one(m: dict[str, Any]) -> None:
            nonlocal done
            async with limit:
                reply = await llm.ainvoke(
                    [
                        {"role": "system", "content": SYSTEM},
                        {"role": "user", "content": m["prompt"]},
                    ]
                )
            same = normalise(reply.text, m["checks"]) == normalise(m["answer"], m["checks"])
            unconfined = ws.allow_unconfined
            if same and await passes(
                m["checks"], m["prompt"], reply.text, allow_unconfined=unconfined
            ):
                passed.append(m["id"])
            done += 1
            if on_progress:
                on_progress(done, len(todo))

        await asyncio.gather(*(one(m) for m in todo))
    if passed:
        store.retire_memories(passed, adapter)
    return {"tested": len(todo), "retired": len(passed)}
