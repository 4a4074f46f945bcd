from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from reflexa.agent.errors import ReflexaError
from reflexa.agent.model import server as vllm_server
from reflexa.agent.model.connect import connect
from reflexa.agent.model.server import (
    PID_FILE,
    ServerRecord,
    group_members,
    log_tail,
    port_in_use,
    read_record,
    running_replicas,
    server_command,
    server_env,
    start_server,
    stop_server,
)
from reflexa.agent.settings import Settings, load_settings
from tests.helpers import free_port, make_model_dir

FAKE = Path(__file__).parent.parent / "fake_vllm_server.py"


def settings_with(**server: object) -> Settings:
    settings = load_settings()
    return settings.model_copy(update={"server": settings.server.model_copy(update=server)})


def test_cpu_command_and_env(tmp_path: Path) -> None:
    settings = settings_with(device="cpu", port=8123, extra_args=["--seed", "1"])
    cmd = server_command(settings, python="py")
    assert cmd[:3] == ["py", "-m", "vllm.entrypoints.openai.api_server"]

    def flag(name: str) -> str:
        return cmd[cmd.index(name) + 1]

    assert flag("--dtype") == "float32"
    assert flag("--port") == "8123"
    assert flag("--model") == str(settings.model_dir)
    assert flag("--served-model-name") == settings.model.name
    assert int(flag("--max-lora-rank")) >= 16
    assert "--enable-lora" in cmd
    assert cmd[-2:] == ["--seed", "1"]
    env = server_env(settings, {"PATH": "/bin"}, tmp_path)
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "auto"
    assert env["TMPDIR"] == str(tmp_path)
    assert env["PATH"] == "/bin"
    every = settings.model_copy(update={"server": settings.server.model_copy(
        update={"cpu_bind": "all"})})  # fmt: skip
    cores = os.cpu_count() or 1
    assert server_env(every, {}, tmp_path)["VLLM_CPU_OMP_THREADS_BIND"] == f"0-{cores - 1}"


def test_a_server_beside_the_application_s_computes_on_the_core_auto_leaves_free() -> None:
    from reflexa.agent.model.server import beside

    auto = settings_with(device="cpu").server
    assert beside(auto, cores=2) == "1"  # auto computes on core 0 there
    assert beside(auto, cores=8) == "auto"
    assert beside(auto.model_copy(update={"cpu_bind": "all"}), cores=2) == "all"
    assert beside(auto.model_copy(update={"replicas": 2}), cores=2) == "auto"


def test_gpu_command_and_env(tmp_path: Path) -> None:
    settings = settings_with(device="cuda")
    cmd = server_command(settings)
    assert cmd[cmd.index("--dtype") + 1] == "auto"
    env = server_env(settings, {}, tmp_path)
    assert "VLLM_CPU_KVCACHE_SPACE" not in env
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"


def test_port_in_use() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        assert port_in_use("127.0.0.1", held.getsockname()[1])
    assert not port_in_use("127.0.0.1", free_port())


def test_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert log_tail(log, 3).splitlines() == ["  line 97", "  line 98", "  line 99"]
    assert log_tail(tmp_path / "absent") == "(no log)"


def test_stale_or_corrupt_pid_file_is_dropped() -> None:
    settings = load_settings()
    settings.run_dir.mkdir(parents=True)
    pid_file = settings.run_dir / PID_FILE
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record = {"pid": dead.pid, "url": "u", "model": "m", "model_dir": "d", "log": "l",
              "tmp_dir": "t", "started_at": 0.0}  # fmt: skip
    pid_file.write_text(json.dumps(record))
    assert read_record(settings) is None
    assert not pid_file.exists()
    pid_file.write_text("{garbage")
    assert read_record(settings) is None
    assert not pid_file.exists()


