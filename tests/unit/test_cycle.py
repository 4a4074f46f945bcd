"""The cycle's outcomes that need no model: too little data, and the overlap lock."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from reflexa.agent.settings import Settings
from reflexa.agent.store import Store, open_store
from reflexa.trainers import candidate as candidate_module
from reflexa.trainers.cycle import cycle_lock, run_cycle
from reflexa.trainers.errors import TrainerError
from reflexa.trainers.gate import GateResult


def no_server() -> None:
    raise AssertionError("a cycle with nothing to train on must not start a model server")


def cycle(settings: Settings) -> dict:
    with open_store(settings) as store:
        return run_cycle(settings.workspace(), store, no_server, no_server)  # type: ignore[arg-type]


def test_no_corrections_is_a_recorded_skip() -> None:
    settings = Settings()
    result = cycle(settings)
    assert result["status"] == "skipped" and "0 sft examples" in result["reason"]
    with Store.open(settings.database) as store:
        [row] = store.cycles()
    assert row["status"] == "skipped" and row["stages"][0]["stage"] == "compile"


def test_two_cycles_never_overlap() -> None:
    settings = Settings()
    lock = cycle_lock(settings.workspace())
    with lock, pytest.raises(TrainerError, match="another cycle is running"):
        cycle(settings)
    assert cycle(settings)["status"] == "skipped"  # type: ignore[arg-type]


def test_an_interrupted_cycle_not_taken_up_is_marked_failed_by_the_next() -> None:
    settings = Settings(cycle=Settings().cycle.model_copy(update={"resume_hours": 0}))
    with Store.open(settings.database) as store:
        store.start_cycle("cli")  # then the process died
    cycle(settings)
    with Store.open(settings.database) as store:
        newest, killed = store.cycles()
    assert killed["status"] == "failed" and "interrupted" in killed["reason"]
    assert newest["status"] == "skipped"


def test_a_taken_up_cycle_does_not_sample_or_train_again_what_finished_before_the_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cycle killed in its gate: the next cycle goes on with it (same id, its stages so
    far kept), sampling and training are not run again, and the adapter trained before the
    stop is the one gated, on the suites its dataset came from. With the adapter's folder
    gone, it is compiled and trained again."""
    from reflexa.trainers import cycle as cycle_module
    from reflexa.trainers import referee as referee_module
    from reflexa.trainers import stages as stages_module
    from reflexa.trainers.referee import Referee

    settings = Settings(memory={"enabled": False})
    dataset, folder = tmp_path / "dataset", tmp_path / "adapter"
    dataset.mkdir()
    folder.mkdir()
    (dataset / "manifest.json").write_text(json.dumps({"suites": ["sums"]}))
    with open_store(settings) as store:
        killed = store.start_cycle("schedule")
        store.add_adapter(version="v1", name="reflexa-v1", path=str(folder), parent=None,
                          base_model="m", method="sft", dataset_hash="h", examples=20,
                          metrics={"train": {"train_s": 1.0}})  # fmt: skip
        finished = [
            {"stage": "sample", "ok": True, "prompts": 9, "mixed_prompts": ["p1"]},
            {"stage": "compile", "ok": True, "examples": 20, "dataset": str(dataset)},
            {"stage": "train", "ok": True, "adapter": "v1", "continued_from": None},
        ]
        for stage in finished:
            store.record_stage(killed, stage)

    def never(*_: object, **__: object) -> None:
        raise AssertionError("a finished stage ran again")

    gated: list[tuple[str, list[str]]] = []

    def gates(self: Referee, store: Store, cycle_id: str, suites: list[str]) -> tuple:
        gated.append((cycle_id, suites))
        return [], []

    class Client:
        def unload_adapter(self, name: str) -> None: ...

    verdict = GateResult("reject", "fake gate", None, {})
    monkeypatch.setattr(cycle_module, "sample_corrections", never)
    monkeypatch.setattr(stages_module, "train_in_child", never)
    monkeypatch.setattr(referee_module, "load", lambda ws, client, row: row["name"])
    monkeypatch.setattr(Referee, "gates", gates)
    monkeypatch.setattr(Referee, "judge", lambda self, g, gold, c: (verdict, None, []))
    with open_store(settings) as store:
        result = run_cycle(settings.workspace(), store, Client, no_server, trigger="schedule")  # type: ignore[arg-type]
        [row] = store.cycles()
    assert result["cycle_id"] == killed == row["id"] and gated == [(killed, ["sums"])]
    assert result["status"] == "rejected" and result["adapter"]["version"] == "v1"
    assert [s["stage"] for s in result["stages"]] == [
        "sample", "compile", "train", "resume", "gate", "reject"]  # fmt: skip
    assert result["stages"][3]["finished_before"] == ["sample", "compile", "train"]
    assert row["status"] == "rejected" and len(row["stages"]) == 6

    folder.rmdir()  # killed again the same way, and the adapter's folder lost since
    with open_store(settings) as store:
        again = store.start_cycle("schedule")
        for stage in [{"stage": "resume", "ok": True}, *finished]:  # taken up once already
            store.record_stage(again, stage)
        result = run_cycle(settings.workspace(), store, Client, no_server, trigger="schedule")  # type: ignore[arg-type]
    assert result["cycle_id"] == again and result["status"] == "skipped"  # no rows to compile
    assert [s["stage"] for s in result["stages"]][4:] == ["resume", "compile"]
    assert result["stages"][4]["finished_before"] == ["sample", "compile", "train"]


