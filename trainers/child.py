"""The training child: `python -m reflexa.trainers.train` in its own process, so the model
server keeps answering while it trains and a crash or kill promotes nothing."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from reflexa.trainers.errors import TrainerError
from reflexa.trainers.registry import Built
from reflexa.trainers.workspace import Workspace


def dataset_name(cycle_id: str, suffix: str = "") -> str:
    return f"cycle-{time.strftime('%Y%m%d-%H%M%S')}-{cycle_id[:8]}" + re.sub(
        r"[^\w.-]", "-", suffix
    )


def train_in_child(
    ws: Workspace,
    dataset_dir: Path,
    method: str,
    start: Path | None,
    parent: str | None,
    max_steps: int | None = None,
    settings: dict[str, Any] | None = None,
) -> Built:
    """`python -m reflexa.trainers.train` in its own process, given the workspace as a file:
    its progress goes to our stderr, the built folder (ours to register) to us. A non-zero
    exit (an error, a kill) fails the stage. `max_steps` and `settings` (training config
    fields, a method's own): instead of the config's."""
    ws.run_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=ws.run_dir, suffix=".json") as file:
        file.write(ws.to_json())
        file.flush()
        partial = ws.adapters_dir / f".partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        args = ["--workspace", file.name, "--dataset", str(dataset_dir), "--method", method,
                "--owner", str(os.getpid()), "--out", str(partial)]  # fmt: skip
        args += ["--start", str(start)] if start else []
        args += ["--parent", parent] if parent else []
        args += ["--max-steps", str(max_steps)] if max_steps else []
        args += ["--settings", json.dumps(settings)] if settings else []
        command = ws.launch.command(args)
        child = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
    if child.returncode != 0:
        how = (
            f"killed by signal {-child.returncode}"
            if child.returncode < 0
            else (f"exit status {child.returncode}")
        )
        raise TrainerError(f"training failed ({how}); nothing was promoted")
    try:  # the last line: a launcher may print its own lines before it
        doc = json.loads(child.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise TrainerError("training printed no result; nothing was promoted") from None
    return Built(Path(doc["path"]), doc["metadata"])
