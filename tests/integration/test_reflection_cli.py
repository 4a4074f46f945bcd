"""`reflexa ask`, `chat` and `failures` against the real vLLM server on the bundled model."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from reflexa.agent.app.agent import EpisodeRequest, EpisodeResult, open_agent
from reflexa.agent.app.checkpointer import open_checkpointer
from reflexa.agent.model.client import ModelClient
from reflexa.agent.settings import load_settings
from reflexa.agent.store import open_store
from reflexa.graphs import build_reflection_graph
from tests.integration.conftest import REFLEXA, Session

pytestmark = pytest.mark.integration
SUM = "What is 17 + 25? Reply with only the number."


def db_rows(session: Session, sql: str, *args: object) -> list[tuple]:
    with sqlite3.connect(session.home / "reflexa.db") as conn:
        return conn.execute(sql, args).fetchall()


def test_ask_json_records_the_episode(vllm_session: Session, server: ModelClient) -> None:
    doc = json.loads(vllm_session.run("ask", SUM, "--json").stdout)
    assert doc["answer"] and doc["status"] in ("passed", "repaired", "unresolved", "verifier_error")
    assert doc["attempts"], "no attempts"
    first = doc["attempts"][0]
    assert first["kind"] == "generate" and first["verdicts"]
    assert first["completion_tokens"] > 0
    assert {v["kind"] for v in first["verdicts"]} <= {"judge", "grounded"}
    rows = db_rows(
        vllm_session, "select status, n_attempts from episodes where id = ?", doc["episode_id"]
    )
    assert rows == [(doc["status"], len(doc["attempts"]))]


def test_grounded_check_drives_diagnosis_and_repair(
    vllm_session: Session, server: ModelClient
) -> None:
    check = json.dumps({"type": "numeric", "expected": 42, "strict": True})
    doc = json.loads(
        vllm_session.run("ask", SUM, "--check", check, "--max-repairs", "1", "--json").stdout
    )
    attempts = doc["attempts"]
    assert all(v["kind"] == "grounded" for a in attempts for v in a["verdicts"])
    if attempts[0]["passed"]:
        assert (doc["status"], len(attempts)) == ("passed", 1)
    else:  # the base model usually fails this one: one diagnosis, one repair
        assert len(attempts) == 2 and attempts[1]["kind"] == "repair"
        assert attempts[0]["diagnosis"] is not None
        assert doc["status"] in ("repaired", "unresolved")
        failures = json.loads(vllm_session.run("failures", "list", "--json").stdout)
        assert doc["episode_id"] in [f["id"] for f in failures]


def test_a_wrong_sum_in_chat_is_flagged_by_the_arithmetic_tool(
    vllm_session: Session, server: ModelClient
) -> None:
    """No checks given: the arithmetic tool's verdict says whether the number is right."""
    doc = json.loads(vllm_session.run("ask", "What is 57 + 68? Reply with only the number.",
                                      "--max-repairs", "0", "--json").stdout)  # fmt: skip
    (tool,) = [v for v in doc["attempts"][0]["verdicts"] if v["verifier"] == "arithmetic"]
    numbers = re.findall(r"-?\d+", doc["attempts"][0]["answer"])
    assert tool["passed"] is (bool(numbers) and numbers[-1] == "125"), (doc["answer"], tool)
    if not tool["passed"]:
        assert doc["status"] == "unresolved" and "125" not in tool["feedback"]


@pytest.mark.parametrize(
    ("check", "fits"),
    [
        ({"type": "regex", "pattern": "^[0-9]{3}$"}, lambda a: re.fullmatch(r"[0-9]{3}", a)),
        ({"type": "choice", "options": ["walrus", "narwhal"]}, lambda a: a in ("walrus",
                                                                                 "narwhal")),
    ],
)  # fmt: skip
def test_a_shape_failure_is_repaired_under_structured_outputs(
    vllm_session: Session, server: ModelClient, check: dict, fits: Callable[[str], object]
) -> None:
    """The model will not answer "Say hello." with three digits, or with the name of an
    animal; decoding under the check's regex (or options) makes the repair fit it."""
    doc = json.loads(vllm_session.run("ask", "Say hello.", "--check", json.dumps(check),
                                      "--max-repairs", "1", "--json").stdout)  # fmt: skip
    first, fix = doc["attempts"]
    assert not first["passed"] and first["diagnosis"]["strategy"] == "constrained"
    assert fix["strategy"] == "constrained" and fits(fix["answer"]), fix["answer"]
    assert doc["status"] == "repaired"


