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


def register(home: Path, folder: Path, version: str) -> None:
    """A LoRA folder registered as adapter `version` of the bench's home, ready to promote or
    to answer through (`--adapter VERSION`)."""
    from reflexa.agent.settings import Settings
    from reflexa.agent.store import Store
    from tests.helpers import register_adapter

    settings = Settings(home=home)
    with Store.open(settings.database) as store:
        register_adapter(settings, store, folder, version)
