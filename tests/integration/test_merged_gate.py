"""The gate's merged server, for real: an adapter merged into the bundled model's weights
answers as the adapter does through the application's server, under the adapter's name, and
leaves nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reflexa.agent.model.client import ModelClient
from reflexa.agent.model.merged import MergedServer, gate_server
from reflexa.agent.model.server import gate_dir, group_members, running_replicas
from reflexa.agent.settings import load_settings
from tests.helpers import make_lora
from tests.integration.conftest import Session

pytestmark = pytest.mark.integration
PROMPTS = [
    "What is the capital of France? Answer in one word.",
    "What is 17 + 25? Reply with only the number.",
    "Name a colour of the sky.",
    "Write one word that rhymes with cat.",
]


def _greedy(client: ModelClient, model: str) -> list[str]:
    chat = client.chat_model(model, temperature=0, max_tokens=16)
    return [str(chat.invoke(p).content) for p in PROMPTS]


def test_merged_weights_answer_as_the_adapter_does(
    vllm_session: Session, server: ModelClient, tmp_path: Path
) -> None:
    settings = load_settings()
    assert isinstance(gate_server(settings), MergedServer)  # auto, on this CPU
    adapter = make_lora(vllm_session.model_dir, tmp_path / "lora", rank=16, seed=3)
    name = server.load_adapter(adapter, max_rank=16)
    through_lora, base = _greedy(server, name), _greedy(server, server.model)
    assert through_lora != base  # the adapter changes answers, so the test can tell

    side = MergedServer(settings)
    try:
        merged = side(name, adapter)
        assert [m.id for m in merged.models()] == [name]  # the adapter's name, no other
        assert merged.url != server.url
        answers = _greedy(merged, name)
        # The same weights, summed before rather than after: float32 rounding may move a
        # token; the adapter's answers must be there, not the base model's.
        same = sum(a == b for a, b in zip(answers, through_lora, strict=True))
        assert same >= len(PROMPTS) - 1, (answers, through_lora, base)
        assert side(name, adapter) == merged  # asked again: the same server, no restart
        assert (gate_dir(settings) / "weights" / name / "config.json").is_file()
        (record,) = running_replicas(settings, gate_dir(settings))
        status = json.loads(vllm_session.run("model", "status", "--json").stdout)
        assert status["gate"] == [{"url": merged.url, "pid": record.pid, "model": name}]
        assert json.loads((gate_dir(settings) / "vllm.json").read_text())["pid"] == record.pid
    finally:
        side.close()
    assert group_members(record.pid) == []
    assert not (gate_dir(settings) / "weights").exists()
    assert running_replicas(settings, gate_dir(settings)) == []
    server.unload_adapter(name)


@pytest.mark.stops_server
def test_model_stop_stops_a_merged_server_a_killed_night_left(
    vllm_session: Session, server: ModelClient, tmp_path: Path
) -> None:
    settings = load_settings()
    adapter = make_lora(vllm_session.model_dir, tmp_path / "lora", rank=8, seed=4)
    MergedServer(settings)("reflexa-left-behind", adapter)  # never closed, as by SIGKILL
    (left,) = running_replicas(settings, gate_dir(settings))
    stale = MergedServer(settings)  # the next night's: stops it before starting its own
    stale.close()
    assert group_members(left.pid) == []
    MergedServer(settings)("reflexa-left-again", adapter)
    (again,) = running_replicas(settings, gate_dir(settings))
    out = vllm_session.run("model", "stop").stdout
    assert str(again.pid) in out
    assert group_members(again.pid) == []
