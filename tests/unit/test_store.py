from __future__ import annotations

import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import inspect

from reflexa.agent.store import Store, prompt_hash
from reflexa.agent.store.db import sqlite_url
from reflexa.agent.store.tables import Attempt, Correction, Episode


def attempt(answer: str, passed: bool, kind: str = "generate") -> dict:
    verdict = {
        "verifier": "exact",
        "passed": passed,
        "score": float(passed),
        "feedback": "",
        "kind": "grounded",
        "error": None,
    }
    return {
        "kind": kind,
        "answer": answer,
        "verdicts": [verdict],
        "passed": passed,
        "score": float(passed),
        "model": "m",
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "latency_s": 0.1,
    }


def start(store: Store, id: str, prompt: str = "2+2?") -> None:
    store.start_episode(
        id=id,
        thread_id=f"t-{id}",
        prompt=prompt,
        messages=[{"role": "user", "content": prompt}],
        checks=[],
        model="m",
    )


def test_sqlite_file_is_migrated_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "new" / "reflexa.db"  # its folder is created too
    Store.open(sqlite_url(path)).close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("select version_num from alembic_version").fetchall() == [("0011",)]
        assert conn.execute("pragma journal_mode").fetchone() == ("wal",)


def test_migrations_from_empty_on_either_backend(database_url: str) -> None:
    store = Store.open(database_url)
    assert {
        "episodes",
        "attempts",
        "corrections",
        "eval_runs",
        "adapters",
        "cycles",
        "alembic_version",
    } <= set(inspect(store.engine).get_table_names())
    store.close()
    Store.open(database_url).close()  # opening again is a no-op


def test_episode_is_recorded_once_with_its_attempts(database_url: str) -> None:
    store = Store.open(database_url)
    start(store, "e1")
    assert store.episode("e1")["status"] == "running"  # type: ignore[index]
    store.finish_episode(
        "e1",
        status="repaired",
        answer="4",
        error=None,
        attempts=[attempt("5", False), attempt("4", True, "repair")],
        latency_s=1.5,
        final_index=1,
        scores=[False, True],  # by scoring, after the loop
        corrections=[
            {"prompt": "2+2?", "rejected": "5", "chosen": "4", "source": "repair", "verified": True}
        ],
    )
    episode = store.episode("e1")
    assert episode is not None
    assert (episode["status"], episode["first_passed"], episode["final_passed"]) == (
        "repaired",
        False,
        True,
    )
    assert (episode["n_attempts"], episode["prompt_tokens"], episode["completion_tokens"]) == (
        2,
        20,
        10,
    )
    assert (episode["right_to_wrong"], episode["wrong_to_right"]) == (False, True)
    assert episode["scores"] == [False, True]
    assert [a["answer"] for a in episode["attempts"]] == ["5", "4"]
    assert store.count(Episode) == 1 and store.count(Attempt) == 2
    (correction,) = store.corrections()
    assert correction.prompt_hash == prompt_hash("  2+2? ")
    assert store.failures()[0]["id"] == "e1"


def test_right_to_wrong_flip_is_counted(database_url: str) -> None:
    store = Store.open(database_url)
    start(store, "e2")
    store.finish_episode(
        "e2",
        status="repaired",
        answer="5",
        error=None,
        latency_s=1.0,
        final_index=1,
        attempts=[attempt("4", False), attempt("5", True, "repair")],
        scores=[True, False],
    )
    assert store.episode("e2")["right_to_wrong"] is True  # type: ignore[index]


def test_errors_are_recorded_and_listed(database_url: str) -> None:
    store = Store.open(database_url)
    start(store, "e3")
    store.finish_episode(
        "e3",
        status="error",
        answer=None,
        error="model timed out after 5 s",
        attempts=[],
        latency_s=5.0,
    )
    (failure,) = store.failures()
    assert (failure["status"], failure["error"]) == ("error", "model timed out after 5 s")


