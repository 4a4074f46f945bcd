"""The gate on known per-item results (no model involved): its decision rule, its suites, the
recall measurement, and the runs it asks of the `evaluate` it is handed."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest

from reflexa.agent.settings import Settings, load_settings
from reflexa.agent.store import Store
from reflexa.evals.suite import Suite, SuiteItem
from reflexa.trainers.gate import GateResult, GateSuite, Measured, decide, gate_suites, measure


def suite(name: str, n: int, split: str) -> GateSuite:
    items = [SuiteItem(id=f"i{k}", prompt=f"q{k}", split=split) for k in range(n)]
    return GateSuite(Suite(name, items, "built-in"), (split,), frozen=name == "capabilities")


def results(gate: GateSuite, passed: int, draws: list[int] | None = None) -> dict[str, Any]:
    """`passed` items' greedy answers pass; `draws[k]`: of item k's 4 draws, how many pass
    (none given: as many as its greedy answer, i.e. all or none)."""
    n = len(gate.suite.items)
    out = {}
    for k in range(n):
        first = k < passed
        extra = draws[k] if draws is not None else 4 * first
        out[f"i{k}"] = {"first_attempt": first, "final": first, "passes": first + extra,
                        "answers": 5}  # fmt: skip
    return out


HELD, FROZEN = suite("arithmetic", 100, "heldout"), suite("capabilities", 123, "test")


def side(results_by_label: dict[str, Any], adapter: str | None = None) -> Measured:
    return Measured(adapter, results_by_label, {})


def run(held: tuple[int, int], frozen: tuple[int, int]) -> GateResult:
    current = {HELD.label: results(HELD, held[0]), FROZEN.label: results(FROZEN, frozen[0])}
    candidate = {HELD.label: results(HELD, held[1]), FROZEN.label: results(FROZEN, frozen[1])}
    return decide(side(current), side(candidate), [HELD, FROZEN], Settings().cycle)


def test_a_significant_gain_without_regression_is_promoted() -> None:
    verdict = run(held=(0, 60), frozen=(20, 20))
    assert verdict.decision == "promote"
    assert verdict.dev["a"] == 0.0 and verdict.dev["b"] == 0.6
    assert verdict.dev["p_value"] < 0.05
    assert verdict.suites["capabilities"]["difference"] == 0.0


def test_a_gain_that_is_not_significant_is_rejected() -> None:
    verdict = run(held=(50, 53), frozen=(20, 20))
    assert verdict.decision == "reject" and "not a significant improvement" in verdict.reason


def test_the_frozen_suite_must_be_non_inferior_within_its_margin() -> None:
    """Non-inferiority, not a point estimate: on 123 items, losing one is bounded within a
    5-point margin; losing 6 (4.9 points) is not, since the evidence cannot rule out more."""
    assert run(held=(0, 60), frozen=(50, 50)).decision == "promote"
    one = run(held=(0, 60), frozen=(50, 49))
    assert one.decision == "promote" and -0.05 < one.suites["capabilities"]["lower_95"] < -0.008
    verdict = run(held=(0, 60), frozen=(50, 44))
    assert verdict.decision == "reject"
    assert "capabilities may be worse by more than 5%" in verdict.reason
    assert verdict.suites["capabilities"]["difference"] > -0.05
    assert verdict.suites["capabilities"]["lower_95"] < -0.05


def test_a_dev_suite_drop_beyond_max_drop_is_rejected() -> None:
    other = suite("sums", 100, "dev")
    current = {HELD.label: results(HELD, 0), other.label: results(other, 50)}
    candidate = {HELD.label: results(HELD, 60), other.label: results(other, 40)}
    verdict = decide(side(current), side(candidate), [HELD, other], Settings().cycle)
    assert verdict.decision == "reject" and "sums:dev dropped 10.0% (p = " in verdict.reason
    assert "Holm over 2 dev suites" in verdict.reason


def test_a_dev_suite_drop_that_chance_explains_is_not_a_regression() -> None:
    """2.4 points down on 100 items, 30 items a draw worse and 18 a draw better (p 0.08):
    what chance does to a suite the candidate left as it was (on night 1's real items, an
    unchanged suite dropped more than 2 points in up to a fifth of replays). Only a significant
    drop is a regression (the test above); the pooled gain decides."""
    other = suite("sums", 100, "dev")
    current = {HELD.label: results(HELD, 0), other.label: results(other, 50, [2] * 100)}
    moved = [1] * 30 + [3] * 18 + [2] * 52
    candidate = {HELD.label: results(HELD, 60), other.label: results(other, 50, moved)}
    verdict = decide(side(current), side(candidate), [HELD, other], Settings().cycle)
    assert verdict.suites["sums:dev"]["difference"] == pytest.approx(-0.024)
    assert verdict.suites["sums:dev"]["p_value"] > 0.05 and verdict.decision == "promote"


def test_draws_show_a_gain_that_one_greedy_answer_per_item_cannot() -> None:
    """The same greedy answers on both sides; the candidate's draws pass more often on 40
    items (1 of 4 → 3 of 4): invisible to greedy McNemar, significant on pass fractions."""
    current = {HELD.label: results(HELD, 30, [4] * 30 + [1] * 70)}
    candidate = {HELD.label: results(HELD, 30, [4] * 30 + [3] * 40 + [1] * 30)}
    verdict = decide(side(current), side(candidate), [HELD], Settings().cycle)
    assert verdict.dev["greedy"]["a"] == verdict.dev["greedy"]["b"] == 0.3
    assert verdict.dev["greedy"]["p_value"] == 1.0
    assert verdict.dev["b"] - verdict.dev["a"] == pytest.approx(0.16)
    assert verdict.dev["p_value"] < 1e-6 and verdict.decision == "promote"
    assert "over 5 answers an item" in verdict.reason


def test_holm_adjusts_the_night_s_candidates_together() -> None:
    from reflexa.trainers.gate import holm

    def gate(p: float, decision: str = "promote") -> GateResult:
        dev = {"a": 0.5, "b": 0.6, "p_value": p, "answers": 5, "greedy": {"a": 0.5, "b": 0.6}}
        return GateResult(decision, "raw", dev, {})  # type: ignore[arg-type]

    alone = holm([gate(0.03)], 0.05)
    assert alone[0].promotes and alone[0].reason == "raw"  # one candidate: no adjustment
    both = holm([gate(0.03), gate(0.04)], 0.05)  # 2 * 0.03 = 0.06, max(0.06, 0.04) = 0.06
    assert [g.dev["p_holm"] for g in both] == [0.06, 0.06]
    assert not any(g.promotes for g in both) and "Holm-adjusted over 2" in both[0].reason
    strong = holm([gate(0.001), gate(0.04), gate(0.2, "reject")], 0.05)
    assert [g.promotes for g in strong] == [True, False, False]  # 0.003; 0.08; 0.2
    assert [g.dev["p_holm"] for g in strong] == [0.003, 0.08, 0.2]


def test_a_candidate_equal_to_the_current_one_is_promoted_at_most_alpha_of_the_time() -> None:
    """The gate's false-promotion rate when nothing changed: both sides' answers drawn
    from the same per-item pass probabilities, 400 simulated nights."""
    rng = random.Random(7)
    chance = [rng.betavariate(0.6, 0.6) for _ in range(100)]  # items mostly easy or hard
    settings = Settings().cycle
    promoted = 0
    for _ in range(400):
        sides = []
        for _ in range(2):
            passes = [sum(rng.random() < p for _ in range(5)) for p in chance]
            sides.append(side({HELD.label: {
                f"i{k}": {"first_attempt": n > 2, "final": n > 2, "passes": n, "answers": 5}
                for k, n in enumerate(passes)}}))  # fmt: skip
        promoted += decide(sides[0], sides[1], [HELD], settings).promotes
    assert promoted / 400 <= 0.05  # one-sided: a two-sided test at 5 % promotes ≤ 2.5 %


def test_without_a_heldout_suite_nothing_is_promoted() -> None:
    current = {FROZEN.label: results(FROZEN, 10)}
    candidate = {FROZEN.label: results(FROZEN, 40)}
    verdict = decide(side(current), side(candidate), [FROZEN], Settings().cycle)
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


def fake_evaluate(passing: Any, calls: list[tuple[Any, ...]], recalled: Any = None) -> Any:
    """An `Evaluate` whose items pass as `passing(adapter, suite, memory)` says (a count of
    the first items), their draws alike; `recalled(item)`: the memories in an item's prompt."""

    async def evaluate(adapter, suite, split, memory, gold, draws, on_progress):  # type: ignore[no-untyped-def]
        calls.append((adapter, suite.name, split, memory, gold))
        passed = passing(adapter, suite.name, memory)
        index = {i.id: int(i.id[1:]) for i in suite.items}  # i7: the eighth item
        items = [{"item_id": i.id, "first_passed": index[i.id] < passed,
                  "final_passed": index[i.id] < passed,
                  "recalled": recalled(index[i.id]) if recalled and memory else [],
                  "draws": [index[i.id] < passed] * draws} for i in suite.items]  # fmt: skip
        return {"run_id": f"run-{len(calls)}", "items": items}

    return evaluate


