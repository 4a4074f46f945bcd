"""The layout's rules: imports point one way, modules stay small, one store per command."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("agent", "graphs", "trainers", "evals")
MAX_LINES = 400


def modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def test_layers_point_one_way() -> None:
    # import-linter's layers contract in pyproject.toml: a wrong-way import breaks it.
    lint = Path(sys.executable).with_name("lint-imports")
    run = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "1 kept, 0 broken" in run.stdout


def test_no_module_is_over_400_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for p in modules()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}  # fmt: skip
    assert long == {}


def test_the_store_is_opened_from_settings_in_one_place() -> None:
    # Everything else gets its store from its command's edge (open_store: the configured
    # database and memory bound; Store.open directly once lost memory.max_entries).
    opened = []
    for path in modules():
        if path.is_relative_to(ROOT / "agent" / "store"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr == "open"
                and isinstance(node.value, ast.Name)
                and node.value.id == "Store"
            ):
                opened.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert opened == []