def test_a_cycle_stopped_by_sigterm_records_its_stage_and_is_left_to_be_taken_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`reflexa cycle` stopped by SIGTERM (systemd, a Job's deadline, `kill`): the stage
    under way is recorded as failed with its time and the reason, and the cycle is left
    running, so the next one takes it up and runs that stage again."""
    import os
    import signal

    from reflexa.agent.cli import cycle as cycle_cli
    from reflexa.trainers import cycle as cycle_module

    async def stopped_while_sampling(*_: object) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(30)  # the handler raises before this ends

    settings = Settings()
    monkeypatch.setattr(cycle_module, "sampling_targets", lambda *_: ["a prompt"])
    monkeypatch.setattr(cycle_module, "sample_corrections", stopped_while_sampling)
    before = signal.signal(signal.SIGTERM, cycle_cli._stopped)
    try:
        with open_store(settings) as store, pytest.raises(SystemExit, match="stopped by signal"):
            run_cycle(settings.workspace(), store, lambda: None, no_server)  # type: ignore[arg-type]
    finally:
        signal.signal(signal.SIGTERM, before)
    with Store.open(settings.database) as store:
        [row] = store.cycles()
    [sampled] = row["stages"]
    assert row["status"] == "running" and sampled["stage"] == "sample" and not sampled["ok"]
    assert sampled["error"].startswith("stopped by signal 15") and sampled["seconds"] >= 0


def test_with_a_side_server_the_current_adapter_samples_there_and_training_gets_it_back(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Where the application gives the cycle a server of its own per adapter (the merged
    server), the served adapter is sampled on it (never loaded into the application's), and
    it is closed before training; the base model needs none. Without one, the adapter is
    loaded into the application's server."""
    from reflexa.trainers import cycle as cycle_module
    from reflexa.trainers import referee as referee_module
    from reflexa.trainers.referee import Referee

    calls: list[tuple] = []

    class Side:
        def __call__(self, name: str, adapter: Path) -> str:
            calls.append(("side", name, adapter))
            return f"side:{name}"

        def stop(self) -> None:
            calls.append(("stop",))

    async def sampled(ws, store, client, model, targets, progress):  # type: ignore[no-untyped-def]
        calls.append(("sample", client, model))
        return {"prompts": 1}, set()

    def compiled(*_: object) -> None:
        calls.append(("train",))
        raise cycle_module.Skip("faked")

    settings = Settings(memory={"enabled": False})
    monkeypatch.setattr(cycle_module, "sampling_targets", lambda *_: ["a prompt"])
    monkeypatch.setattr(cycle_module, "sample_corrections", sampled)
    monkeypatch.setattr(candidate_module, "compile_and_train", compiled)
    monkeypatch.setattr(referee_module, "check_adapter", lambda row, ws: Path(row["path"]))
    monkeypatch.setattr(referee_module, "load", lambda ws, client, row: f"loaded:{row['name']}")
    with open_store(settings) as store:
        result = run_cycle(settings.workspace(), store, lambda: "main", no_server, side=Side())  # type: ignore[arg-type]
        assert result["status"] == "skipped"
        assert calls == [("sample", "main", None), ("stop",), ("train",)]  # the base model
        store.add_adapter(version="v1", name="reflexa-v1", path=str(tmp_path), parent=None,
                          base_model="m", method="sft", dataset_hash="h", examples=20,
                          metrics={})  # fmt: skip
        store.set_promoted("v1", "test", "retired", was=None)
        calls.clear()
        run_cycle(settings.workspace(), store, lambda: "main", no_server, side=Side())  # type: ignore[arg-type]
        served = ("side", "reflexa-v1", tmp_path)
        assert calls[:3] == [served, ("sample", "side:reflexa-v1", "reflexa-v1"), ("stop",)]
        assert set(calls[3:]) == {("train",)}  # each method's (sft, sft-continue)
        current = store.promoted_adapter()
    alone = Referee(settings.workspace(), "c", lambda: "main", no_server, current, None)
    assert alone.serve(current) == ("main", "loaded:reflexa-v1") and alone.serve(None)[1] is None


def test_each_side_is_measured_on_the_server_that_serves_it_each_server_started_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With a side server (one adapter at a time; a client of a stopped one answers no
    more), a night whose current side is an adapter measures it first (dev and the frozen
    suite), then the candidate on the candidate's server (memories it passes unaided, half
    the dev items, the rest, the frozen suite): two starts, every request to the server
    then running."""
    from reflexa.trainers import cycle as cycle_module
    from reflexa.trainers import referee as referee_module

    calls: list[tuple] = []
    right = {"reflexa-v1": 0.4, "reflexa-v2": 0.8}  # of the dev items; alike on the frozen

    class Side:
        serving: tuple[str, int] | None = None
        starts = 0

        def __call__(self, name: str, adapter: Path) -> tuple[str, int]:
            if self.serving is None or self.serving[0] != name:
                self.starts += 1
                self.serving = name, self.starts
                calls.append(("start", name))
            return self.serving

        def stop(self) -> None:
            self.serving = None

        def live(self, client: tuple[str, int]) -> None:
            if client != self.serving:
                raise ConnectionError(f"{client} was stopped")

    side = Side()

    def evaluator(client: tuple[str, int], cycle_id: str):  # type: ignore[no-untyped-def]
        async def evaluate(adapter, suite, split, memory, gold, draws, progress):  # type: ignore[no-untyped-def]
            side.live(client)
            assert adapter == client[0]
            calls.append(("eval", adapter, suite.name))
            items = suite.select(split)
            share = right["reflexa-v1" if suite.name == "capabilities" else adapter]
            passed = [n < share * len(items) for n in range(len(items))]
            return {"run_id": f"run-{len(calls)}", "items": [
                {"item_id": i.id, "first_passed": ok, "final_passed": ok, "recalled": [],
                 "draws": [ok] * draws} for i, ok in zip(items, passed, strict=True)]}  # fmt: skip

        return evaluate

    async def retired(ws, store, client, name, progress):  # type: ignore[no-untyped-def]
        side.live(client)
        calls.append(("retire", name))
        return 0

    def trained(ws, store, stage, *rest):  # type: ignore[no-untyped-def]
        store.add_adapter(version="v2", name="reflexa-v2", path=str(tmp_path), parent="v1",
                          base_model="m", method="sft", dataset_hash="h2", examples=20,
                          metrics={})  # fmt: skip
        return {"examples": 20}, ["arithmetic"], True, store.adapter("v2")

    settings = Settings(cycle=Settings().cycle.model_copy(
        update={"methods": ["sft"], "sample_n": 0}))  # fmt: skip
    monkeypatch.setattr(candidate_module, "compile_and_train", trained)
    monkeypatch.setattr(candidate_module, "retire_passed", retired)
    monkeypatch.setattr(
        cycle_module, "promote", lambda ws, st, c, v, r: calls.append(("promote", v))
    )
    monkeypatch.setattr(referee_module, "check_adapter", lambda row, ws: Path(row["path"]))
    with open_store(settings) as store:
        store.add_adapter(version="v1", name="reflexa-v1", path=str(tmp_path), parent=None,
                          base_model="m", method="sft", dataset_hash="h1", examples=20,
                          metrics={})  # fmt: skip
        store.set_promoted("v1", "test", "retired", was=None)
        result = run_cycle(
            settings.workspace(), store, lambda: "main", evaluator, side=side,  # type: ignore[arg-type]
            serve_promoted=lambda: calls.append(("serve", side.serving)) or {"merged": True},
        )  # fmt: skip
    assert result["status"] == "promoted", result["reason"]
    assert calls == [
        ("start", "reflexa-v1"), ("eval", "reflexa-v1", "arithmetic"),
        ("eval", "reflexa-v1", "capabilities"),
        ("start", "reflexa-v2"), ("retire", "reflexa-v2"),
        ("eval", "reflexa-v2", "arithmetic"), ("eval", "reflexa-v2", "arithmetic"),  # a half, all
        ("eval", "reflexa-v2", "capabilities"),
        ("promote", "v2"), ("serve", None),  # served merged once the gate's server stopped
    ]  # fmt: skip
    (promoted,) = [s for s in result["stages"] if s["stage"] == "promote"]
    assert promoted["serving"] == {"merged": True}


def test_the_training_child_reads_its_workspace_file_and_fails_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from reflexa.trainers.train import main

    parent = Settings()
    workspace_file = tmp_path / "workspace.json"
    workspace_file.write_text(parent.workspace().to_json())
    monkeypatch.setenv("REFLEXA_HOME", str(tmp_path / "elsewhere"))  # not the child's concern
    code = main(["--workspace", str(workspace_file), "--dataset", str(tmp_path / "nothing")])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("Error: ") and "not a dataset folder" in err
    assert not (parent.home_dir / "reflexa.db").exists()  # the child opens no store
    assert not (tmp_path / "elsewhere").exists()
    settings = ["--settings", '{"learning_rate": -1}']  # a method's own, checked as the config's
    code = main(["--workspace", str(workspace_file), "--dataset", str(tmp_path), *settings])
    err = capsys.readouterr().err
    assert code == 1 and "learning_rate must be positive" in err and "Traceback" not in err
    workspace_file.write_text('{"home": "/h", "model_name": "m", "model_dir": "/m", '
                              '"cycle": {"sample_n": 99}}')  # fmt: skip
    assert main(["--workspace", str(workspace_file), "--dataset", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: workspace: ") and "sample_n" in err and "Traceback" not in err


def test_rounds_chain_cycles_and_stop_at_the_first_that_does_not_promote(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import json

    from click.testing import CliRunner

    from reflexa.agent.cli import cli
    from reflexa.agent.cli import cycle as cycle_cli

    outcomes = iter(["promoted", "promoted", "rejected", "promoted"])

    def fake_cycle(*args: object, round_no: int, **kwargs: object) -> dict:
        status = next(outcomes)
        return {"cycle_id": status + "-id", "round": round_no, "gold": round_no == 1,
                "status": status, "decision": status, "reason": "r", "stages": [],
                "adapter": None, "gate": None}  # fmt: skip

    monkeypatch.setattr(cycle_cli, "run_cycle", fake_cycle)
    done = CliRunner().invoke(cli, ["cycle", "--rounds", "5", "--json"])
    doc = json.loads(done.stdout)
    assert [(r["round"], r["gold"], r["status"]) for r in doc["rounds"]] == [
        (1, True, "promoted"), (2, False, "promoted"), (3, False, "rejected")]  # fmt: skip
    assert doc["status"] == "rejected" and done.exit_code == 0
    assert all(isinstance(r["seconds"], int) for r in doc["rounds"])
    one = json.loads(CliRunner().invoke(cli, ["cycle", "--json"]).stdout)  # a chain of one
    assert (one["round"], one["status"]) == (1, "promoted") and isinstance(one["seconds"], int)
    assert Path(doc["report"]).name == "cycles.html" and Path(doc["report"]).is_file()
    for bad in ("0", "11", "two"):
        refused = CliRunner().invoke(cli, ["cycle", "--rounds", bad])
        assert refused.exit_code == 2 and "--rounds" in refused.output


def test_gold_is_allowed_in_the_first_gold_rounds_of_a_chain_only() -> None:
    from reflexa.trainers.cycle import round_settings

    def gold(n: int, **cycle: object) -> bool:
        settings = Settings(cycle=Settings().cycle.model_copy(update=cycle))
        return round_settings(settings.workspace(), n).cycle.allow_gold

    assert [gold(n) for n in (1, 2, 3)] == [True, False, False]
    assert [gold(n, gold_rounds=2) for n in (1, 2, 3)] == [True, True, False]
    assert [gold(n, gold_rounds=0) for n in (1, 2)] == [False, False]
    assert gold(1, allow_gold=False) is False


def test_with_several_methods_each_that_lacks_data_is_named_in_the_skip() -> None:
    settings = Settings(cycle=Settings().cycle.model_copy(update={"methods": ["sft", "grpo"]}))
    result = cycle(settings)
    assert result["status"] == "skipped"
    assert "sft: 0 sft examples" in result["reason"] and "grpo: 0 grpo examples" in result["reason"]
    assert [s["stage"] for s in result["stages"]] == ["compile sft", "compile grpo"]


def test_kto_without_enough_thumbs_is_a_recorded_skip_that_says_to_rate() -> None:
    settings = Settings(cycle=Settings().cycle.model_copy(update={"methods": ["sft", "kto"]}))
    result = cycle(settings)
    assert result["status"] == "skipped" and "kto: 0 kto examples" in result["reason"]
    assert "rate more answers" in result["reason"]


def test_of_several_methods_the_gate_s_best_promotable_candidate_is_promoted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The choice among methods, with training and the gate faked: of those the gate would
    promote, the one with the largest dev plus frozen gain wins; the others are rejected,
    saying why."""
    from reflexa.trainers import cycle as cycle_module

    settings = Settings(cycle=Settings().cycle.model_copy(
        update={"methods": ["sft", "sft-label-free", "grpo"], "sample_n": 0}))  # fmt: skip
    scores = {"sft": ("promote", 0.6), "sft-label-free": ("promote", 0.7), "grpo": ("reject", 0.9)}
    frozen = {"sft": 0.0, "sft-label-free": 0.0, "grpo": 0.0}  # the frozen suite's difference
    promoted: list[str] = []
    promoted_before: list[str] = []

    class Client:
        def unload_adapter(self, name: str) -> None: ...

    with open_store(settings) as store:

        def fake_candidate(ws, store_, stage, referee, method, *rest):  # type: ignore[no-untyped-def]
            decision, dev = scores[method]
            version = f"v-{method}" + "-2" * len(promoted_before)
            store_.add_adapter(version=version, name=version, path="/nowhere", parent=None,
                              base_model="m", method="sft", dataset_hash="h", examples=20,
                              metrics={"train": {"train_s": 1.0}})  # fmt: skip
            p = 0.001 if decision == "promote" else 0.5
            measured = {"a": 0.5, "b": dev, "difference": dev - 0.5, "p_value": p, "answers": 5,
                        "greedy": {"a": 0.5, "b": dev}}  # fmt: skip
            suites = {"capabilities": {"frozen": True, "difference": frozen[method]}}
            gate = GateResult(decision, f"{method} {dev}", measured, suites)
            return cycle_module.Gated(
                method, store_.adapter(version), version, gate, {"examples": 20}
            )

        monkeypatch.setattr(cycle_module, "candidate", fake_candidate)
        monkeypatch.setattr(cycle_module, "promote", lambda s, st, c, v, r: promoted.append(v))
        result = run_cycle(settings.workspace(), store, Client, no_server)  # type: ignore[arg-type]
        rows = {a["version"]: a for a in store.adapters()}
    assert result["status"] == "promoted" and promoted == ["v-sft-label-free"]
    assert result["adapter"]["version"] == "v-sft-label-free"
    assert {m: s["decision"] for m, s in result["methods"].items()} == {
        "sft": "promote", "sft-label-free": "promote", "grpo": "reject"}  # fmt: skip
    assert rows["v-sft"]["status"] == "rejected"
    assert rows["v-sft"]["reason"].startswith("the gate preferred v-sft-label-free")
    assert rows["v-grpo"]["reason"] == "grpo 0.9"  # its own gate's reason
    frozen.update({"sft": 0.12, "sft-label-free": -0.02})  # learns less, forgets less: wins
    promoted_before[:] = promoted
    promoted.clear()
    with open_store(settings) as store:
        result = run_cycle(settings.workspace(), store, Client, no_server)  # type: ignore[arg-type]
    assert promoted == ["v-sft-2"]
    scores.update({"sft": ("reject", 0.5), "sft-label-free": ("reject", 0.4)})
    promoted_before.extend(promoted)  # the next versions: -2-2
    promoted.clear()
    with open_store(settings) as store:
        result = run_cycle(settings.workspace(), store, Client, no_server)  # type: ignore[arg-type]
    assert result["status"] == "rejected" and promoted == []