def test_recall_is_turned_off_only_where_its_cost_is_significant() -> None:
    """Recall costs 3 of 100 items (3 points, p 0.25): chance could do that, so it stays on
    (a point estimate would turn it off in up to a fifth of nights that it leaves as it was).
    The test below, 20 items (p < 1e-5), turns it off."""
    calls: list[tuple[Any, ...]] = []
    evaluate = fake_evaluate(lambda a, name, memory: 30 if memory else 33, calls, lambda k: [1])
    cycle = load_settings().cycle
    measured = asyncio.run(measure(cycle, evaluate, [HELD], "reflexa-abc", "candidate"))
    effect = measured.memory[HELD.label]
    assert effect["measured"]["difference"] == pytest.approx(-0.03) and effect["recall"] is True
    assert measured.served[HELD.label]["heldout/i31"]["first_attempt"] is False  # with recall


def test_a_candidate_is_served_with_the_recall_it_is_told() -> None:
    """Judged with the current side's recall (`recall`), a candidate's suite is served so
    whatever its own measurement would choose. Told recall on, it is served with recall that
    costs it 20 points, its own choice (off) measured and recorded; told off, it is asked
    unaided once, with its draws, and off is recorded as its own (not measured with recall,
    which would cost two more eval runs)."""
    cycle = load_settings().cycle
    for told in (True, False):
        calls: list[tuple[Any, ...]] = []
        right = lambda a, name, memory: 10 if memory else 30  # noqa: E731
        evaluate = fake_evaluate(right, calls, lambda k: [1] if k < 50 else [])
        measured = asyncio.run(measure(cycle, evaluate, [HELD], "reflexa-abc", "candidate",
                                       recall={HELD.label: told}))  # fmt: skip
        served = measured.served[HELD.label]
        assert served["heldout/i20"]["first_attempt"] is not told  # as told
        assert served["heldout/i20"]["answers"] == cycle.gate_draws + 1
        assert measured.memory[HELD.label]["recall"] is False
        assert [memory for *_, memory, _ in calls] == ([True, False] if told else [False])
        assert ("measured with it" in measured.memory[HELD.label]["reason"]) is not told


