"""Bad input through the real command: one clear line, exit 1, no traceback."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from reflexa.agent.cli import cli
from tests.helpers import make_model_dir


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def assert_one_line_error(code: int, stderr: str, message: str) -> None:
    assert code == 1
    assert stderr.startswith(f"Error: {message}"), stderr
    assert "Traceback" not in stderr


def test_missing_model_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("REFLEXA_MODEL__PATH", str(tmp_path / "nowhere"))
    code, _, stderr = invoke("model", "serve")
    assert_one_line_error(code, stderr, f"{tmp_path / 'nowhere'}: model folder not found")


def test_corrupt_model_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    folder = make_model_dir(tmp_path / "m")
    (folder / "model.safetensors").write_bytes(b"\x00" * 4)
    monkeypatch.setenv("REFLEXA_MODEL__PATH", str(folder))
    code, _, stderr = invoke("model", "prepare")
    assert_one_line_error(code, stderr, f"{folder / 'model.safetensors'}: corrupt weights")


def test_unreachable_external_server(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once we leave: nothing listens there
    monkeypatch.setenv("REFLEXA_VLLM_URL", f"http://127.0.0.1:{port}")
    code, _, stderr = invoke("ask", "hello")
    assert_one_line_error(code, stderr, f"REFLEXA_VLLM_URL=http://127.0.0.1:{port} is unreachable")


def test_external_url_must_be_http(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFLEXA_VLLM_URL", "gpu-box:8000")
    code, _, stderr = invoke("model", "serve")
    assert_one_line_error(code, stderr, "REFLEXA_VLLM_URL='gpu-box:8000' is not an http(s) URL")


def test_empty_prompt_is_refused_before_any_model_starts_and_recorded(clean_env: Path) -> None:
    code, _, stderr = invoke("ask", "   ")
    assert_one_line_error(code, stderr, "the prompt is empty (recorded as episode ")
    assert not (clean_env / "models").exists()  # nothing was prepared or started
    code, stdout, _ = invoke("failures", "list", "--json")
    assert code == 0
    assert [(f["status"], f["error"]) for f in json.loads(stdout)] == [
        ("error", "the prompt is empty")
    ]


def test_malformed_check_is_refused(tmp_path: Path) -> None:
    code, _, stderr = invoke("ask", "hi", "--check", "{not json")
    assert code == 2 and "not JSON" in stderr
    code, _, stderr = invoke("ask", "hi", "--check", '{"type": "psychic"}')
    assert_one_line_error(code, stderr, "checks.0: unknown check type")


def test_failures_list_on_a_fresh_home() -> None:
    code, stdout, _ = invoke("failures", "list")
    assert (code, stdout) == (0, "no failures recorded\n")


def test_status_with_nothing_running() -> None:
    code, stdout, _ = invoke("model", "status", "--json")
    assert code == 1
    assert json.loads(stdout) == {
        "managed": True, "url": None, "pid": None, "healthy": False, "model": None, "adapters": [],
        "replicas": [], "merged": None, "gate": [],
    }  # fmt: skip
    code, stdout, _ = invoke("model", "status")
    assert (code, stdout) == (1, "no managed vLLM server is running\n")


def test_stop_with_nothing_running() -> None:
    code, stdout, _ = invoke("model", "stop")
    assert (code, stdout) == (0, "no managed vLLM server was running\n")
