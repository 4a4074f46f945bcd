"""Replay (trainers/replay.py): a night that goes on from the current adapter learns every row
logged since the last night that trained, and a capped share of the earlier ones; on the
store's real records (SQLite)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from reflexa.agent.settings import Settings
from reflexa.agent.store import Store, open_store
from reflexa.agent.store.db import sqlite_url
from reflexa.evals.contamination import Guard
from reflexa.trainers import stages as stages_module
from reflexa.trainers.dataset import TooFewExamples, build_dataset
from reflexa.trainers.methods import parse_method
from reflexa.trainers.replay import last_trained
from reflexa.trainers.stages import Skip, Stages, compile_and_train
from tests.unit.test_dataset import attempt, episode


def prompts(out: Path) -> list[str]:
    rows = json.loads((out / "manifest.json").read_text())
    assert rows["examples"] > 0
    from datasets import load_from_disk

    return sorted(r["messages"][0]["content"] for r in load_from_disk(str(out)))


def test_rows_from_before_the_last_night_are_a_capped_random_share_of_the_new_ones(
    tmp_path: Path,
) -> None:
    with Store.open(sqlite_url(tmp_path / "db.sqlite")) as store:
        for n in range(6):
            episode(store, f"What is 40 + {n}?", [attempt(str(40 + n), True)], scoring=[])
        failed = episode(store, "What is 7 + 7?", [attempt("15", False)], scoring=[])
        since = datetime.now(UTC)
        for n in range(2):
            episode(store, f"What is 50 + {n}?", [attempt(str(50 + n), True)], scoring=[])
        store.add_correction(
            failed, prompt="What is 7 + 7?", chosen="14", rejected="15", source="sampled",
            verified=True, justification="consistency",
        )  # fmt: skip

        def built(share: float | None, name: str) -> tuple[dict[str, Any], list[str]]:
            out = tmp_path / name
            compiled, rows = build_dataset(
                store, out, "sft", allow_gold=False, protected=Guard(),
                replay=None if share is None else (since, share),
            )  # fmt: skip
            return compiled.summary(rows), prompts(out)

        summary, kept = built(1.0, "a")
        new = ["What is 50 + 0?", "What is 50 + 1?", "What is 7 + 7?"]  # an old prompt, a new row
        assert set(new) <= set(kept) and len(kept) == 6  # the 3 new, 3 of the 6 earlier
        assert summary["replay"] == {"since": since.isoformat(), "new": 3, "earlier": 6,
                                     "replayed": 3}  # fmt: skip
        assert built(1.0, "b")[1] == kept  # every candidate of a night draws the same rows
        assert built(0.0, "c")[1] == sorted(new)
        assert len(built(100.0, "d")[1]) == len(built(None, "e")[1]) == 9
        with pytest.raises(TooFewExamples, match="6 sft examples, fewer than the 7"):
            build_dataset(store, tmp_path / "f", "sft", allow_gold=False, protected=Guard(),
                          min_examples=7, replay=(since, 1.0))  # fmt: skip
        # enough counts the rows tonight trains on: all 9 are enough
        build_dataset(store, tmp_path / "f", "sft", allow_gold=False, protected=Guard(),
                      min_examples=7)  # fmt: skip


def test_the_last_night_that_trained_is_the_newest_cycle_with_a_finished_train_stage(
    tmp_path: Path,
) -> None:
    with Store.open(sqlite_url(tmp_path / "db.sqlite")) as store:
        assert last_trained(store.cycles()) is None
        trained = store.start_cycle("schedule")
        store.record_stage(trained, {"stage": "train sft-continue", "ok": True})
        since = last_trained(store.cycles())
        skipped = store.start_cycle("schedule")  # nothing new: it trained nothing
        store.record_stage(skipped, {"stage": "sample", "ok": True})
        failed = store.start_cycle("schedule")
        store.record_stage(failed, {"stage": "train", "ok": False, "error": "out of memory"})
        history = store.cycles()
    assert [c["id"] for c in history] == [failed, skipped, trained]
    assert since is not None and since.tzinfo is not None
    assert last_trained(history) == since and since <= datetime.now(UTC)

    # its own sampling's rows it could learn: the mark is when it began compiling them
    compiled = [{"stage": "sample", "ok": True, "seconds": 90.0},
                {"stage": "compile sft", "ok": True, "seconds": 1.0,
                 "began_at": "2026-12-08T01:00:00+00:00"},
                {"stage": "train sft", "ok": True, "seconds": 600.0}]  # fmt: skip
    night = {"started_at": "2026-12-08T00:58:00", "stages": compiled}
    assert last_trained([night]) == datetime(2026, 12, 8, 1, 0, tzinfo=UTC)
    del compiled[1]["began_at"]  # recorded before compiles kept their time: start + 90 s
    assert last_trained([night]) == datetime(2026, 12, 8, 0, 59, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("method", "replayed"), [("sft", False), ("sft-continue", True), ("dpo", False)]
)
def test_only_a_candidate_that_goes_on_from_the_current_adapter_is_given_replay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str, replayed: bool
) -> None:
    settings = Settings(home=tmp_path, cycle={"replay": 0.5})
    folder = tmp_path / "v1"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    given: list[Any] = []

    def compiled(*_: object, **kwargs: Any) -> None:
        given.append(kwargs["replay"])
        raise TooFewExamples("none here", {})

    monkeypatch.setattr(stages_module, "build_dataset", compiled)
    with open_store(settings) as store:
        before = store.start_cycle("schedule")
        store.record_stage(before, {"stage": "train", "ok": True})
        store.add_adapter(version="v1", name="reflexa-v1", path=str(folder), parent=None,
                          base_model="m", method="sft", dataset_hash="h", examples=20,
                          metrics={})  # fmt: skip
        stage = Stages(store, store.start_cycle("schedule"), lambda _: None)
        stage.history = [c for c in store.cycles() if c["id"] == before]
        with pytest.raises(Skip, match="none here"):
            compile_and_train(settings.workspace(), store, stage, parse_method(method),
                              stages_module.TrainConfig(), "", Guard(), store.adapter("v1"),
                              None, False)  # fmt: skip
    assert given == [(last_trained(stage.history), 0.5) if replayed else None]