def test_32_concurrent_writers_lose_nothing(database_url: str) -> None:
    url = database_url
    Store.open(url).close()
    barrier = threading.Barrier(32)

    def writer(n: int) -> None:
        store = Store.open(url)  # each writer its own engine, as separate processes would
        barrier.wait(timeout=60)
        for i in range(10):
            id = f"w{n}-{i}"
            start(store, id, prompt=f"prompt {n} {i}")
            store.finish_episode(
                id,
                status="passed",
                answer="a",
                error=None,
                latency_s=0.1,
                attempts=[attempt("a", True)],
            )
            store.add_correction(
                id,
                prompt=f"prompt {n} {i}",
                rejected=None,
                chosen="a",
                source="user",
                verified=True,
            )
        store.close()

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(writer, range(32)))
    store = Store.open(url)
    assert store.count(Episode) == 320
    assert store.count(Attempt) == 320
    assert store.count(Correction) == 320
    assert all(e["status"] == "passed" for e in [store.episode(f"w{n}-9") for n in range(32)])  # type: ignore[index]


def test_unusable_database_is_a_clear_error(tmp_path: Path) -> None:
    from reflexa.agent.errors import ReflexaError

    bad = tmp_path / "not-a-db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ReflexaError, match="cannot migrate"):
        Store.open(sqlite_url(bad))


def test_a_stopped_cycle_is_taken_up_by_the_next_within_resume_hours(database_url: str) -> None:
    """The newest cycle left running (its process was stopped) is the next cycle's, if it
    began within `resume_hours`; any other left running is marked failed; 0 takes none."""
    from datetime import timedelta

    from sqlalchemy import update

    from reflexa.agent.store.tables import Cycle, utcnow

    with Store.open(database_url) as store:
        old = store.start_cycle("schedule")
        newest = store.start_cycle("schedule")  # marks `old` failed, as before
        store.record_stage(newest, {"stage": "sample", "ok": True})
        taken = store.take_up_cycle(24)
        assert (
            taken is not None and taken["id"] == newest and taken["stages"][0]["stage"] == "sample"
        )
        assert {c["id"]: c["status"] for c in store.cycles()} == {newest: "running", old: "failed"}
        with store._session.begin() as s:  # it began two days ago
            s.execute(update(Cycle).values(started_at=utcnow() - timedelta(days=2)))
        assert store.take_up_cycle(24) is None
        assert store.cycles()[0]["status"] == "failed"
        store.start_cycle("cli")
        assert store.take_up_cycle(0) is None and store.cycles()[0]["status"] == "failed"


def test_episodes_a_killed_process_left_running_are_marked_interrupted(
    database_url: str,
) -> None:
    """Only those of a process of this host that has stopped: a live process's episode,
    and another host's (which cannot be checked from here), stay running."""
    import socket
    import subprocess

    from reflexa.agent.store.episodes import process_name

    store = Store.open(database_url)
    child = subprocess.Popen(["sleep", "60"])
    name = process_name(child.pid)
    assert name is not None
    for id, owner in [("killed", name), ("mine", None), ("elsewhere", "other-host:1:1")]:
        start(store, id)
        if owner is not None:
            with store._session.begin() as s:
                s.get_one(Episode, id).owner = owner
    assert store.interrupt_orphans() == 0  # its process is still running
    child.kill()
    child.wait()
    assert store.interrupt_orphans() == 1
    killed = store.episode("killed")
    assert killed is not None and killed["status"] == "error"
    assert killed["error"] == f"interrupted: the process that ran it stopped ({name})"
    assert [store.episode(i)["status"] for i in ("mine", "elsewhere")] == ["running"] * 2  # type: ignore[index]
    assert name.startswith(socket.gethostname())