@pytest.fixture
def fake_server(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Settings whose server is tests/fake_vllm_server.py in the given mode."""

    def make(mode: str, **server: object) -> Settings:
        settings = settings_with(port=free_port(), **server)
        make_model_dir(settings.model_dir)
        monkeypatch.setattr(
            vllm_server,
            "server_command",
            lambda s, replica=0: [sys.executable, str(FAKE), mode, str(s.server.port + replica)],
        )
        return settings

    return make


def test_start_reuse_and_stop_leave_nothing(fake_server) -> None:  # type: ignore[no-untyped-def]
    settings = fake_server("healthy")
    record = start_server(settings)
    try:
        assert len(group_members(record.pid)) == 2  # the server and its worker
        assert Path(record.tmp_dir).is_dir()
        assert read_record(settings) == record
        assert start_server(settings) == record  # reused, not started twice
    finally:
        assert stop_server(settings) == [record]
    assert group_members(record.pid) == []
    assert not Path(record.tmp_dir).exists()
    assert read_record(settings) is None
    assert stop_server(settings) == []


def test_replicas_are_servers_of_their_own_and_stop_together(fake_server) -> None:  # type: ignore[no-untyped-def]
    settings = fake_server("healthy", replicas=2)
    client = connect(settings)
    try:
        first, second = records = running_replicas(settings)
        assert client.urls == (first.url, second.url) and (first.replica, second.replica) == (0, 1)
        assert second.url.endswith(f":{settings.server.port + 1}") and second.pid != first.pid
        assert (
            Path(second.log).name == "vllm-1.log" and (settings.run_dir / "vllm-1.json").is_file()
        )
        assert connect(settings.model_copy(update={"server": settings.server.model_copy(
            update={"replicas": 1})})).urls == client.urls  # fmt: skip
    finally:
        assert stop_server(settings) == records
    assert running_replicas(settings) == [] and list(settings.run_dir.glob("vllm*.json")) == []
    env = server_env(settings, {}, Path("/tmp"), replica=1)
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == str(1 % (os.cpu_count() or 1))
    assert env["VLLM_LORA_RESOLVER_CACHE_DIR"] == str(settings.workspace().by_name_dir)


def test_death_during_startup_shows_the_log(fake_server) -> None:  # type: ignore[no-untyped-def]
    settings = fake_server("die")
    with pytest.raises(ReflexaError, match="exited with code 3 during start-up") as e:
        start_server(settings)
    assert "boom: model architecture not supported" in str(e.value)
    assert not (settings.run_dir / PID_FILE).exists()
    assert list(Path(settings.run_dir).glob("*.json")) == []


def test_startup_timeout_kills_the_group(fake_server) -> None:  # type: ignore[no-untyped-def]
    settings = fake_server("hang", start_timeout_s=1.0)
    waits: list[float] = []
    with pytest.raises(ReflexaError, match="not healthy after 1 s"):
        start_server(settings, on_wait=waits.append)
    assert waits, "progress callback never called"
    assert read_record(settings) is None
    assert not [p for p in _all_fake_servers() if "hang" in p]


def _all_fake_servers() -> list[str]:
    out = subprocess.run(["ps", "-eo", "stat,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if str(FAKE) in line and not line.startswith("Z")]


def test_port_in_use_is_refused_before_starting(fake_server) -> None:  # type: ignore[no-untyped-def]
    settings = fake_server("healthy")
    with socket.socket() as held:
        held.bind(("127.0.0.1", settings.server.port))
        held.listen()
        with pytest.raises(ReflexaError, match=f"port {settings.server.port} .* already in use"):
            start_server(settings)
    assert read_record(settings) is None


def test_missing_model_folder_is_refused() -> None:
    with pytest.raises(ReflexaError, match="model folder not found"):
        start_server(load_settings())


def test_the_gate_s_merged_server_merges_each_adapter_once_and_serves_one_side_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Switching sides, or `stop` before training, stops the running server and keeps the
    merged weights (the gate comes back to the current side for the frozen suite, and to the
    adapter the night sampled with); `close` removes them. The real
    merge and servers: tests/integration/test_merged_gate.py."""
    from reflexa.agent.model import merged as merged_module
    from reflexa.agent.model.merged import MergedServer
    from reflexa.agent.model.server import gate_dir

    merges, started, stops = [], [], []

    def merge(base: Path, adapter: Path, out: Path) -> None:
        merges.append(out.name)
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")

    def start(s: Settings, run_dir: Path) -> ServerRecord:
        assert run_dir == gate_dir(s) and s.model.path == gate_dir(s) / "weights" / s.model.name
        started.append(s.model.name)
        url = f"http://127.0.0.1:{s.server.port}"
        return ServerRecord(1, url, s.model.name, str(s.model_dir), "", "", 0.0)

    monkeypatch.setattr(merged_module, "merge_adapter", merge)
    monkeypatch.setattr(merged_module, "ensure_model", lambda _: None)
    monkeypatch.setattr(merged_module, "start_server", start)
    monkeypatch.setattr(merged_module, "stop_server", lambda s, run_dir: stops.append(run_dir))
    settings = Settings(home=tmp_path)
    side = MergedServer(settings)
    first = side("a", tmp_path / "A")
    assert first.model == "a" and side("a", tmp_path / "A") == first  # no restart
    side("b", tmp_path / "B")
    side("a", tmp_path / "A")
    assert merges == ["a", "b"] and started == ["a", "b", "a"] and len(stops) == 3
    side.stop()  # as before training: the weights stay for the gate
    assert (gate_dir(settings) / "weights" / "a" / "config.json").is_file() and len(stops) == 4
    side.close()
    assert not (gate_dir(settings) / "weights").exists() and len(stops) == 5