def test_recall_that_hurts_is_turned_off_but_written_only_when_recorded() -> None:
    """Memory is frozen while a night's candidates are measured: the effect of recall is
    measured and kept on the side's measurement, and written (policy, harmful memories)
    only by `record_memory`, once the night is decided."""
    from reflexa.agent.app.memory import Memory
    from reflexa.agent.settings import MemorySettings
    from reflexa.evals.contamination import Guard
    from reflexa.trainers.referee import record_memory

    settings = load_settings()
    with Store.open(settings.database) as store:
        for n in (1, 2):
            store.add_correction(None, prompt=f"What is {n} + {n}?", chosen=str(2 * n),
                                 source="user", verified=True)  # fmt: skip
        ids = [m["id"] for m in store.memories()]
        # With recall: 10 of 100 right; without: 30. Items 10-29 flipped to wrong by memory 1.
        calls: list[tuple[Any, ...]] = []
        passing = lambda a, name, memory: (10 if memory else 30) if name == "arithmetic" else 20  # noqa: E731
        scored = fake_evaluate(passing, calls, lambda k: [ids[0]] if 10 <= k < 30 else [])
        draws: list[tuple[str, bool, int, int]] = []  # suite, recall, draws, items

        async def evaluate(adapter, suite, split, memory, gold, n, progress):  # type: ignore[no-untyped-def]
            draws.append((suite.name, memory, n, len(suite.select(split))))
            return await scored(adapter, suite, split, memory, gold, n, progress)

        measured = asyncio.run(
            measure(settings.cycle, evaluate, [HELD, FROZEN], "reflexa-abc", "candidate")
        )
        assert measured.memory[HELD.label]["recall"] is False
        assert measured.memory[FROZEN.label]["recall"] is True
        assert "recall off" in measured.memory[HELD.label]["reason"]
        assert measured.served[HELD.label]["heldout/i20"]["first_attempt"] is True  # unaided
        assert measured.hurt == [ids[0]] * 20 and measured.helped == []
        # Unaided only where recall showed something, greedy answers alone; then the suite
        # served without recall is asked again there with its draws.
        assert [d for d in draws if not d[1]] == [
            ("arithmetic", False, 0, 20), ("capabilities", False, 0, 20),
            ("arithmetic", False, settings.cycle.gate_draws, 20),
        ]  # fmt: skip
        served = measured.served[HELD.label]
        assert served["heldout/i20"]["answers"] == served["heldout/i50"]["answers"] == 5
        assert store.recall_policies() == [] and all(m["hurt"] == 0 for m in store.memories())

        assert record_memory(store, measured, [HELD, FROZEN]) == 1
        status = {m["id"]: (m["status"], m["helped"], m["hurt"]) for m in store.memories()}
        assert status == {ids[0]: ("harmful", 0, 20), ids[1]: ("active", 0, 0)}
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


