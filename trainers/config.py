"""How an adapter is trained. Defaults suit the bundled 135M model on a 2-core CPU
(FINDINGS: r=16 on q/k/v/o, lr 2e-4, batch 8, 3 epochs, float32, no gradient checkpointing)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import TypeAdapter, ValidationError

from reflexa.evals.checks import describe_validation_error
from reflexa.trainers.cycle_config import CycleConfig
from reflexa.trainers.errors import TrainerError

Method = Literal["sft", "dpo", "grpo", "kto"]


@dataclass(frozen=True)
class TrainConfig:
    method: Method = "sft"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    learning_rate: float = 2e-4
    batch_size: int = 8
    epochs: float = 3.0
    max_steps: int = -1  # > 0 overrides epochs
    max_length: int = 512
    min_examples: int = 16  # fewer corrections than this: nothing is trained
    dpo_beta: float = 0.1
    kto_beta: float = 0.1  # KTO (people's thumbs up and down): how far from the reference
    # GRPO (trainers/rewards.py: the loop's own verifiers are the reward). Each step draws
    # `grpo_generations` completions for each of grpo_batch_size / grpo_generations prompts.
    # Chosen on dev (bench/results/grpo-defaults-2026-12-05.json, sums, from a gold SFT
    # adapter at 67 % on dev, this project's 2-core CPU, equal completions): groups of 4 at
    # 8 a step for 240 steps reached 70 % on dev at 2.4 s a step; groups of 8 at 32 a step
    # for 60 steps 62 % at 12.6 s a step. One run each on 100 items: the cheaper setting
    # scored higher, not significantly so. (The earlier choice, groups of 8 at 32 a step,
    # was made on the test split of a GPU run: a decision test may not make.)
    grpo_generations: int = 4
    grpo_batch_size: int = 8
    grpo_max_completion: int = 64  # tokens per completion: short answers (sums, JSON)
    grpo_temperature: float = 1.0
    grpo_beta: float = 0.0  # KL to the base model; 0: no reference model is kept (TRL default)
    # Passes over the prompts (max_steps > 0 overrides): 2.4 passes over a suite's 200
    # training prompts are the 240 steps of 8 completions measured above.
    grpo_epochs: float = 2.4
    seed: int = 0
    threads: int | None = None  # torch threads on the CPU; None: all cores
    extra: dict[str, Any] = field(default_factory=dict)  # passed on to SFTConfig / DPOConfig

    def __post_init__(self) -> None:
        positive = (
            "lora_r",
            "lora_alpha",
            "learning_rate",
            "batch_size",
            "epochs",
            "max_length",
            "min_examples",
            "dpo_beta",
            "kto_beta",
            "grpo_batch_size",
            "grpo_max_completion",
            "grpo_temperature",
            "grpo_epochs",
        )
        problems = [f"{name} must be positive" for name in positive if not getattr(self, name) > 0]
        if self.method not in ("sft", "dpo", "grpo", "kto"):
            problems.append(f"method must be sft, dpo, grpo or kto, not {self.method!r}")
        if self.grpo_generations < 2:
            problems.append("grpo_generations must be at least 2 (a group to compare)")
        elif self.grpo_batch_size % self.grpo_generations:
            problems.append(
                f"grpo_batch_size ({self.grpo_batch_size}) must be a multiple of "
                f"grpo_generations ({self.grpo_generations})"
            )
        if not 0 <= self.lora_dropout < 1:
            problems.append("lora_dropout must be in [0, 1)")
        if problems:
            raise TrainerError(f"training config: {'; '.join(problems)}")

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"target_modules": list(self.target_modules)}

    @classmethod
    def from_yaml(cls, path: Path) -> TrainConfig:
        """A YAML mapping of these fields; unknown keys and wrong types are refused."""
        try:
            doc = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise TrainerError(f"{path}: cannot read the training config ({e})") from None
        if not isinstance(doc, dict):
            raise TrainerError(f"{path}: a training config is a mapping of settings")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(doc) - set(known))
        if unknown:
            raise TrainerError(
                f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(known)}"
            )
        try:
            return TypeAdapter(cls).validate_python(doc)
        except ValidationError as e:
            raise TrainerError(f"{path}: {describe_validation_error(e)}") from None
        except TrainerError as e:
            raise TrainerError(f"{path}: {e}") from None


def train_config(cycle: CycleConfig) -> TrainConfig:
    """The configured training (`cycle.train_config`, a YAML file), else the defaults."""
    path = cycle.train_config
    return TrainConfig.from_yaml(path) if path is not None else TrainConfig()
