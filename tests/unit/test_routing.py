"""The routing table the record keeps: a repair that never passes in a place is skipped
there, on the store's real records (SQLite), and the graph routes around it."""

from __future__ import annotations

import asyncio
import uuid
from hashlib import sha1
from pathlib import Path
from typing import Any

from reflexa.agent.app.routing import TTL_S, RepairTable, place
from reflexa.agent.store import Store
from reflexa.agent.store.db import sqlite_url
from reflexa.evals.metrics import by_strategy
from reflexa.evals.runner import ItemOutcome
from reflexa.graphs import ReflectionContext, build_reflection_graph, turn_input
from reflexa.graphs.nodes import EXPLORE
from tests.fakes import ScriptedChatModel

SCHEMA = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
JSON = [{"type": "json", "schema": SCHEMA}]
EXPLORER = next(f"{i:032x}" for i in range(100)
                if int(sha1(f"{i:032x}".encode()).hexdigest(), 16) % EXPLORE == 0)  # fmt: skip
DIAGNOSIS = '{"cause": "wrong sum", "fix": "add again"}'


def record(store: Store, model: str, suite: str | None, strategy: str, passed: bool) -> None:
    """One episode whose first answer failed and whose one repair used `strategy`."""
    eid = uuid.uuid4().hex
    store.start_episode(id=eid, thread_id=eid, prompt="p", messages=[], checks=JSON,
                        model=model, suite=suite)  # fmt: skip
    attempt = {"kind": "generate", "answer": "x", "verdicts": [], "passed": False, "score": 0.0,
               "model": model}  # fmt: skip
    repair = attempt | {"kind": "repair", "strategy": strategy, "passed": passed}
    store.finish_episode(eid, status="unresolved", answer="x", error=None,
                         attempts=[attempt, repair], latency_s=1.0)  # fmt: skip


def test_the_table_counts_each_strategy_s_repairs_and_passes_in_a_place(tmp_path: Path) -> None:
    now = [0.0]
    with Store.open(sqlite_url(tmp_path / "db.sqlite")) as store:
        table = RepairTable(store, clock=lambda: now[0])
        for _ in range(3):
            record(store, "m", "sums", "constrained", passed=False)
            record(store, "m", "sums", "sample", passed=False)
        record(store, "m", "sums", "sample", passed=True)
        record(store, "m", "json", "constrained", passed=False)
        assert table("m", "sums", JSON) == {"constrained": (3, 0), "sample": (4, 1)}
        assert table("m", "json", JSON) == {"constrained": (1, 0)}
        assert table("another-model", "sums", JSON) == {}  # a new adapter starts afresh
        for _ in range(3):
            record(store, "m", "json", "constrained", passed=False)
        assert table("m", "json", JSON) == {"constrained": (1, 0)}  # read once, kept a while
        now[0] += TTL_S + 1
        assert table("m", "json", JSON) == {"constrained": (4, 0)}


def test_chat_counts_by_the_kinds_of_checks() -> None:
    assert place(None, JSON) == "chat: json"
    assert place(None, []) == "chat: judge"
    assert place("sums", JSON) == "sums"


def futile_constrained(model: str, suite: str | None, checks: list[dict[str, Any]]) -> dict:
    return {"constrained": (20, 0), "sample": (20, 3)}


def turn(script: list[str], routing: Any, episode_id: str = "", **kw: Any) -> tuple[dict, Any]:
    llm = ScriptedChatModel(script=script)
    ctx = ReflectionContext(llm=llm, model_name="m", routing=routing, **kw)
    state = asyncio.run(
        build_reflection_graph().ainvoke(
            turn_input("Give the age.", JSON, max_repairs=1, episode_id=episode_id), context=ctx
        )
    )
    return state, llm


def test_the_graph_routes_around_a_futile_strategy() -> None:
    state, _ = turn(["age: 36", '{"age": 36}', '{"age": 36}'], futile_constrained)
    diagnosis = state["attempts"][0]["diagnosis"]
    assert diagnosis["strategy"] == "sample"  # by rule, constrained comes first for a shape
    assert diagnosis["skipped"] == {
        "constrained": "the record shows constrained passing 0 of 20 repairs here with this "
        "model (fewer than 1 in 20)"
    }
    assert state["status"] == "repaired"
    by_rule, _ = turn(["age: 36", '{"age": 36}'], None)
    assert by_rule["attempts"][0]["diagnosis"]["strategy"] == "constrained"


