"""A fresh, temporary REFLEXA_HOME for a benchmark that drives the `reflexa` command."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def fresh_home(name: str, port: int) -> tuple[Path, dict[str, str]]:
    """The home (with the model `make demo` prepared copied in, so it is converted once) and
    an environment pointing `reflexa` at it and at the benchmark's own vLLM port, with no
    REFLEXA_* settings from outside."""
    home = Path(tempfile.mkdtemp(prefix=f"reflexa-{name}-"))
    models = ROOT / ".demo" / "models"
    if models.is_dir():
        shutil.copytree(models, home / "models")
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFLEXA_")}
    return home, env | {"REFLEXA_HOME": str(home), "REFLEXA_SERVER__PORT": str(port)}
