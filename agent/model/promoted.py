"""The promoted adapter served merged: its weights merged into the base model's and answered by
a managed server of their own, to which requests for the adapter's name go (`route`).

Through a runtime LoRA adapter the CPU answered at 0.67 times the base model's speed
(bench/results/serve-2026-11-24.json); merged weights answer at the base model's. The first
managed server keeps the base weights: the base model, every other adapter and the gate's
candidates are answered there as before, and so is the promoted adapter while its merged
server starts, if the merged weights fail their check, and once its server has stopped
(`RouteTransport`). A switch (promotion, rollback) starts the new merged server, checks
it, moves the route, and only then stops the old one, once no request runs on it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from reflexa.agent.errors import ReflexaError
from reflexa.agent.model.client import ModelClient
from reflexa.agent.model.connect import ensure_model, merging
from reflexa.agent.model.merged import merge_adapter, serving_as
from reflexa.agent.model.server import (
    gate_dir,
    is_healthy,
    merged_dir,
    merged_servers,
    read_record,
    route,
    set_route,
    start_server,
    stop_server,
)
from reflexa.agent.settings import Settings
from reflexa.evals.builtin import BUILTIN
from reflexa.trainers.gate import FROZEN
from reflexa.trainers.ports import AdapterRegistry
from reflexa.trainers.registry import check_adapter, load

CHECK_PROMPTS = 16  # the frozen suite's first prompts, answered greedily by both
CHECK_TOKENS = 32
RUNNING = ("vllm:num_requests_running", "vllm:num_requests_waiting")


def serve_promoted(
    settings: Settings,
    store: AdapterRegistry,
    client: ModelClient,
    log: Callable[[str], None] = lambda _: None,
    retry: bool = False,
) -> dict[str, Any]:
    """Bring the merged server in line with the registry: the promoted adapter's merged
    weights served and routed to (when they pass their check), every other merged server
    stopped once idle. `client`: the managed (LoRA) server. What was done, also recorded in
    the adapter's metrics (`serving`); {} when nothing changed or merging is off. A failure
    leaves the adapter served through LoRA and says why; the promotion stands, and the
    adapter is not merged again unless `retry`."""
    if not merging(settings):
        return {}
    row = store.promoted_adapter()
    now = route(settings)
    done: dict[str, Any] = {}
    failed = row is not None and row["metrics"].get("serving", {}).get("merged") is False
    unserved = row is not None and (now is None or now[0] != row["name"] or not is_healthy(now[1]))
    if row is not None and unserved and (retry or not failed):
        started = time.perf_counter()
        try:
            url, agreement = _start(settings, row, client)
        except (ReflexaError, OSError, httpx.HTTPError) as e:
            set_route(settings, None)
            done = {"merged": False, "why": str(e) or type(e).__name__}
            log(f"serving {row['version']} through LoRA: its merged weights could not ({e})")
        else:
            set_route(settings, (row["name"], url))
            done = {"merged": True, "url": url, "agreement": agreement}
            log(f"serving {row['version']} merged at {url} ({agreement:.0%} of greedy answers "
                "as through LoRA)")  # fmt: skip
        done["seconds"] = round(time.perf_counter() - started, 1)
        store.update_adapter(row["version"], metrics={"serving": done})
    elif row is None and now is not None:
        set_route(settings, None)
        done = {"merged": False, "why": "the base model is the default"}
    keep = route(settings)
    for where in merged_servers(settings):
        if keep is None or where.name != keep[0]:
            try:
                _retire(settings, where)
            except ReflexaError as e:  # on 2 busy cores a killed server may take minutes
                log(f"the merged server in {where} has not stopped yet ({e}); the next "
                    "switch or `reflexa model stop` ends it")  # fmt: skip
    return done


def _start(settings: Settings, row: dict[str, Any], client: ModelClient) -> tuple[str, float]:
    """Merge (or find the gate's merge of) the adapter, start its server and check it against
    the adapter through LoRA; its url and the share of greedy answers that agree."""
    name = row["name"]
    where = merged_dir(settings) / name
    weights = where / "weights"
    if not (weights / "config.json").is_file():
        where.mkdir(parents=True, exist_ok=True)
        gated = gate_dir(settings) / "weights" / name  # merged for tonight's gate
        if (gated / "config.json").is_file():
            os.rename(gated, weights)
        else:
            ensure_model(settings)
            merge_adapter(settings.model_dir, check_adapter(row, settings.workspace()), weights)
    load(settings.workspace(), client, row)
    record = start_server(serving_as(settings, weights, name), run_dir=where)
    try:
        prompts = [item.user_prompt for item in BUILTIN[FROZEN]().items[:CHECK_PROMPTS]]
        timeout = settings.request_timeout_s
        lora, merged = (asyncio.run(_greedy(u, name, prompts, settings.api_key, timeout))
                        for u in (client.url, record.url))  # fmt: skip
        agreement = sum(a == b for a, b in zip(lora, merged, strict=True)) / len(prompts)
        least = settings.server.merge_min_agreement
        if agreement < least:
            raise ReflexaError(
                f"{agreement:.0%} of its greedy answers to {len(prompts)} prompts were the "
                f"adapter's through LoRA (merge_min_agreement {least:.0%})"
            )
    except BaseException:
        stop_server(settings, run_dir=where)
        shutil.rmtree(where, ignore_errors=True)
        raise
    return record.url, agreement


async def _greedy(url: str, model: str, prompts: list[str], key: str, timeout: float) -> list[str]:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(timeout=timeout, headers=headers) as http:

        async def one(prompt: str) -> str:
            body = {"model": model, "messages": [{"role": "user", "content": prompt}],
                    "max_tokens": CHECK_TOKENS, "temperature": 0}  # fmt: skip
            response = await http.post(f"{url}/v1/chat/completions", json=body)
            if response.status_code >= 400:
                raise ReflexaError(f"{url}: {response.status_code} {response.text[:200]}")
            return str(response.json()["choices"][0]["message"]["content"] or "")

        return list(await asyncio.gather(*(one(p) for p in prompts)))


def _retire(settings: Settings, where: Path) -> None:
    """Stop a merged server the route has left, once no request runs on it (the request
    timeout at most), and remove its weights."""
    record = read_record(settings, run_dir=where)
    if record is not None:
        deadline, quiet = time.monotonic() + settings.request_timeout_s, 0
        while quiet < 2 and time.monotonic() < deadline:  # idle twice, half a second apart
            quiet = quiet + 1 if running(record.url) == 0 else 0
            time.sleep(0.5)
    stop_server(settings, run_dir=where)
    shutil.rmtree(where, ignore_errors=True)


def running(url: str) -> int:
    """Requests running or waiting on a server; 0 if it is gone."""
    try:
        return requests_in(httpx.get(f"{url}/metrics", timeout=5.0).text)
    except httpx.HTTPError:
        return 0


def requests_in(metrics: str) -> int:
    """Requests running or waiting, from a vLLM server's Prometheus text."""
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                   if line.startswith(RUNNING)))  # fmt: skip
