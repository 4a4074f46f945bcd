"""Where the training child runs: the launcher's command, and refusals in one line."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from reflexa.agent.errors import ReflexaError
from reflexa.agent.settings import load_settings
from reflexa.trainers.errors import TrainerError
from reflexa.trainers.launch import EXAMPLES, Launch
from reflexa.trainers.workspace import Workspace

ARGS = ["--workspace", "w.json", "--out", "adapters/.partial-1-x"]


def test_each_launcher_runs_the_same_child_with_the_same_arguments() -> None:
    assert Launch().command(ARGS) == [sys.executable, "-m", "reflexa.trainers.train", *ARGS]
    config = EXAMPLES / "ddp.yaml"
    accelerate = Launch(launcher="accelerate", accelerate_config=config).command(ARGS)
    assert accelerate == [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                          str(config), "-m", "reflexa.trainers.train", *ARGS]  # fmt: skip
    assert sorted(p.name for p in EXAMPLES.glob("*.yaml")) == [
        "cpu.yaml", "ddp.yaml", "deepspeed-zero2.yaml", "fsdp.yaml"
    ]  # fmt: skip


def test_a_launcher_that_cannot_run_is_refused_in_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.yaml"
    with pytest.raises(TrainerError, match=f"accelerate_config {missing}: no such file"):
        Launch(launcher="accelerate", accelerate_config=missing).command(ARGS)
    if importlib.util.find_spec("ray") is None:
        with pytest.raises(TrainerError, match=r"Ray is not installed \(pip install"):
            Launch(launcher="ray", ray_address="http://head:8265").command(ARGS)
    (tmp_path / "reflexa.toml").write_text('[train]\nlauncher = "accelerate"\n')
    with pytest.raises(ReflexaError, match="launcher accelerate needs accelerate_config"):
        load_settings(tmp_path / "reflexa.toml")
    (tmp_path / "reflexa.toml").write_text('[train]\nlauncher = "ray"\n')
    with pytest.raises(ReflexaError, match="launcher ray needs ray_address"):
        load_settings(tmp_path / "reflexa.toml")


def test_the_training_child_gets_the_launcher_with_its_workspace(tmp_path: Path) -> None:
    (tmp_path / "reflexa.toml").write_text(
        f'[train]\nlauncher = "accelerate"\naccelerate_config = "{EXAMPLES / "fsdp.yaml"}"\n'
    )
    ws = load_settings(tmp_path / "reflexa.toml").workspace()
    again = Workspace.from_json(ws.to_json())
    assert again.launch == ws.launch and again.launch.accelerate_config == EXAMPLES / "fsdp.yaml"
