"""The cycle's outcomes that need no model: too little data, and the overlap lock."""

from __future__ import annotations

import pytest

from reflexa.agent.errors import ReflexaError
from reflexa.agent.settings import Settings
from reflexa.agent.store import Store, open_store
from reflexa.trainers.cycle import cycle_lock, run_cycle


def no_server() -> None:
    raise AssertionError("a cycle with nothing to train on must not start a model server")


def cycle(settings: Settings) -> dict:
    with open_store(settings) as store:
        return run_cycle(settings, store, no_server, no_server)  # type: ignore[arg-type]


def test_no_corrections_is_a_recorded_skip() -> None:
    settings = Settings()
    result = cycle(settings)
    assert result["status"] == "skipped" and "0 sft examples" in result["reason"]
    with Store.open(settings.database) as store:
        [row] = store.cycles()
    assert row["status"] == "skipped" and row["stages"][0]["stage"] == "compile"


def test_two_cycles_never_overlap() -> None:
    settings = Settings()
    with cycle_lock(settings), pytest.raises(ReflexaError, match="another cycle is running"):
        cycle(settings)
    assert cycle(settings)["status"] == "skipped"  # type: ignore[arg-type]


def test_an_interrupted_cycle_is_marked_failed_by_the_next() -> None:
    settings = Settings()
    with Store.open(settings.database) as store:
        store.start_cycle("cli")  # then the process died
    cycle(settings)
    with Store.open(settings.database) as store:
        newest, killed = store.cycles()
    assert killed["status"] == "failed" and "interrupted" in killed["reason"]
    assert newest["status"] == "skipped"
