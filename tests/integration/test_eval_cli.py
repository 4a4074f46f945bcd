"""`reflexa eval` through the real command, against the real vLLM server."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from reflexa.agent.model.client import ModelClient
from tests.helpers import finished_in_open_runs
from tests.integration.conftest import REFLEXA, Session

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


def test_draws_come_from_the_real_server_in_one_request_and_are_scored(
    vllm_session: Session, server: ModelClient
) -> None:
    """`--draws 3`: each item answered 3 more times by vLLM (`n`), each draw scored after the
    loop (by scoring where the item has it, its visible checks recorded apart), and the mean
    share of an item's 4 answers that passed reported."""
    args = ("eval", "run", "sums", "--split", "dev", "--limit", "6", "--no-reflect")
    args += ("--draws", "3")
    doc = json.loads(vllm_session.run(*args, "--json").stdout)
    fraction = doc["metrics"]["overall"]["pass_fraction"]
    assert fraction["answers"] == 4 and 0 <= fraction["mean"] <= 1
    with sqlite3.connect(vllm_session.home / "reflexa.db") as conn:
        rows = conn.execute(
            "select draws from episodes where eval_run_id = ?", (doc["run_id"],)
        ).fetchall()
    draws = [json.loads(d) for (d,) in rows]
    assert len(draws) == 6 and all(len(d) == 3 for d in draws)
    assert all(set(x) == {"answer", "passed", "checks_passed", "correct"} for d in draws for x in d)
    assert all(x["passed"] == x["correct"] for d in draws for x in d)  # sums items have scoring


def test_a_malformed_suite_is_refused_with_file_and_line(
    vllm_session: Session, tmp_path: Path
) -> None:
    suite = tmp_path / "mine.yaml"
    suite.write_text("- id: a\n  prompt: hi\n- id: a\n  prompt: again\n")
    result = vllm_session.run("eval", "run", str(suite), check=False)
    assert result.returncode == 1
    assert result.stderr.startswith(f"Error: {suite}:3: duplicate id 'a'"), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.stops_server
def test_vllm_killed_mid_eval_then_the_run_resumes(
    vllm_session: Session, server: ModelClient
) -> None:
    """The server dies half-way: the command stops with a clear error; after a restart the
    same command resumes, and every item ends up answered exactly once."""
    args = ["eval", "run", "json-extract", "--split", "test", "--limit", "16", "--no-reflect"]
    args += ["--concurrency", "2", "--json"]
    db = vllm_session.home / "reflexa.db"
    running = subprocess.Popen(
        [REFLEXA, *args], env=vllm_session.env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while finished_in_open_runs(db) < 3:
        assert running.poll() is None and time.monotonic() < deadline, running.stderr
        time.sleep(0.1)
    pid = json.loads((vllm_session.home / "run" / "vllm.json").read_text())["pid"]
    os.killpg(pid, signal.SIGKILL)  # as a crash or the OOM killer would
    _, stderr = running.communicate(timeout=120)
    assert running.returncode == 1, stderr
    assert "the model server stopped answering" in stderr and "Traceback" not in stderr
    assert "run the same command" in stderr

    vllm_session.run("model", "serve")
    doc = json.loads(vllm_session.run(*args).stdout)
    assert doc["resumed"] is True
    assert doc["metrics"]["overall"]["items"] == 16 and doc["metrics"]["overall"]["errors"] == 0
    with sqlite3.connect(db) as conn:
        answered = conn.execute(
            "select item_id, count(*) from episodes where eval_run_id = ? "
            "and status not in ('running', 'error') group by item_id",
            (doc["run_id"],),
        ).fetchall()
    assert len(answered) == 16 and {n for _, n in answered} == {1}  # none lost, none twice
