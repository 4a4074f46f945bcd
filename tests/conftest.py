"""Every test gets an empty REFLEXA_HOME and no REFLEXA_* settings from the outer environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(os.environ):
        if name.startswith("REFLEXA_"):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    monkeypatch.setenv("REFLEXA_HOME", str(home))
    monkeypatch.chdir(tmp_path)  # no stray ./reflexa.toml
    return home
