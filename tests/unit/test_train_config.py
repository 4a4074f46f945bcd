"""The training config: defaults, YAML, and refusals that name the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from reflexa.trainers.config import TrainConfig
from reflexa.trainers.errors import TrainerError


def test_defaults_match_the_measured_cpu_recipe() -> None:
    c = TrainConfig()
    assert (c.method, c.lora_r, c.learning_rate, c.batch_size, c.epochs) == ("sft", 16, 2e-4, 8, 3)
    assert c.target_modules == ("q_proj", "k_proj", "v_proj", "o_proj")


def test_yaml_overrides(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("method: dpo\nmax_steps: 5\ntarget_modules: [q_proj, v_proj]\nepochs: 1\n")
    c = TrainConfig.from_yaml(path)
    assert (c.method, c.max_steps, c.target_modules, c.epochs) == (
        "dpo",
        5,
        ("q_proj", "v_proj"),
        1,
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lora_r: lots", "lora_r: Input should be a valid integer"),
        ("lora_rank: 8", "unknown setting(s) lora_rank"),
        ("lora_r: 0", "lora_r must be positive"),
        ("method: ppo", "method"),
        ("- 1", "a mapping"),
        ("a: [", "cannot read"),
    ],
)
def test_bad_yaml_is_refused_with_the_reason(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(TrainerError, match=r"t\.yaml") as e:
        TrainConfig.from_yaml(path)
    assert message in str(e.value)
