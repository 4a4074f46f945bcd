"""The gate on known per-item results (no model involved): its decision rule, its suites, the
recall measurement, and the runs it asks of the `evaluate` it is handed."""

from __future__ import annotations

import asyncio
from pathlib import Path

from reflexa.agent.settings import Settings, load_settings
from reflexa.agent.store import Store
from reflexa.evals.suite import Suite, SuiteItem
from reflexa.trainers.gate import GateResult, GateSuite, decide, gate_suites, run_gate


def suite(name: str, n: int, split: str) -> GateSuite:
    items = [SuiteItem(id=f"i{k}", prompt=f"q{k}", split=split) for k in range(n)]
    return GateSuite(Suite(name, items, "built-in"), (split,), frozen=name == "capabilities")


def results(gate: GateSuite, passed: int) -> dict[str, dict[str, bool]]:
    n = len(gate.suite.items)
    return {f"i{k}": {"first_attempt": k < passed, "final": k < passed} for k in range(n)}


HELD, FROZEN = suite("arithmetic", 100, "heldout"), suite("capabilities", 50, "test")


def run(held: tuple[int, int], frozen: tuple[int, int]) -> GateResult:
    current = {HELD.label: results(HELD, held[0]), FROZEN.label: results(FROZEN, frozen[0])}
    candidate = {HELD.label: results(HELD, held[1]), FROZEN.label: results(FROZEN, frozen[1])}
    return decide(current, candidate, [HELD, FROZEN], {}, Settings().cycle)


def test_a_significant_gain_without_regression_is_promoted() -> None:
    verdict = run(held=(0, 60), frozen=(20, 20))
    assert verdict.decision == "promote"
    assert verdict.dev["a"] == 0.0 and verdict.dev["b"] == 0.6
    assert verdict.dev["p_value"] < 0.05
    assert verdict.suites["capabilities"]["difference"] == 0.0


def test_a_gain_that_is_not_significant_is_rejected() -> None:
    verdict = run(held=(50, 53), frozen=(20, 20))
    assert verdict.decision == "reject" and "not a significant improvement" in verdict.reason


def test_a_frozen_suite_drop_beyond_two_points_is_rejected_despite_a_gain() -> None:
    verdict = run(held=(0, 60), frozen=(20, 18))  # 40 % → 36 %
    assert verdict.decision == "reject"
    assert "capabilities dropped 4.0%" in verdict.reason
    assert run(held=(0, 60), frozen=(20, 19)).decision == "promote"  # exactly 2 points


def test_without_a_heldout_suite_nothing_is_promoted() -> None:
    current = {FROZEN.label: results(FROZEN, 10)}
    candidate = {FROZEN.label: results(FROZEN, 40)}
    verdict = decide(current, candidate, [FROZEN], {}, Settings().cycle)
    assert verdict.decision == "reject" and "no gate split" in verdict.reason


def test_the_gate_decides_on_dev_and_never_on_test(tmp_path: Path) -> None:
    only_test = tmp_path / "mine.yaml"
    only_test.write_text("- id: a\n  prompt: x\n  split: train\n- id: b\n  prompt: y\n")
    old = tmp_path / "old.yaml"
    old.write_text("- id: a\n  prompt: x\n  split: heldout\n- id: b\n  prompt: y\n")
    with Store.open(load_settings().database) as store:
        for path in (only_test, old):
            store.open_eval_run(path.stem, str(path), {})
        gates, notes = gate_suites(store, ["sums", "mine", "old"])
    assert [(g.label, g.frozen) for g in gates] == [
        ("sums:dev", False), ("old:heldout", False), ("capabilities", True)
    ]  # fmt: skip
    assert notes == ["mine: no dev (or heldout) split; not gated on (test never is)"]