def test_scores_move_out_of_the_attempts_and_gold_chosen_repairs_say_so(
    database_url: str, capfd: pytest.CaptureFixture[str]
) -> None:
    # A store written before scoring left the loop: attempts carry `gold_passed`, and a
    # repair of an item whose gold was allowed was recorded only because scoring passed it.
    from sqlalchemy import text

    from reflexa.agent.store.db import migrate
    from tests.helpers import old_store

    engine = old_store(database_url, "0007")
    now = "2026-01-01 00:00:00+00"
    with engine.begin() as conn:
        for id, gold_allowed in (("old", True), ("chat", False)):
            conn.execute(text(
                "insert into episodes (id, thread_id, created_at, prompt, messages, checks, "
                "status, judge_only, n_attempts, prompt_tokens, completion_tokens, model, "
                "gold_allowed, split) values (:id, :id, :now, '2+2?', '[]', '[]', 'repaired', "
                "false, 2, 0, 0, 'm', :gold, 'train')"
            ), {"id": id, "now": now, "gold": gold_allowed})  # fmt: skip
            for index, (answer, ok) in enumerate((("5", False), ("4", True))):
                conn.execute(text(
                    'insert into attempts (episode_id, "index", kind, answer, verdicts, passed, '
                    "score, gold_passed, prompt_tokens, completion_tokens, latency_s, model) "
                    "values (:id, :i, 'generate', :a, '[]', :ok, 0, :right, 0, 0, 0, 'm')"
                ), {"id": id, "i": index, "a": answer, "ok": index > 0, "right": ok})  # fmt: skip
            conn.execute(text(
                "insert into corrections (episode_id, created_at, prompt, prompt_hash, messages, "
                "rejected, chosen, source, verified, justification) values (:id, :now, '2+2?', "
                ":h, '[]', '5', '4', 'repair', true, 'checks')"
            ), {"id": id, "now": now, "h": f"h-{id}"})  # fmt: skip
    migrate(engine)
    store = Store(engine)
    assert store.episode("old")["scores"] == [False, True]  # type: ignore[index]
    assert "gold_passed" not in store.episode("old")["attempts"][0]  # type: ignore[index]
    by_episode = {c.episode_id: c.justification for c in store.corrections()}
    assert by_episode == {"old": "gold", "chat": "checks"}
    said = capfd.readouterr().err
    assert "scores of 2 episode(s) moved" in said and "1 repair(s)" in said


def test_another_cycle_s_run_of_the_same_request_is_found_and_its_episode_copied(
    database_url: str,
) -> None:
    """`earlier_runs`: finished runs of the suite whose config differs only by cycle (not
    this cycle's, not an ordinary run's, not another config's). `copy_episode` records an
    episode, attempts and draws included, again in another run; the original stays."""
    from tests.unit.test_dataset import attempt

    store = Store.open(database_url)
    night = {"split": "test", "draws": 8, "adapter": "reflexa-abc"}
    runs = {}
    for key, config in {"c1": night | {"cycle": "c1"}, "plain": night,
                        "other": night | {"cycle": "c0", "draws": 4},
                        "c2": night | {"cycle": "c2"}}.items():  # fmt: skip
        runs[key], _ = store.open_eval_run("capabilities", "built-in", config)
    store.start_episode(id="e1", thread_id="t1", prompt="Say hi.", checks=[], model="reflexa-abc",
                        messages=[{"role": "user", "content": "Say hi."}], suite="capabilities",
                        split="test", item_id="i1", eval_run_id=runs["c1"])  # fmt: skip
    store.finish_episode("e1", status="passed", answer="hi", error=None, latency_s=0.5,
                         attempts=[attempt("hi", True)], scores=[None],
                         draws=[{"answer": "hey", "passed": True}])  # fmt: skip
    for key in ("c1", "plain", "other"):
        store.finish_eval_run(runs[key], {})
    assert store.earlier_runs("capabilities", night | {"cycle": "c2"}) == [runs["c1"]]
    assert store.earlier_runs("capabilities", night | {"cycle": "c1"}) == []
    gold = night | {"cycle": "c2", "allow_gold": True}
    assert store.earlier_runs("capabilities", gold) == []
    assert store.earlier_runs("capabilities", gold, ("allow_gold",)) == [runs["c1"]]
    copy = store.copy_episode("e1", runs["c2"])
    [copied] = store.run_episodes(runs["c2"])
    [original] = store.run_episodes(runs["c1"])
    assert copied["id"] == copy != original["id"] == "e1"
    same = ("prompt", "answer", "status", "item_id", "draws", "model", "latency_s")
    assert {k: copied[k] for k in same} == {k: original[k] for k in same}
    assert [a["answer"] for a in copied["attempts"]] == ["hi"] and copied["eval_run_id"] == runs[
        "c2"
    ]
    store.close()
