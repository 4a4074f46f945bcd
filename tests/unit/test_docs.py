"""The documentation: README short and true to its links, the MkDocs site strict."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_is_short_and_its_links_resolve() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    assert "make demo" in text and "make test" in text  # the two commands
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if not target.startswith("http"):
            assert (ROOT / target).is_file(), f"README links to {target}, which is not there"
    for name in re.findall(r"`(bench/results/[\w.-]+)`", text):
        assert (ROOT / name).is_file(), f"README cites {name}, which is not there"


def test_the_docs_build_strictly_with_the_generated_reference(tmp_path: Path) -> None:
    site = tmp_path / "site"
    env = os.environ | {"NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    cli = (site / "reference" / "cli" / "index.html").read_text()
    assert "Usage: reflexa eval run [OPTIONS]" in cli  # from click's own help
    settings = (site / "reference" / "settings" / "index.html").read_text()
    assert "REFLEXA_REFLECT__ESCALATE" in settings and "REFLEXA_SERVER__CPU_BIND" in settings
    results = (site / "results" / "index.html").read_text()
    linked = re.findall(r'href="files/([\w.-]+)"', results)
    assert linked and all((site / "results" / "files" / name).is_file() for name in linked)
