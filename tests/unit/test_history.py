"""Learning how to learn from the record: the order methods are tried in, the night's
budget, and a scheduled night with nothing new."""

from __future__ import annotations

from typing import Any

import pytest

from reflexa.agent.settings import Settings
from reflexa.agent.store import Store, open_store
from reflexa.trainers.cycle import run_cycle
from reflexa.trainers.history import method_order, nothing_new, tried


def night(status: str, methods: dict[str, tuple[str, float]], winner: str | None) -> dict:
    """A past cycle's row: each method's (decision, train seconds); `winner` promoted."""
    summary = {m: {"adapter": f"v-{m}", "decision": d, "train_s": s}
               for m, (d, s) in methods.items()}  # fmt: skip
    adapter = {"version": f"v-{winner}"} if winner else None
    return {"status": status, "result": {"status": status, "adapter": adapter,
                                         "methods": summary}}  # fmt: skip


def test_the_likeliest_winner_goes_first_and_the_record_says_why() -> None:
    history = [
        night("promoted", {"sft": ("promote", 300), "grpo": ("promote", 900)}, "grpo"),
        night("promoted", {"sft": ("promote", 320), "grpo": ("reject", 880)}, "sft"),
        night("promoted", {"sft": ("reject", 310), "grpo": ("promote", 870)}, "grpo"),
        night("skipped", {}, None),
    ]
    assert tried(history[0]) == {"sft": (False, 300.0), "grpo": (True, 900.0)}
    order, why = method_order(history, ["sft", "grpo", "dpo"])
    assert order == ["grpo", "dpo", "sft"]  # (2+1)/(3+2) = 60 %, untried 50 %, (1+1)/5 = 40 %
    assert why == ("methods in order of their record: grpo won 2 of 3 nights, 883 s to train; "
                   "dpo won 0 of 0 nights; sft won 1 of 3 nights, 310 s to train")  # fmt: skip
    assert method_order([], ["sft", "grpo"])[0] == ["sft", "grpo"]  # no record: as configured
    result = {"status": "rejected", "adapter": {"version": "v3", "method": "sft"},
              "stages": [{"stage": "train", "train_s": 40}]}  # fmt: skip
    single = {"status": "rejected", "result": result}
    assert tried(single) == {"sft": (False, 40.0)}
    named = {"status": "rejected", "result": result | {"method": "sft-continue"}}
    assert tried(named) == {"sft-continue": (False, 40.0)}  # as configured, not the format


def test_a_scheduled_night_with_nothing_new_says_so_and_costs_nothing() -> None:
    seen = {"episodes": 3, "corrections": 2}
    decided = [{"status": "skipped", "result": {}},
               {"status": "rejected", "result": {"seen": seen}}]  # fmt: skip
    assert nothing_new(decided, seen) is not None
    assert nothing_new(decided, seen | {"corrections": 3}) is None
    assert nothing_new([], seen) is None

    settings = Settings()

    def no_server() -> Any:
        raise AssertionError("a night with nothing new starts no server")

    with open_store(settings) as store:
        first = run_cycle(settings.workspace(), store, no_server, no_server, trigger="schedule")
        assert first["status"] == "skipped" and "0 sft examples" in first["reason"]
        assert first["seen"] == {"episodes": 0, "corrections": 0}
        cycle_id = store.start_cycle("schedule")  # a night the gate judged, with this much
        store.finish_cycle(cycle_id, status="rejected", reason="r", adapter_version=None,
                           result={"seen": first["seen"]})  # fmt: skip
        idle = run_cycle(settings.workspace(), store, no_server, no_server, trigger="schedule")
        by_hand = run_cycle(settings.workspace(), store, no_server, no_server, trigger="cli")
    assert idle["status"] == "skipped" and idle["reason"].startswith("nothing new since")
    assert idle["stages"] == []
    assert "0 sft examples" in by_hand["reason"]  # by hand, the night runs all the same


def test_past_the_budget_no_further_method_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    from reflexa.trainers import cycle as cycle_module

    settings = Settings(cycle=Settings().cycle.model_copy(
        update={"methods": ["sft", "grpo"], "sample_n": 0, "budget_minutes": 1e-9}))  # fmt: skip
    started: list[str] = []

    def fake_candidate(ws, store_, stage, referee, method, *rest):  # type: ignore[no-untyped-def]
        started.append(method)
        raise cycle_module.Skip("too few rows")

    monkeypatch.setattr(cycle_module, "candidate", fake_candidate)
    with Store.open(settings.database) as store:
        result = run_cycle(settings.workspace(), store, lambda: None, lambda _: None)  # type: ignore[arg-type,return-value]
    assert started == ["sft"]  # nothing was tried yet when sft started; grpo never does
    assert result["status"] == "skipped"
    assert "grpo: the night's budget was spent" in result["reason"]


def test_grpo_gets_the_steps_that_fit_the_night_and_a_budget_too_small_is_a_skip() -> None:
    """All the steps GRPO needs (passes over its prompts) when they fit the time left less
    the last judged night's longest gate, else as many as the last GRPO run's seconds a step
    allow, and none (a recorded skip) below the least that teaches anything."""
    from reflexa.trainers.history import MIN_GRPO_STEPS, grpo_steps

    train = {"train_s": 200.0, "loss": [{"step": 99}, {"step": 100}]}
    timed = {"method": "grpo", "metrics": {"train": train}}
    gated = {"status": "rejected", "result": {"stages": [
        {"stage": "sample", "seconds": 900}, {"stage": "gate grpo", "seconds": 600},
        {"stage": "gate sft", "seconds": 300}]}}  # fmt: skip
    # 100 prompts in groups of 4, 8 completions a step: 50 steps a pass; 2.4 passes: 120
    plan = (100, 4, 8, 2.4)
    steps, why = grpo_steps([], [gated], *plan, left_s=60)
    assert steps == 120 and "no GRPO run timed yet" in why
    assert grpo_steps([timed], [gated], *plan, left_s=600 + 2 * 120)[0] == 120
    steps, why = grpo_steps([timed], [gated], *plan, left_s=600 + 2 * 80.5)
    assert steps == 80 and why.startswith("GRPO: 80 of the 120 steps")
    assert "2.0 s a step" in why and "a gate 10 min" in why
    steps, why = grpo_steps([timed], [gated], *plan, left_s=600 + 2 * (MIN_GRPO_STEPS - 1))
    assert steps is None and "room for 29 GRPO steps" in why
    assert grpo_steps([timed], [], *plan, left_s=2 * MIN_GRPO_STEPS)[0] == MIN_GRPO_STEPS