def test_a_candidate_only_the_frozen_suite_rejects_is_blended_back_and_gated_again(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Training and gates faked: a candidate the dev splits would promote but the frozen
    suite rejects is pulled back toward the current adapter and gated as one more candidate,
    Holm over both; its blend is promoted where that gate passes, and the cycle's printout
    and JSON say so. One rejected on dev, or one that regressed a dev suite, is not blended;
    nor is any with `blend` 0."""
    from reflexa.agent.cli import cycle as cycle_cli
    from reflexa.trainers import cycle as cycle_module

    def gate(decision: str, p: float, frozen_lower: float, dev_drop: float = 0.0) -> GateResult:
        dev = {"a": 0.3, "b": 0.34, "difference": 0.04, "p_value": p, "answers": 5,
               "greedy": {"a": 0.3, "b": 0.33}}  # fmt: skip
        suites = {
            "sums:dev": {"frozen": False, "difference": 0.04 - dev_drop, "p_value": p},
            "capabilities": {"frozen": True, "difference": -0.02, "lower_95": frozen_lower},
        }
        return GateResult(decision, f"{decision} {p}", dev, suites)  # type: ignore[arg-type]

    promoted: list[str] = []
    blends: list[str] = []
    night = {"gate": gate("reject", 0.008, -0.053)}  # night 2 of the nights run begun 12-07

    def adapter(store, version):  # type: ignore[no-untyped-def]
        store.add_adapter(version=version, name=version, path="/nowhere", parent=None,
                          base_model="m", method="sft", dataset_hash="h", examples=20,
                          metrics={"train": {"train_s": 1.0}})  # fmt: skip
        return store.adapter(version)

    def fake_candidate(ws, store, stage, referee, method, *rest):  # type: ignore[no-untyped-def]
        version = f"v{len(store.adapters()) + 1}"
        return cycle_module.Gated(method, adapter(store, version), version, night["gate"], {})

    def fake_blended(ws, store, stage, referee, forgetful, on_progress):  # type: ignore[no-untyped-def]
        blends.append(forgetful.adapter["version"])
        version = f"v{len(store.adapters()) + 1}"
        return cycle_module.Gated("sft blend", adapter(store, version), version,
                                  gate("promote", 0.02, -0.03), {})  # fmt: skip

    class Client:
        def unload_adapter(self, name: str) -> None: ...

    monkeypatch.setattr(cycle_module, "candidate", fake_candidate)
    monkeypatch.setattr(cycle_module, "blended", fake_blended)
    monkeypatch.setattr(cycle_module, "promote", lambda s, st, c, v, r: promoted.append(v))
    settings = Settings(cycle=Settings().cycle.model_copy(update={"sample_n": 0}))
    with open_store(settings) as store:
        result = run_cycle(settings.workspace(), store, Client, no_server)  # type: ignore[arg-type]
    assert blends == ["v1"] and promoted == ["v2"] and result["status"] == "promoted"
    assert result["blend"]["adapter"] == "v2" and result["blend"]["decision"] == "promote"
    assert result["blend"]["of"] == "v1"
    cycle_cli._print_cycle(result | {"seconds": 1, "gate": None})  # the faked gate: no suites
    printed = capsys.readouterr().out
    assert "blend of v1 back toward the current adapter: v2 promote" in printed
    assert cycle_cli._cycle_summary(result)["blend"] == result["blend"]  # --json says it too
    assert "Holm-adjusted over 2 candidates 0.02" in result["reason"]

    blended_once = len(blends)
    for night["gate"] in (gate("reject", 0.3, 0.0), gate("reject", 0.008, -0.053, 0.08)):
        with open_store(settings) as store:
            result = run_cycle(settings.workspace(), store, Client, no_server)  # type: ignore[arg-type]
        assert result["status"] == "rejected" and "blend" not in result
    night["gate"] = gate("reject", 0.008, -0.053)
    off = Settings(cycle=settings.cycle.model_copy(update={"blend": 0}))
    with open_store(off) as store:
        assert run_cycle(off.workspace(), store, Client, no_server)["status"] == "rejected"  # type: ignore[arg-type]
    assert len(blends) == blended_once


def test_methods_that_would_train_alike_are_tried_once() -> None:
    from reflexa.trainers.methods import distinct

    both = ["sft", "sft-label-free", "grpo"]
    assert distinct(both, True, False, True) == both
    assert distinct(both, False, False, True) == ["sft", "grpo"]  # no gold: the same recipe
    assert distinct(["grpo", "grpo"], True, False, True) == ["grpo"]
    going_on = ["sft", "sft-continue"]
    assert distinct(going_on, False, False, True) == going_on
    assert distinct(going_on, False, True, True) == ["sft"]  # every SFT goes on: alike
    assert distinct(going_on, True, False, False) == ["sft"]  # nothing to go on from
    tuned = ["sft", "sft@learning_rate=1e-4", "sft@learning_rate=0.0001", "sft@epochs=1"]
    assert distinct(tuned, True, False, True) == ["sft", "sft@learning_rate=1e-4", "sft@epochs=1"]


def test_the_cycles_page_plots_each_gated_cycle_and_tables_every_cycle() -> None:
    from reflexa.evals.report import cycles_page

    def cycle(status: str, round_no: int, held: dict | None) -> dict:
        # Cycles recorded before the gate's dev result was named `dev` call it `heldout`.
        gate = {"heldout" if round_no == 1 else "dev": held} if held is not None else None
        stages = [{"stage": "compile", "seconds": 1.0,
                   "precision": {"consistency": {"examples": 7}}},
                  {"stage": "train", "seconds": 119.0}]  # fmt: skip
        return {"started_at": "2026-11-24 10:00:00", "status": status, "stages": stages,
                "adapter_version": f"v{round_no}", "reason": f"why {round_no}",
                "result": {"round": round_no, "gold": round_no == 1, "gate": gate}}  # fmt: skip

    page = cycles_page([cycle("promoted", 1, {"a": 0.01, "b": 0.55}),
                        cycle("rejected", 2, {"a": 0.55, "b": 0.5}),
                        cycle("skipped", 3, None)])  # fmt: skip
    assert page.count("<img") == 1 and "data:image/png;base64," in page
    assert page.count("<tr>") == 4  # the header and each cycle, gated or not
    assert "1% → 55%" in page and "consistency 7" in page and "2.0" in page and "why 3" in page


def test_the_cycles_page_says_what_each_method_did_on_each_suite_and_why_that_order() -> None:
    from reflexa.evals.report import methods_line

    several = {"methods": {
        "grpo": {"decision": "promote", "suites": {"sums:dev": 0.12, "capabilities": -0.01}},
        "sft": {"skipped": "the night's budget was spent"}},
        "method_order": "methods in order of their record: grpo won 1 of 1 nights"}  # fmt: skip
    assert methods_line(several) == (
        "grpo: promote (sums:dev +12.0%, capabilities -1.0%); "
        "sft: skipped (the night's budget was spent). "
        "methods in order of their record: grpo won 1 of 1 nights"
    )
    gate = {"decision": "reject", "suites": {"sums:dev": {"difference": -0.03}}}
    one = {"adapter": {"method": "sft"}, "gate": gate}
    assert methods_line(one) == "sft: reject (sums:dev -3.0%)"


def test_gold_settles_a_prompt_only_where_every_candidate_may_learn_from_it() -> None:
    from reflexa.trainers.cycle import _settling

    ws = Settings().workspace()
    assert _settling(ws, ["sft"]) == ["user", "gold", "consistency"]
    assert _settling(ws, ["sft", "sft-label-free"]) == ["user", "consistency"]
    assert _settling(ws, ["sft", "grpo"]) == ["user", "consistency"]
    assert _settling(ws.with_cycle(allow_gold=False), ["sft"]) == ["user", "consistency"]


def test_once_gold_is_off_sft_goes_on_from_the_adapter_gold_taught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A night that may not learn from gold (round 2 of a chain, or gold turned off) while
    the served adapter learnt from it starts SFT from that adapter, not from the base model
    without those rows; so does the night after one that went on from it. Where gold is
    allowed, or the served adapter never had gold, SFT starts afresh; sft-continue is sft
    where every SFT goes on."""
    from reflexa.trainers import cycle as cycle_module

    seen: list[tuple[int, bool, bool]] = []
    tried: list[str] = []

    def fake_candidate(ws, store, stage, referee, method, *rest):  # type: ignore[no-untyped-def]
        tried.append(method)
        if method == "sft":
            seen.append((stage.round_no, ws.cycle.allow_gold, stage.continue_parent))
        raise cycle_module.Skip("faked")

    monkeypatch.setattr(cycle_module, "candidate", fake_candidate)
    gold = Settings(cycle=Settings().cycle.model_copy(update={"sample_n": 0}))
    never = Settings(cycle=gold.cycle.model_copy(update={"allow_gold": False}))
    with open_store(gold) as store:
        made_by = {"v1": {"gold": True}, "v2": {"gold": False, "holds_gold": True},
                   "v3": {"gold": False, "holds_gold": False}, None: None}  # fmt: skip
        for version, made in made_by.items():
            if version:
                store.add_adapter(version=version, name=version, path="/p", parent=None,
                                  base_model="m", method="sft", dataset_hash="h", examples=1,
                                  metrics={"cycle": made})  # fmt: skip
            was = store.promoted_adapter()
            store.set_promoted(version, "test", "retired", was=was and was["version"])
            seen.clear()
            for settings, n in ((gold, 1), (gold, 2), (never, 1)):
                run_cycle(settings.workspace(), store, no_server, no_server, round_no=n)  # type: ignore[arg-type]
            went_on = version in ("v1", "v2")
            assert seen == [(1, True, False), (2, False, went_on), (1, False, went_on)], version
            # sft-continue is tried beside sft where it trains differently: an adapter to go
            # on from, and sft would not go on from it anyway
            runs_apart = 1 + 2 * (not went_on)  # gold allowed: sft starts afresh
            assert tried.count("sft-continue") == (version is not None) * runs_apart, version
            tried.clear()


def test_adapters_list_shows_each_adapter_s_round_method_and_rows() -> None:
    from click.testing import CliRunner

    from reflexa.agent.cli import cli

    settings = Settings()
    cycle_meta = {"round": 2, "method": "sft", "gold": False,
                  "data": {"precision": {"consistency": {"examples": 138},
                                         "checks": {"examples": 46}}}}  # fmt: skip
    gate = {"dev": {"a": 0.55, "b": 0.56, "p_value": 1.0}}
    with open_store(settings) as store:
        store.add_adapter(version="v2", name="n", path="/p", parent="v1", base_model="m",
                          method="sft", dataset_hash="h", examples=184,
                          metrics={"cycle": cycle_meta, "gate": gate})  # fmt: skip
        went_on = cycle_meta | {"method": "sft-continue", "continued": True}
        store.add_adapter(version="v3", name="n3", path="/p3", parent="v2", base_model="m",
                          method="sft", dataset_hash="h", examples=184,
                          metrics={"cycle": went_on, "gate": gate})  # fmt: skip
    done = CliRunner().invoke(cli, ["adapters", "list"], env={"COLUMNS": "250"})
    assert done.exit_code == 0, done.output
    row = next(line for line in done.output.splitlines() if "│ v2" in line)
    assert "sft (no gold)" in row and "consistency 138, checks 46" in row
    assert "on from" not in row  # trained afresh
    assert "│ 2 " in row and "55% → 56%" in row
    row = next(line for line in done.output.splitlines() if "│ v3" in line)
    assert "sft-continue (no gold), on from v2" in row


def test_the_cycle_prints_each_method_s_evidence(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from reflexa.agent.cli import cli
    from reflexa.agent.cli import cycle as cycle_cli

    methods = {"sft": {"adapter": "v3", "decision": "reject", "gate_split": None,
                       "examples": 20, "train_s": 61.0},
               "sft-label-free": {"adapter": "v4", "decision": "promote", "gate_split": 0.6,
                                  "examples": 18, "train_s": 58.0},
               "grpo": {"skipped": "0 grpo examples"}}  # fmt: skip

    def fake_cycle(*args: object, round_no: int, **kwargs: object) -> dict:
        return {"cycle_id": "c" * 12, "round": round_no, "gold": True, "status": "promoted",
                "decision": "promote", "reason": "r", "stages": [], "adapter": None,
                "gate": None, "methods": methods}  # fmt: skip

    monkeypatch.setattr(cycle_cli, "run_cycle", fake_cycle)
    done = CliRunner().invoke(cli, ["cycle"])
    assert done.exit_code == 0, done.output
    assert "v3 reject, gate split none, 20 rows" in done.output
    assert "v4 promote, gate split 60.0%" in done.output and "skipped: 0 grpo" in done.output


def test_the_current_side_is_measured_once_a_night_and_memory_written_after_the_decision() -> None:
    """Every candidate is compared with one measurement of the current adapter, taken
    before any candidate's; the memories a rejected candidate retired are active again and
    what recall did is written for the current side and the promoted one only."""
    from reflexa.trainers.gate import Measured
    from reflexa.trainers.referee import Referee, settle_memory

    from .test_gate import FROZEN, HELD, fake_evaluate

    settings = Settings()
    calls: list[tuple] = []
    evaluate = fake_evaluate(lambda adapter, name, memory: 10, calls)
    referee = Referee(settings.workspace(), "c1", lambda: "server", lambda *_: evaluate, None, None)
    first = referee([HELD, FROZEN], gold=False)
    assert referee([HELD, FROZEN], gold=False) is first
    assert len(calls) == 2  # 2 suites, once (nothing recalled: no unaided run needed)
    with Store.open(settings.database) as store:
        for n in (1, 2):
            store.add_correction(None, prompt=f"What is {n} + {n}?", chosen=str(2 * n),
                                 source="user", verified=True)  # fmt: skip
        one, two = (m["id"] for m in store.memories())
        store.retire_memories([one], "cand-rejected")
        store.retire_memories([two], "cand-promoted")
        tried = [(name, Measured(name, {}, {}, {}), [HELD, FROZEN])
                 for name in ("cand-rejected", "cand-promoted")]  # fmt: skip
        settle_memory(store, referee, tried, best="cand-promoted")
        status = {m["id"]: (m["status"], m["retired_by"]) for m in store.memories()}
        policies = {(p["model"], p["suite"]) for p in store.recall_policies()}
    assert status == {one: ("active", None), two: ("retired", "cand-promoted")}
    assert policies == {("", "arithmetic"), ("", "capabilities")}  # the current: base model


def test_the_frozen_suite_is_measured_only_for_a_candidate_the_dev_splits_would_promote() -> None:
    """A candidate the dev splits reject costs neither side the frozen suite, and the
    decision says it was not measured; one they would promote is judged on it too, with
    the current side's frozen measurement taken once for the night. (Futility off: its
    half-way stop is the next test's.)"""
    import asyncio

    from reflexa.trainers.gate import measure
    from reflexa.trainers.referee import Referee

    from .test_gate import FROZEN, HELD, fake_evaluate

    settings = Settings(cycle=Settings().cycle.model_copy(update={"futility": False}))
    calls: list[tuple] = []
    right = {None: 40, "worse": 30, "better": 80, "better too": 90}
    evaluate = fake_evaluate(lambda adapter, name, memory: right[adapter], calls)
    referee = Referee(settings.workspace(), "c1", lambda: "server", lambda *_: evaluate, None, None)

    def judged(name: str) -> tuple:
        before = len(calls)
        candidate = lambda gates, recall: asyncio.run(measure(settings.cycle, evaluate, gates, name,  # noqa: E731
                                                      "candidate", memory=False))  # fmt: skip
        verdict, _, gates = referee.judge([HELD, FROZEN], False, candidate)
        return verdict, [g.label for g in gates], [(c[0], c[1]) for c in calls[before:]]

    verdict, gates, asked = judged("worse")
    assert verdict.decision == "reject" and "capabilities" not in verdict.suites
    assert verdict.notes == ["capabilities: not measured, as the dev splits reject"]
    assert gates == [HELD.label] and asked == [(None, "arithmetic"), ("worse", "arithmetic")]
    verdict, gates, asked = judged("better")
    assert verdict.decision == "promote" and verdict.suites["capabilities"]["frozen"] is True
    assert gates == [HELD.label, FROZEN.label]
    # the current side's frozen suite first: the candidate is served with its recall there
    # (in a night the current side has measured it before any candidate)
    assert asked == [("better", "arithmetic"), (None, "capabilities"), ("better", "capabilities")]
    _, _, asked = judged("better too")
    assert asked == [("better too", "arithmetic"), ("better too", "capabilities")]


def test_a_candidate_behind_on_half_the_dev_items_is_rejected_there_as_futile() -> None:
    """With futility on, each candidate is measured on one random half of the dev items
    first (the same half for every candidate of the night): one not ahead there is rejected
    without its other half or the frozen suite; one ahead is measured on all the items and
    decided as before."""
    import asyncio

    from reflexa.trainers.gate import measure
    from reflexa.trainers.referee import Referee

    from .test_gate import FROZEN, HELD, fake_evaluate

    settings = Settings()
    calls: list[tuple] = []
    asked: list[list[str]] = []
    right = {None: 40, "worse": 30, "better": 80}
    evaluate = fake_evaluate(lambda adapter, name, memory: right[adapter], calls)

    async def counting(adapter, suite, *rest):  # type: ignore[no-untyped-def]
        asked.append([i.id for i in suite.items])
        return await evaluate(adapter, suite, *rest)

    referee = Referee(settings.workspace(), "c1", lambda: "s", lambda *_: counting, None, None)
    referee.seed = 7

    def judged(name: str) -> tuple:
        before = len(asked)
        candidate = lambda gates, recall: asyncio.run(measure(settings.cycle, counting, gates, name,  # noqa: E731
                                                      "candidate", memory=False))  # fmt: skip
        verdict = referee.judge([HELD, FROZEN], False, candidate)[0]
        return verdict, asked[before:]

    verdict, runs = judged("worse")
    current, half = runs
    assert len(current) == 100 and 35 <= len(half) <= 65 and set(half) < set(current)
    assert verdict.decision == "reject" and verdict.reason.startswith("futile: on a random half")
    assert verdict.dev["items"] == len(half) and "capabilities" not in verdict.suites
    verdict, runs = judged("better")
    assert runs[0] == half and len(runs[1]) == 100  # the same half; then all (and frozen)
    assert verdict.decision == "promote" and verdict.dev["items"] == 100
    assert verdict.suites["capabilities"]["items"] == 123


def test_a_suite_recall_was_measured_to_cost_stays_off_for_the_current_adapter() -> None:
    """An earlier night turned recall off for the current adapter (here the base model) on
    arithmetic: tonight that suite is asked unaided only, never with recall, and the policy
    written back is that night's measurement, kept (its reason marked once, however many
    nights carry it). Other suites are measured as before."""
    from reflexa.trainers.referee import KEPT, Referee, settle_memory

    from .test_gate import FROZEN, HELD, fake_evaluate

    settings = Settings(memory=Settings().memory.model_copy(update={"enabled": True}))
    reason = "greedy pass 21.1% without recall, 8.4% with it: recall off (p = 0.0084)"
    with Store.open(settings.database) as store:
        store.set_recall_policy("", "arithmetic", False, reason, {"items": 95})
        for night in (1, 2):
            calls: list[tuple] = []
            evaluate = fake_evaluate(lambda adapter, name, memory: 60, calls, lambda item: [1])
            referee = Referee(settings.workspace(), f"c{night}", lambda: "server",
                              lambda *_, e=evaluate: e, None, None)  # fmt: skip
            referee.gates(store, f"c{night}", ["arithmetic"])
            measured = referee([HELD, FROZEN], gold=False)
            assert [c[3] for c in calls if c[1] == "arithmetic"] == [False]  # unaided, once
            assert any(c[1] == "capabilities" and c[3] for c in calls)  # with recall, each night
            assert measured.memory[HELD.label]["recall"] is False
            settle_memory(store, referee, [], best=None)
            policy = {p["suite"]: p for p in store.recall_policies("")}
            assert policy["arithmetic"]["recall"] is False
            assert policy["arithmetic"]["reason"] == KEPT + reason
            assert policy["arithmetic"]["measured"] == {"items": 95}


def test_with_rehearsal_on_the_current_model_answers_the_chat_prompts_before_training(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`[cycle] rehearsal`: the chat prompts go to the current model's server once a night,
    before any method trains, and every SFT method's compile gets what it answered."""
    from reflexa.trainers import cycle as cycle_module
    from reflexa.trainers.methods import parse_method
    from reflexa.trainers.rehearsal import _row
    from tests.unit.test_rehearsal import chat

    calls: list[tuple] = []

    async def rehearsed(ws, client, model, prompts, progress):  # type: ignore[no-untyped-def]
        calls.append(("rehearse", client, model, [p.prompt for p in prompts]))
        kept = [_row(p.prompt, "Tea is a drink.", p.id) for p in prompts]
        return kept, {"prompts": len(prompts), "kept": len(kept)}

    def compiled(ws, store, stage, recipe, *rest):  # type: ignore[no-untyped-def]
        calls.append(("train", recipe.spec, [e.chosen for e in stage.rehearsal]))
        raise cycle_module.Skip("faked")

    monkeypatch.setattr(cycle_module, "rehearse", rehearsed)
    monkeypatch.setattr(candidate_module, "compile_and_train", compiled)
    update = {"sample_n": 0, "methods": ["sft@rehearsal=0.2", "sft@epochs=1", "grpo"]}
    settings = Settings(memory={"enabled": False},
                        cycle=Settings().cycle.model_copy(update=update))  # fmt: skip
    with open_store(settings) as store:
        chat(store, "Tell me about tea.")
        result = run_cycle(settings.workspace(), store, lambda: "main", no_server)  # type: ignore[arg-type]
    assert result["status"] == "skipped"
    assert calls[0] == ("rehearse", "main", None, ["Tell me about tea."])  # the base model
    assert ("train", "sft@rehearsal=0.2", ["Tea is a drink."]) in calls[1:] and len(calls) == 4
    assert parse_method("sft@rehearsal=0.2").training() == {}  # not the trainer's setting
    stage = next(s for s in result["stages"] if s["stage"] == "rehearse")
    assert stage["kept"] == 1 and Path(stage["file"]).is_file()
    assert Settings().cycle.rehearsal == 0.25 and parse_method("sft").rehearsal(0.3) == 0.3
    off = Settings(memory={"enabled": False},
                   cycle={"sample_n": 0, "methods": ["sft"], "rehearsal": 0})  # fmt: skip
    calls.clear()
    with open_store(off) as store:
        chat(store, "Tell me about tea.")
        run_cycle(off.workspace(), store, lambda: "main", no_server)  # type: ignore[arg-type]
    assert calls == [("train", "sft", [])]  # 0: off