def test_recall_that_hurts_a_suite_is_turned_off_and_its_memories_counted() -> None:
    from reflexa.agent.app.memory import Memory
    from reflexa.agent.settings import MemorySettings
    from reflexa.evals.contamination import Guard
    from reflexa.trainers.gate import _memory_effect

    with Store.open(load_settings().database) as store:
        for n in (1, 2):
            store.add_correction(None, prompt=f"What is {n} + {n}?", chosen=str(2 * n),
                                 source="user", verified=True)  # fmt: skip
        ids = [m["id"] for m in store.memories()]
        # With recall: 10 of 100 right; without: 30. Items 0-19 flipped to wrong by memory 1,
        # one item flipped to right by memory 2.
        with_recall = results(HELD, 10)
        without = results(HELD, 30)
        with_recall["i50"] = {"first_attempt": True, "final": True}
        recalled = {f"{HELD.label}/i{k}": [ids[0]] for k in range(10, 30)}
        recalled[f"{HELD.label}/i50"] = [ids[1]]
        measured = {True: {HELD.label: with_recall, FROZEN.label: results(FROZEN, 20)},
                    False: {HELD.label: without, FROZEN.label: results(FROZEN, 20)}}  # fmt: skip
        effect = _memory_effect(store, "reflexa-abc", [HELD, FROZEN], measured, recalled, 0.02)
        assert effect[HELD.label]["recall"] is False and effect[FROZEN.label]["recall"] is True
        assert "recall off" in effect[HELD.label]["reason"]
        assert effect["harmful_memories"] == 1
        status = {m["id"]: (m["status"], m["helped"], m["hurt"]) for m in store.memories()}
        assert status == {ids[0]: ("harmful", 0, 20), ids[1]: ("active", 1, 0)}
        policy = {(p["model"], p["suite"]): p["recall"] for p in store.recall_policies()}
        assert policy == {
            ("reflexa-abc", "arithmetic"): False,
            ("reflexa-abc", "capabilities"): True,
        }
        memory = Memory(
            store, MemorySettings(min_similarity=0), lambda s: 1, "reflexa-abc", Guard()
        )
        off = memory.recall("What is 2 + 2?", suite="arithmetic")
        assert off.memories == [] and "recall off for arithmetic" in (off.note or "")
        assert [m["prompt"] for m in memory.recall("What is 2 + 2?").memories] == ["What is 2 + 2?"]
        base = Memory(store, MemorySettings(min_similarity=0), lambda s: 1, None, Guard())
        assert base.recall("What is 2 + 2?", suite="arithmetic").memories  # another model
        measuring = Memory(store, MemorySettings(min_similarity=0), lambda s: 1, "reflexa-abc",
                           Guard(), policy=False)  # fmt: skip
        assert measuring.recall("What is 2 + 2?", suite="arithmetic").memories  # the gate


def test_the_gate_runs_both_sides_through_the_evaluate_it_is_handed() -> None:
    calls = []

    async def evaluate(adapter, suite, split, memory, gold, on_progress):  # type: ignore[no-untyped-def]
        calls.append((adapter, suite.name, split, memory, gold))
        passed = {None: 0, "cand": 60}[adapter] if suite.name == "arithmetic" else 20
        items = [{"item_id": i.id, "first_passed": k < passed, "final_passed": k < passed,
                  "recalled": []} for k, i in enumerate(suite.items)]  # fmt: skip
        return {"run_id": f"run-{len(calls)}", "items": items}

    settings = load_settings()
    with Store.open(settings.database) as store:
        verdict = asyncio.run(
            run_gate(settings.cycle, store, evaluate, [HELD, FROZEN], None, "cand", gold=False)
        )
    assert verdict.decision == "promote", verdict.reason
    assert verdict.dev["a"] == 0.0 and verdict.dev["b"] == 0.6
    assert sorted(calls, key=str) == sorted(
        [(side, s, split, memory, False) for side in (None, "cand") for memory in (True, False)
         for s, split in (("arithmetic", "heldout"), ("capabilities", "test"))], key=str,
    )  # fmt: skip
    assert verdict.memory["candidate"][HELD.label]["recall"] is True  # recall changed nothing
