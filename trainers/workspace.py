"""What the trainers are told by the application, besides their own config: where they work
and what model they train. Built at the edge (`agent.settings.Settings.workspace()`) and
handed down; a training child process gets it as JSON."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from reflexa.trainers.cycle_config import CycleConfig
from reflexa.trainers.errors import TrainerError
from reflexa.trainers.launch import Launch


@dataclass(frozen=True)
class Workspace:
    home: Path  # adapters/, datasets/ and run/ live under it
    model_name: str  # the base model, as the server serves it
    model_dir: Path  # its HF folder: what is trained on
    max_lora_rank: int = 16  # the largest LoRA rank the server loads
    allow_unconfined: bool = False  # rewards and checks may run code the sandbox cannot isolate
    request_timeout_s: float = 120.0  # per request to the model server
    max_tokens: int = 512  # per answer, when the trainers ask the model themselves
    memory: bool = True  # the agent recalls memories: the gate measures with and without
    cycle: CycleConfig = field(default_factory=CycleConfig)
    launch: Launch = field(default_factory=Launch)  # where the training child runs

    @property
    def adapters_dir(self) -> Path:
        return self.home / "adapters"

    @property
    def by_name_dir(self) -> Path:
        """A link per registered adapter, named as vLLM serves it (`reflexa-<hash>`): where
        vLLM's filesystem resolver finds it, on any replica, on the first request for it."""
        return self.adapters_dir / "by-name"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    def with_cycle(self, **changes: object) -> Workspace:
        return dataclasses.replace(self, cycle=self.cycle.model_copy(update=changes))

    def to_json(self) -> str:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        models = {
            "cycle": self.cycle.model_dump(mode="json"),
            "launch": self.launch.model_dump(mode="json"),
        }
        return json.dumps(fields | models, default=str)

    @classmethod
    def from_json(cls, text: str) -> Workspace:
        """As `to_json` wrote it; anything else is refused in one line."""
        try:
            doc = json.loads(text)
            paths = {"home": Path(doc["home"]), "model_dir": Path(doc["model_dir"])}
            models = {"cycle": CycleConfig.model_validate(doc["cycle"]),
                      "launch": Launch.model_validate(doc.get("launch", {}))}  # fmt: skip
            return cls(**doc | paths | models)
        except (ValueError, KeyError, TypeError) as e:  # a ValidationError is a ValueError
            raise TrainerError(f"workspace: not one written by Workspace.to_json ({e})") from None