def test_the_gate_measures_each_side_through_the_evaluate_it_is_handed() -> None:
    calls: list[tuple[Any, ...]] = []
    passing = lambda a, name, memory: {None: 0, "cand": 60}[a] if name == "arithmetic" else 20  # noqa: E731
    evaluate = fake_evaluate(passing, calls)
    settings = load_settings()
    sides = [
        asyncio.run(measure(settings.cycle, evaluate, [HELD, FROZEN], adapter, name))
        for adapter, name in ((None, "current"), ("cand", "candidate"))
    ]
    verdict = decide(*sides, [HELD, FROZEN], settings.cycle)
    assert verdict.decision == "promote", verdict.reason
    assert verdict.dev["a"] == 0.0 and verdict.dev["b"] == 0.6 and verdict.dev["answers"] == 5
    # Nothing was recalled, so nothing was asked again without recall: the same prompts.
    assert sorted(calls, key=str) == sorted(
        [(side, s, split, True, False) for side in (None, "cand")
         for s, split in (("arithmetic", "heldout"), ("capabilities", "test"))], key=str,
    )  # fmt: skip
    assert verdict.memory["candidate"][HELD.label]["recall"] is True  # recall changed nothing
    assert set(verdict.suites[HELD.label]["runs"]) == {
        f"{s}:heldout:memory" for s in ("current", "candidate")
    }


