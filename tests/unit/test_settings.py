from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from reflexa.agent.cli import cli
from reflexa.agent.errors import ReflexaError
from reflexa.agent.settings import BUNDLED_MODEL, Settings, load_settings
from reflexa.trainers.workspace import Workspace


def test_defaults(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REFLEXA_HOME")
    settings = load_settings()
    assert settings.home_dir == Path("~/.reflexa").expanduser().resolve()
    assert settings.model_dir == settings.home_dir / "models" / BUNDLED_MODEL
    assert settings.run_dir == settings.home_dir / "run"
    assert settings.vllm_url is None
    assert (settings.server.host, settings.server.port) == ("127.0.0.1", 8000)
    assert settings.server.max_lora_rank >= 16


def test_toml_file_is_read_and_env_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "reflexa.toml").write_text(
        'vllm_url = "http://gpu-box:8000"\n[server]\nport = 9000\nhost = "127.0.0.2"\n'
    )
    monkeypatch.setenv("REFLEXA_SERVER__PORT", "9001")
    settings = load_settings()
    assert settings.vllm_url == "http://gpu-box:8000"
    assert settings.server.port == 9001  # env beats the file
    assert settings.server.host == "127.0.0.2"  # the file's other keys survive the merge


def test_config_from_env_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "elsewhere.toml"
    config.write_text('[model]\nname = "mine"\npath = "/srv/models/mine"\n')
    monkeypatch.setenv("REFLEXA_CONFIG", str(config))
    settings = load_settings()
    assert settings.model.name == "mine"
    assert settings.model_dir == Path("/srv/models/mine")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server\nport = 1", "not valid TOML"),
        ("[server]\nport = 70000\n", "server.port"),
        ("[server]\nport = 'eighty'\n", "server.port"),
        ("no_such_key = 1\n", "no_such_key"),
        ("[reflect]\nrepair_tokens = 0\n", "reflect.repair_tokens"),
        ("[reflect]\nrepair_seconds = -1\n", "reflect.repair_seconds"),
        ("[reflect]\nsamples = 1000\n", "reflect.samples"),
        ("[server]\ncpu_bind = 'half'\n", "server.cpu_bind"),
        ("[cycle]\nmethods = ['sft', 'sgd']\n", "unknown recipe 'sgd'"),
        ("[cycle]\nmethods = ['sft@lr=1e-4']\n", "'lr=1e-4' is not SETTING=VALUE"),
        ("[cycle]\nmethods = ['sft@epochs=two']\n", "epochs must be a number, not 'two'"),
        ("[cycle]\nmethods = ['sft@learning_rate=0']\n", "learning_rate must be positive"),
        ("[cycle]\nmethods = ['sft@rehearsal=1']\n", "rehearsal is a share of the rows, below 1"),
        ("[cycle]\nrehearsal = 1\n", "cycle.rehearsal"),
    ],
)
def test_bad_config_names_the_file(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    with pytest.raises(ReflexaError, match=message) as e:
        load_settings(config)
    assert str(config) in str(e.value)


def test_missing_explicit_config(tmp_path: Path) -> None:
    with pytest.raises(ReflexaError, match="config file not found"):
        load_settings(tmp_path / "nope.toml")


def test_bad_env_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFLEXA_SERVER__PORT", "zero")
    with pytest.raises(ReflexaError, match=r"server\.port"):
        load_settings()


def test_cli_reports_bad_config_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("[server\n")
    result = CliRunner().invoke(cli, ["--config", "bad.toml", "model", "status"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: bad.toml: not valid TOML")
    assert "Traceback" not in result.output


def test_a_child_process_gets_exactly_its_parents_workspace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The training child is handed the trainers' workspace as JSON: the environment does not
    # change it on the way, and no secret travels (the child needs none).
    monkeypatch.setenv("REFLEXA_CYCLE__SAMPLE_N", "5")
    parent = Settings(api_key="s3cret-key", serve={"api_token": "s3cret-token"})  # type: ignore[arg-type]
    text = parent.workspace().to_json()
    monkeypatch.setenv("REFLEXA_CYCLE__SAMPLE_N", "9")
    child = Workspace.from_json(text)
    assert child == parent.workspace() and child.cycle.sample_n == 5
    assert child.model_dir == parent.model_dir and child.home == parent.home_dir
    assert "s3cret" not in text
