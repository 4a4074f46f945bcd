"""The real vLLM server on the bundled model: prepare, serve, chat, LoRA, bad input, stop."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
from pathlib import Path

import httpx
import pytest
from langchain_core.messages import HumanMessage
from openai import OpenAI

from reflexa.agent.errors import ReflexaError
from reflexa.agent.model.client import ModelClient
from reflexa.agent.model.prepare import LOGIT_TOLERANCE
from reflexa.agent.model.server import group_members, port_in_use
from tests.helpers import free_port, make_lora
from tests.integration.conftest import Session, run_reflexa

pytestmark = pytest.mark.integration
PROMPT = "What is the capital of France? Answer in one word."


def test_prepare_gives_a_verified_folder(vllm_session: Session) -> None:
    prepared = vllm_session.prepared
    assert prepared["reused"] is False
    assert float(prepared["max_logit_diff"]) <= LOGIT_TOLERANCE  # type: ignore[arg-type]
    folder = vllm_session.model_dir
    assert (folder / "model.safetensors").stat().st_size > 100_000_000
    assert (folder / "tokenizer.json").is_file()
    assert "im_start" in (folder / "chat_template.jinja").read_text()  # ChatML survived
    again = json.loads(vllm_session.run("model", "prepare", "--json").stdout)
    assert again["reused"] is True


def test_status_url_answers_models_and_chat(vllm_session: Session, server: ModelClient) -> None:
    status = json.loads(vllm_session.run("model", "status", "--json").stdout)
    assert status["healthy"] is True
    assert status["managed"] is True
    assert status["url"] == f"http://127.0.0.1:{vllm_session.port}"
    assert group_members(status["pid"])
    models = httpx.get(f"{status['url']}/v1/models").json()["data"]
    assert [m["id"] for m in models] == [status["model"]]
    sdk = OpenAI(base_url=f"{status['url']}/v1", api_key="EMPTY")
    reply = sdk.chat.completions.create(
        model=status["model"],
        messages=[{"role": "user", "content": PROMPT}],
        temperature=0,
        max_tokens=16,
    )
    assert "Paris" in (reply.choices[0].message.content or "")


def test_langchain_chat_model(server: ModelClient) -> None:
    answer = server.chat_model(temperature=0, max_tokens=16).invoke(PROMPT).content
    assert "Paris" in str(answer)


def test_n_candidates_in_one_request_all_decoded_under_a_shape(server: ModelClient) -> None:
    """What the sampling repair relies on: `n` samples, each within its token share, each
    under the structured-output regex (the model, free, would chatter)."""
    llm = server.chat_model(temperature=1.0)
    shape = {"structured_outputs": {"regex": "-?[0-9]{1,30}"}}
    result = asyncio.run(llm.agenerate([[HumanMessage("Say hello to me.")]], n=4,
                                       max_tokens=8, stream=False, extra_body=shape))  # fmt: skip
    texts = [g.text for g in result.generations[0]]
    assert len(texts) == 4 and all(re.fullmatch(r"-?[0-9]{1,8}", t) for t in texts), texts


def test_ask_reuses_the_running_server(vllm_session: Session, server: ModelClient) -> None:
    before = json.loads(vllm_session.run("model", "status", "--json").stdout)["pid"]
    result = vllm_session.run("ask", PROMPT, "--json")
    doc = json.loads(result.stdout)
    assert "Paris" in doc["answer"]
    assert json.loads(vllm_session.run("model", "status", "--json").stdout)["pid"] == before


def test_lora_adapter_load_answer_unload(
    vllm_session: Session, server: ModelClient, tmp_path: Path
) -> None:
    adapter = make_lora(vllm_session.model_dir, tmp_path / "lora", rank=8)
    name = server.load_adapter(adapter, max_rank=16)
    assert name.startswith("reflexa-") and len(name) == len("reflexa-") + 12
    assert server.load_adapter(adapter) == name  # same weights, same name, no error
    status = json.loads(vllm_session.run("model", "status", "--json").stdout)
    assert status["adapters"] == [name]

    base = server.chat_model(temperature=0, max_tokens=24).invoke(PROMPT).content
    tuned = server.chat_model(name, temperature=0, max_tokens=24).invoke(PROMPT).content
    assert tuned and tuned != base  # the adapter's weights really are applied

    other = make_lora(vllm_session.model_dir, tmp_path / "lora2", rank=8, seed=1)
    assert server.load_adapter(other) != name  # new weights never reuse a name
    server.unload_adapter(server.adapters()[-1])

    server.unload_adapter(name)
    assert server.adapters() == []
    with pytest.raises(ReflexaError, match=f"adapter {name} is not loaded"):
        server.unload_adapter(name)


def test_rank_above_the_server_limit_is_refused(vllm_session: Session, tmp_path: Path) -> None:
    client = ModelClient(f"http://127.0.0.1:{vllm_session.port}", "unused")
    adapter = make_lora(vllm_session.model_dir, tmp_path / "big", rank=32)
    with pytest.raises(ReflexaError, match="rank 32 exceeds"):
        client.load_adapter(adapter, max_rank=16)


def _other_home(vllm_session: Session, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in vllm_session.env.items() if not k.startswith("REFLEXA_")}
    return env | {"REFLEXA_HOME": str(tmp_path / "home")} | extra


def _one_line_error(stderr: str, starts: str) -> None:
    assert stderr.startswith(f"Error: {starts}"), stderr
    assert "Traceback" not in stderr.splitlines()[0]


def test_port_in_use(vllm_session: Session, tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        env = _other_home(
            vllm_session,
            tmp_path,
            REFLEXA_MODEL__PATH=str(vllm_session.model_dir),
            REFLEXA_SERVER__PORT=str(port),
        )
        result = run_reflexa("model", "serve", env=env, check=False)
    assert result.returncode == 1
    _one_line_error(result.stderr, f"port {port} on 127.0.0.1 is already in use")
    assert "Traceback" not in result.stderr


def test_server_dying_at_startup_shows_its_log(vllm_session: Session, tmp_path: Path) -> None:
    broken = tmp_path / "broken-model"
    shutil.copytree(vllm_session.model_dir, broken, copy_function=os.symlink)
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").unlink()
    config["architectures"] = ["NoSuchModelForCausalLM"]
    (broken / "config.json").write_text(json.dumps(config))
    env = _other_home(
        vllm_session,
        tmp_path,
        REFLEXA_MODEL__PATH=str(broken),
        REFLEXA_SERVER__PORT=str(free_port()),
    )
    result = run_reflexa("model", "serve", env=env, check=False)
    assert result.returncode == 1
    _one_line_error(result.stderr, "vLLM server exited with code")
    assert "NoSuchModelForCausalLM" in result.stderr  # the tail of the server's own log
    assert not (tmp_path / "home" / "run" / "vllm.json").exists()
    assert str(broken) not in _process_table()


def test_unreachable_external_url(vllm_session: Session, tmp_path: Path) -> None:
    env = _other_home(vllm_session, tmp_path, REFLEXA_VLLM_URL=f"http://127.0.0.1:{free_port()}")
    result = run_reflexa("ask", "hello", env=env, check=False)
    assert result.returncode == 1
    _one_line_error(result.stderr, "REFLEXA_VLLM_URL=http://127.0.0.1:")
    assert "unreachable" in result.stderr


def test_external_url_is_used_as_is(
    vllm_session: Session, server: ModelClient, tmp_path: Path
) -> None:
    env = _other_home(vllm_session, tmp_path, REFLEXA_VLLM_URL=server.url)
    doc = json.loads(run_reflexa("ask", PROMPT, "--json", env=env).stdout)
    assert "Paris" in doc["answer"]
    status = json.loads(run_reflexa("model", "status", "--json", env=env).stdout)
    assert (status["managed"], status["healthy"], status["url"]) == (False, True, server.url)
    assert not (tmp_path / "home" / "run" / "vllm.json").exists()  # nothing was started


@pytest.mark.stops_server
def test_stop_leaves_nothing_running(vllm_session: Session, server: ModelClient) -> None:
    status = json.loads(vllm_session.run("model", "status", "--json").stdout)
    record = json.loads((vllm_session.home / "run" / "vllm.json").read_text())
    assert vllm_session.run("model", "stop").stdout.startswith(
        f"stopped vLLM (pid {status['pid']})"
    )
    assert group_members(status["pid"]) == []
    assert not Path(record["tmp_dir"]).exists()
    assert not (vllm_session.home / "run" / "vllm.json").exists()
    assert str(vllm_session.model_dir) not in _process_table()
    assert not port_in_use("127.0.0.1", vllm_session.port)
    status = vllm_session.run("model", "status", "--json", check=False)
    assert status.returncode == 1
    assert json.loads(status.stdout)["healthy"] is False


def _process_table() -> str:
    rows = []
    for stat in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            rows.append(stat.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return "\n".join(rows)
