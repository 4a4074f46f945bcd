"""The layout's rules: imports point one way, modules stay small, one store per command, and
the folders install under one namespace (`reflexa.`)."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
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
    assert "2 kept, 0 broken" in run.stdout


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


def test_every_package_is_listed_for_the_wheel() -> None:
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        "reflexa." + ".".join(init.parent.relative_to(ROOT).parts)
        for package in PACKAGES
        for init in (ROOT / package).rglob("__init__.py")
    }
    assert listed == found


def test_code_imports_the_folders_by_their_installed_names() -> None:
    # `from agent…` would load a second copy of a module from the source tree (tests run at
    # its root) or fail once installed.
    bare = []
    for path in [*modules(), *(ROOT / "tests").rglob("*.py"), *(ROOT / "bench").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                else [a.name for a in node.names] if isinstance(node, ast.Import) else []
            )  # fmt: skip
            bare += [f"{path.relative_to(ROOT)}:{node.lineno}" for n in names
                     if n.split(".")[0] in PACKAGES]  # fmt: skip
    assert bare == []


def test_the_wheel_installs_beside_another_top_level_evals(tmp_path: Path) -> None:
    """Built and installed into a fresh virtual environment that also has a package with a
    top-level `evals` module: both import, and `reflexa --help` runs. (Dependencies come
    from this environment's site-packages, through a path file; Reflexa from the wheel.)"""
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    wheels = tmp_path / "wheels"
    other = tmp_path / "other"
    (other / "evals").mkdir(parents=True)
    (other / "evals" / "__init__.py").write_text('WHO = "someone else\'s evals"\n')
    (other / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "other-evals"\nversion = "1.0"\n'
    )
    for source in (ROOT, other):
        subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                        str(source)], check=True, cwd=tmp_path)  # fmt: skip
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "-q", "install", "--no-deps", "--no-index",
                    *map(str, wheels.glob("*.whl"))], check=True)  # fmt: skip
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = subprocess.run([str(python), "-c", purelib], capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip
    here = next(p for p in sys.path if p.endswith("site-packages"))
    Path(site, "dependencies.pth").write_text(here + "\n")
    probe = (
        "import evals, reflexa.agent, reflexa.agent.cli, reflexa.graphs, reflexa.trainers, "
        "reflexa.evals.suite as suite; print(evals.WHO); print(reflexa.agent.__file__); "
        "print(suite.Suite.__name__)"
    )
    out = subprocess.run([str(python), "-c", probe], capture_output=True, text=True,
                         cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    who, agent_file, suite_name = out.stdout.splitlines()[:3]
    assert who == "someone else's evals"
    assert Path(agent_file).is_relative_to(venv) and suite_name == "Suite"
    helped = subprocess.run([str(venv / "bin" / "reflexa"), "--help"], capture_output=True,
                            text=True, cwd=tmp_path)  # fmt: skip
    assert helped.returncode == 0, helped.stderr[-2000:]
    assert "Usage: reflexa" in helped.stdout and "cycle" in helped.stdout


def test_every_module_imports() -> None:
    # A module no test imports (the demo, say) still has to import; mypy says so too, now
    # that a missing module of ours is an error there rather than Any.
    skip = ("__main__", "migrations", "_sandbox_")  # run as scripts or by alembic
    names = [
        "reflexa." + ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in modules()
        if not any(s in str(p.relative_to(ROOT)) for s in skip)
    ]
    probe = "import importlib, sys\nfor n in sys.argv[1:]: importlib.import_module(n)"
    run = subprocess.run([sys.executable, "-c", probe, *names], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(names) > 80