def test_the_sign_flip_test_on_pass_fail_pairs_is_mcnemar_s() -> None:
    from reflexa.evals.compare import mcnemar_p, sign_flip_p

    for b, c in ((0, 0), (3, 0), (5, 9), (12, 30), (20, 20), (1, 7)):
        assert sign_flip_p([-1] * b + [1] * c + [0] * 50) == pytest.approx(mcnemar_p(b, c))


def test_the_sign_flip_test_counts_every_assignment_of_signs() -> None:
    """On differences of any size, the p-value is the share of the 2^n sign assignments
    whose sum is at least as far from zero as the one observed."""
    import itertools

    from reflexa.evals.compare import sign_flip_p

    for diffs in ([3, -1, 2, 0, 5, -2, 1], [4, 4, -4, 1], [2, 2, 2, 2, 2, -1, 0, 3]):
        sums = [abs(sum(s * d for s, d in zip(signs, diffs, strict=True)))
                for signs in itertools.product((1, -1), repeat=len(diffs))]  # fmt: skip
        exact = sum(s >= abs(sum(diffs)) for s in sums) / len(sums)
        assert sign_flip_p(diffs) == pytest.approx(exact)


def test_a_night_draws_a_fresh_dev_sample_of_a_generated_suite(tmp_path: Path) -> None:
    """Each night's seed draws generated suites' dev items afresh, none of them a question
    of the suite's train or test split or one the loop may have learnt from; a user's suite
    keeps its fixed dev split, and the note says it is reused."""
    from reflexa.evals.builtin import BUILTIN

    sums = BUILTIN["sums"]()
    others = {i.user_prompt for i in sums.items if i.split != "dev"}
    mine = tmp_path / "mine.yaml"
    mine.write_text("- id: a\n  prompt: x\n  split: dev\n- id: b\n  prompt: y\n")
    with Store.open(load_settings().database) as store:
        store.open_eval_run("mine", str(mine), {})
        night = {}
        for seed in (11, 12):
            learnt = {"What is 10 + 10? Reply with only the number."}
            gates, notes = gate_suites(store, ["sums", "mine"], seed=seed, exclude=learnt)
            [dev] = [g for g in gates if g.label == "sums:dev"]
            items = [i for i in dev.suite.items if i.split == "dev"]
            night[seed] = {i.user_prompt for i in items}
            assert 90 <= len(items) <= 100 and all(i.id.startswith(f"dev{seed}-") for i in items)
            assert not night[seed] & (others | learnt)
            assert [i for i in dev.suite.items if i.split == "test"] == sums.select("test")
            assert notes[0].startswith(f"sums: a fresh dev sample of {len(items)} items")
            assert notes[1] == "mine: its fixed dev split, reused every night"
        assert gate_suites(store, ["sums"])[0][0].suite.select("dev") == sums.select("dev")
    assert len(night[11] & night[12]) < 10  # two nights, two samples


def test_a_suite_run_by_a_relative_path_is_found_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store keeps where a suite file was run from as an absolute path, so the nightly
    job, started elsewhere, still gates on its dev split."""
    from reflexa.evals.suite import load_suite

    (tmp_path / "day").mkdir()
    (tmp_path / "day" / "mine.yaml").write_text("- id: a\n  prompt: x\n  split: dev\n")
    monkeypatch.chdir(tmp_path / "day")
    suite = load_suite(Path("mine.yaml"))
    assert suite.source == str(tmp_path / "day" / "mine.yaml")
    with Store.open(load_settings().database) as store:
        store.open_eval_run(suite.name, suite.source, {})
        monkeypatch.chdir(tmp_path)
        gates, notes = gate_suites(store, ["mine"])
    assert [g.label for g in gates] == ["mine:dev", "capabilities"] and notes == []