def test_when_the_last_resort_never_fixes_the_turn_ends() -> None:
    def all_futile(model: str, suite: str | None, checks: list) -> dict:
        return {s: (25, 0) for s in ("constrained", "sample", "feedback")}

    state, llm = turn(["age: 36"], all_futile)
    assert state["attempts"][0]["diagnosis"]["strategy"] is None
    assert state["attempts"][0]["diagnosis"]["why"].startswith(
        "the record shows feedback passing 0"
    )
    assert (state["status"], len(state["attempts"]), len(llm.calls)) == ("unresolved", 1, 1)


def test_one_turn_in_ten_routes_by_rule_and_a_broken_record_costs_nothing() -> None:
    state, _ = turn(["age: 36", '{"age": 36}'], futile_constrained, episode_id=EXPLORER)
    assert state["attempts"][0]["diagnosis"]["strategy"] == "constrained"

    def broken(model: str, suite: str | None, checks: list) -> dict:
        raise RuntimeError("database is locked")

    state, _ = turn(["age: 36", '{"age": 36}'], broken)
    assert state["attempts"][0]["diagnosis"]["strategy"] == "constrained"


def test_reports_count_the_skips() -> None:
    log = [{"strategy": "sample", "passed": False, "latency_s": 1.0, "tokens": 5}]
    o = ItemOutcome("i", "s", [], "e", "unresolved", False, False, False, 1, 10, 1.0,
                    repair_log=log, skipped=["constrained"])  # fmt: skip
    by = by_strategy([o, o])
    assert by["constrained"]["skipped"] == 2 and by["constrained"]["repairs"] == 0
    assert by["sample"]["repairs"] == 2 and by["sample"]["skipped"] == 0


def test_after_a_tool_checked_sample_finds_nothing_only_a_proven_strategy_goes_on() -> None:
    """The arithmetic tool checked both candidates and none passed: a feedback repair the
    record does not show fixing here is not tried (measured on sums: 0 of 25); one that has
    fixed here is; a turn that explores tries it anyway, so the record can learn. Where the
    record shows sampling never passing here, no repair is tried at all."""
    script = ["181", "180", "182", DIAGNOSIS, "75"]

    def sums(record: dict, episode_id: str = "") -> tuple[dict, Any]:
        llm = ScriptedChatModel(script=script)
        ctx = ReflectionContext(llm=llm, model_name="m", routing=lambda *_: record, samples=2)
        turn = turn_input("What is 34 + 41?", [{"type": "numeric"}], 2, episode_id)
        return asyncio.run(build_reflection_graph().ainvoke(turn, context=ctx)), llm

    state, llm = sums({"sample": (30, 2), "feedback": (3, 0)})
    first, sampled = state["attempts"]
    assert first["diagnosis"]["strategy"] == "sample"
    assert sampled["diagnosis"]["strategy"] is None and llm.script == script[3:]  # unasked
    assert sampled["diagnosis"]["why"] == (
        "samples checked by arithmetic found no passing answer, and the record shows no "
        "feedback repair fixing here (3 tried)"
    )
    assert set(sampled["diagnosis"]["skipped"]) == {"constrained", "feedback"}
    assert state["status"] == "unresolved"
    proven, _ = sums({"feedback": (40, 2)})  # 1 in 20: it fixes here
    assert [a["strategy"] for a in proven["attempts"]] == [None, "sample", "feedback"]
    rarely, _ = sums({"feedback": (41, 2)})  # fewer than 1 in 20 (min_tries)
    assert [a["strategy"] for a in rarely["attempts"]] == [None, "sample"]
    assert proven["status"] == "repaired"
    explored, _ = sums({}, episode_id=EXPLORER)
    assert [a["strategy"] for a in explored["attempts"]] == [None, "sample", "feedback"]
    never, llm = sums({"sample": (20, 0)})  # the record's samples never passed here
    assert [a["strategy"] for a in never["attempts"]] == [None]
    assert set(never["attempts"][0]["diagnosis"]["skipped"]) == {
        "sample",
        "constrained",
        "feedback",
    }
    assert llm.script == script[1:]  # the first answer alone


def test_a_strategy_passing_fewer_than_1_in_min_tries_is_ruled_out() -> None:
    from reflexa.graphs.nodes import _futile

    first = [{"kind": "generate", "answer": "x", "verdicts": [], "passed": False}]
    record = {"constrained": (19, 0), "feedback": (20, 0), "sample": (20, 1)}
    assert list(_futile(record, first, JSON, min_tries=20)) == ["feedback"]
    record = {"constrained": (41, 2), "feedback": (40, 2), "sample": (60, 3)}
    assert _futile(record, first, JSON, min_tries=20) == {
        "constrained": "the record shows constrained passing 2 of 41 repairs here with this "
        "model (fewer than 1 in 20)"
    }
    assert _futile(None, first, JSON, min_tries=20) == {}  # exploring, or no record
