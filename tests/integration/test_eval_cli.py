"""`reflexa eval` through the real command, against the real vLLM server."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from reflexa.agent.model.client import ModelClient
from tests.integration.conftest import Session

pytestmark = pytest.mark.integration


def test_eval_list_names_the_builtin_suites(vllm_session: Session) -> None:
    names = [s["name"] for s in json.loads(vllm_session.run("eval", "list", "--json").stdout)]
    assert {"arithmetic", "json-extract"} <= set(names)


def test_eval_run_records_episodes_and_metrics(vllm_session: Session, server: ModelClient) -> None:
    args = ("eval", "run", "json-extract", "--split", "test", "--limit", "4", "--no-reflect")
    doc = json.loads(vllm_session.run(*args, "--json").stdout)
    overall = doc["metrics"]["overall"]
    assert overall["items"] == 4 and overall["errors"] == 0
    first = overall["first_attempt_pass"]
    assert 0 <= first["k"] <= 4 and first["ci95"][0] <= first["rate"] <= first["ci95"][1]
    assert overall["final_pass"] == first  # no reflection: nothing can change
    assert list(doc["metrics"]["by_split"]) == ["test"]
    html = Path(doc["report"]["html"])
    assert html.parent == vllm_session.home / "reports" / doc["run_id"]
    assert html.read_text().count("data:image/png;base64,") == 3
    with sqlite3.connect(vllm_session.home / "reflexa.db") as conn:
        rows = conn.execute(
            "select suite, split, count(*) from episodes where eval_run_id = ? group by 1, 2",
            (doc["run_id"],),
        ).fetchall()
        status = conn.execute("select status from eval_runs where id = ?", (doc["run_id"],))
        assert status.fetchone() == ("done",)
    assert rows == [("json-extract", "test", 4)]


def test_a_malformed_suite_is_refused_with_file_and_line(
    vllm_session: Session, tmp_path: Path
) -> None:
    suite = tmp_path / "mine.yaml"
    suite.write_text("- id: a\n  prompt: hi\n- id: a\n  prompt: again\n")
    result = vllm_session.run("eval", "run", str(suite), check=False)
    assert result.returncode == 1
    assert result.stderr.startswith(f"Error: {suite}:3: duplicate id 'a'"), result.stderr
    assert "Traceback" not in result.stderr