def test_a_tool_decided_failure_samples_candidates_until_one_is_verified(
    vllm_session: Session, server: ModelClient
) -> None:
    check = json.dumps({"type": "numeric"})  # a number (no shape); the tool decides the sum
    doc = json.loads(vllm_session.run("ask", "What is 93 + 29?", "--check", check,
                                      "--max-repairs", "1", "--json").stdout)  # fmt: skip
    first = doc["attempts"][0]
    if first["passed"]:
        pytest.skip("the model added 93 + 29 correctly: nothing to repair")
    fix = doc["attempts"][1]
    drawn = re.search(r"of (\d+) candidates", fix["note"])
    assert fix["strategy"] == "sample" and drawn is not None, fix["note"]
    if fix["passed"]:  # it stopped at the first request with a verified one: 2, 4 or 8 drawn
        assert int(drawn.group(1)) in (2, 4, 8)
    else:  # none verified: all 8, in requests of 2, 2 and 4
        assert fix["note"] == "none of 8 candidates passed the checks"
    assert fix["completion_tokens"] > first["completion_tokens"]  # at least two answers' worth


def test_model_written_code_is_run_in_the_sandbox(
    vllm_session: Session, server: ModelClient
) -> None:
    check = json.dumps({"type": "python_tests", "tests": "assert add(2, 3) == 5", "timeout_s": 5})
    prompt = "Write a Python function add(a, b) that returns the sum of a and b."
    doc = json.loads(vllm_session.run("ask", prompt, "--check", check, "--json").stdout)
    verdict = doc["attempts"][0]["verdicts"][0]
    assert verdict["verifier"] == "python_tests" and verdict["error"] is None
    assert verdict["passed"] or verdict["feedback"].startswith(("The tests failed", "The code"))


def test_chat_with_piped_input_then_resume(vllm_session: Session, server: ModelClient) -> None:
    script = "What is the capital of France?\n/trace\n/bad Paris\n/quit\n"
    first = subprocess.run(
        [REFLEXA, "chat"], input=script, env=vllm_session.env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stdout + first.stderr
    assert "Paris" in first.stdout
    assert "recorded (bad): thank you" in first.stdout
    thread = first.stdout.split("thread ", 1)[1].split()[0]
    (episode_id,) = [
        r[0] for r in db_rows(vllm_session, "select id from episodes where thread_id = ?", thread)
    ]
    assert f"episode {episode_id}" in first.stdout  # the /trace table
    corrections = db_rows(
        vllm_session,
        "select chosen, source, verified from corrections where episode_id = ?",
        episode_id,
    )
    assert corrections == [("Paris", "user", 1)]
    ratings = db_rows(vllm_session, "select rating from ratings where episode_id = ?", episode_id)
    assert ratings == [("bad",)]

    again = subprocess.run(
        [REFLEXA, "chat", "--thread", thread], input="And of Italy?\n", env=vllm_session.env,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert len(db_rows(vllm_session, "select id from episodes where thread_id = ?", thread)) == 2
    assert [m["content"] for m in _thread_messages(vllm_session, thread)][::2] == [
        "What is the capital of France?",
        "And of Italy?",
    ]


def _thread_messages(session: Session, thread: str) -> list[dict]:
    async def read() -> list[dict]:
        settings = load_settings().model_copy(update={"home": session.home})
        async with open_checkpointer(settings) as saver:
            graph = build_reflection_graph(saver)
            state = await graph.aget_state({"configurable": {"thread_id": thread}})
            return list(state.values["messages"])

    return asyncio.run(read())


def test_model_timeout_and_oversized_context_are_recorded_errors(
    vllm_session: Session, server: ModelClient, tmp_path: Path
) -> None:
    env = vllm_session.env | {"REFLEXA_REQUEST_TIMEOUT_S": "0.01"}
    slow = subprocess.run(
        [REFLEXA, "ask", SUM], env=env, capture_output=True, text=True, timeout=120
    )
    assert slow.returncode == 1
    assert slow.stderr.startswith("Error: the model did not answer in time"), slow.stderr
    assert "Traceback" not in slow.stderr

    too_long = "word " * 3000  # under the character limit, over the model's 2048 tokens
    result = vllm_session.run("ask", too_long, "--json", check=False)
    assert result.returncode == 1
    doc = json.loads(result.stdout)
    assert doc["status"] == "error"
    assert doc["error"].startswith("the model server refused the request (400)")
    rows = db_rows(vllm_session, "select status from episodes where id = ?", doc["episode_id"])
    assert rows == [("error",)]


def test_agents_in_consecutive_event_loops(vllm_session: Session, server: ModelClient) -> None:
    """langchain-openai caches an HTTP client per process; each agent must bring its own."""
    settings = load_settings()

    async def once() -> EpisodeResult:
        with open_store(settings) as store:
            async with open_agent(settings, server, store) as agent:
                return await agent.run(EpisodeRequest(SUM, [{"type": "numeric", "expected": 42}]))

    results = [asyncio.run(once()) for _ in range(2)]
    assert [r.error for r in results] == [None, None]
