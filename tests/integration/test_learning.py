"""The self-repair loop on the bundled model: real TRL/PEFT training steps, adapters served by
the real vLLM server, a whole cycle with its gate, and training killed half-way.

Each test works in a home of its own that uses the session's server (REFLEXA_VLLM_URL), so a
promoted adapter here never becomes the default of the other integration tests.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
from safetensors.numpy import load_file

from reflexa.agent.model.client import ModelClient
from reflexa.agent.settings import load_settings
from reflexa.agent.store import Store
from reflexa.evals.builtin import BUILTIN
from reflexa.trainers.dataset import Example, to_records, write_dataset
from tests.helpers import free_port, streaming
from tests.integration.conftest import Session, run_reflexa

pytestmark = pytest.mark.integration
TINY = (
    "min_examples: 8\nmax_steps: {steps}\nbatch_size: 4\ngrpo_batch_size: 4\ngrpo_generations: 4\n"
)


def home_env(session: Session, home: Path, steps: int = 2) -> dict[str, str]:
    """A separate home on the session's server and model folder."""
    (home / "train.yaml").parent.mkdir(parents=True, exist_ok=True)
    (home / "train.yaml").write_text(TINY.format(steps=steps))
    return session.env | {
        "REFLEXA_HOME": str(home),
        "REFLEXA_VLLM_URL": f"http://127.0.0.1:{session.port}",
        "REFLEXA_MODEL__PATH": str(session.model_dir),
        "REFLEXA_CYCLE__TRAIN_CONFIG": str(home / "train.yaml"),
        "REFLEXA_CYCLE__SAMPLE_N": "0",
    }


def sums_dataset(out: Path, n: int = 16, repairs: int = 4) -> Path:
    """`n` examples; the first `repairs` are the model's own repairs, so also repair turns
    (a conversation of four messages, the loss on the last)."""
    examples = [
        Example(f"h{i}", f"What is {i} + {i + 1}? Reply with only the number.", str(2 * i + 1),
                "gold", f"{i} + {i + 1} = {i}")
        for i in range(10, 10 + n)
    ]  # fmt: skip
    for e in examples[:repairs]:
        e.source, e.repair_request = "repair", "Your answer was checked and it is wrong. …"
    return write_dataset(to_records(examples, "sft"), out, "sft")


def seed_failures(env: dict[str, str], n: int) -> None:
    """Recorded training-split failures of real arithmetic items (gold-backed corrections)."""
    settings = load_settings_from(env)
    items = [i for i in BUILTIN["arithmetic"]().items if i.split == "train"][:n]
    with Store.open(settings.database) as store:
        for item in items:
            id = uuid.uuid4().hex
            store.start_episode(
                id=id, thread_id=id, prompt=item.user_prompt, messages=[], model="m",
                checks=item.check_specs(), scoring=item.scoring_specs(), gold_allowed=True,
                suite="arithmetic", split="train", item_id=item.id,
            )  # fmt: skip
            verdict = {"verifier": "numeric", "passed": False, "score": 0.0, "feedback": "",
                       "kind": "grounded", "error": None}  # fmt: skip
            store.finish_episode(
                id, status="unresolved", answer="1 + 1 = 3", error=None, latency_s=0.1,
                attempts=[{"kind": "generate", "answer": "1 + 1 = 3", "verdicts": [verdict],
                           "passed": False, "score": 0.0, "model": "m"}],
                scores=[False],  # wrong by scoring, as the application scored it
            )  # fmt: skip


def load_settings_from(env: dict[str, str]):  # type: ignore[no-untyped-def]
    saved = dict(os.environ)
    os.environ.update({k: v for k, v in env.items() if k.startswith("REFLEXA_")})
    try:
        return load_settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def trained(vllm_session: Session, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Two adapters trained by `reflexa train` (2 real SFT steps each) in one home, on two
    datasets: training is deterministic on some CPUs, and equal weights share one name."""
    home = tmp_path_factory.mktemp("trained-home")
    env = home_env(vllm_session, home)
    datasets = [sums_dataset(home / "data"), sums_dataset(home / "data-2", n=12)]
    base_file = vllm_session.model_dir / "model.safetensors"
    before = sha256(base_file)
    stale = home / "adapters" / ".partial-999999999-dead"  # left by a trainer that died
    stale.mkdir(parents=True)
    rows = [
        json.loads(run_reflexa("train", "--dataset", str(dataset), "--train-config",
                               str(home / "train.yaml"), "--json", env=env).stdout)
        for dataset in datasets
    ]  # fmt: skip
    assert rows[0]["name"] != rows[1]["name"]
    yield {"env": env, "home": home, "rows": rows, "base_before": before, "stale": stale}
    client = ModelClient(env["REFLEXA_VLLM_URL"], "smollm2-135m-instruct")
    for row in rows:
        if row["name"] in client.adapters():
            client.unload_adapter(row["name"])


def test_sft_changes_the_adapter_and_never_the_base(trained: dict, vllm_session: Session) -> None:
    row = trained["rows"][0]
    assert row["version"] == "v1" and row["status"] == "candidate" and row["examples"] == 20
    assert [p["step"] for p in row["metrics"]["train"]["loss"]] == [1, 2]
    assert sha256(vllm_session.model_dir / "model.safetensors") == trained["base_before"]
    weights = load_file(str(Path(row["path"]) / "adapter_model.safetensors"))
    lora_b = [w for name, w in weights.items() if "lora_B" in name]
    assert lora_b and all(abs(w).max() > 0 for w in lora_b)  # PEFT starts B at zero
    meta = json.loads((Path(row["path"]) / "reflexa_adapter.json").read_text())
    assert meta["base_model"] == "smollm2-135m-instruct" and meta["examples"] == 20
    assert not trained["stale"].exists()  # a dead trainer's half-written folder is removed
    assert not list((trained["home"] / "adapters").glob(".partial-*"))


def test_promote_and_rollback_on_the_real_server(trained: dict) -> None:
    env = trained["env"]
    v1, v2 = trained["rows"]
    client = ModelClient(env["REFLEXA_VLLM_URL"], "smollm2-135m-instruct")
    run_reflexa("adapters", "promote", "v1", env=env)
    assert v1["name"] in client.adapters()
    answer = json.loads(run_reflexa("ask", "What is 12 + 13?", "--json", env=env).stdout)
    settings = load_settings_from(env)
    with Store.open(settings.database) as store:
        assert store.episode(answer["episode_id"])["model"] == v1["name"]  # type: ignore[index]
    run_reflexa("adapters", "promote", "v2", env=env)
    listed = {a["version"]: a["status"] for a in
              json.loads(run_reflexa("adapters", "list", "--json", env=env).stdout)}  # fmt: skip
    assert listed == {"v1": "retired", "v2": "promoted"}
    assert "now v1" in run_reflexa("adapters", "rollback", env=env).stdout
    assert v2["name"] in client.adapters()  # kept while episodes begun on it finish
    assert "base model" in run_reflexa("adapters", "rollback", env=env).stdout
    assert v1["name"] in client.adapters() and v2["name"] not in client.adapters()
    again = run_reflexa("adapters", "rollback", env=env, check=False)
    assert again.returncode == 1 and "nothing to roll back" in again.stderr


def test_two_api_processes_see_each_promotion_on_their_next_request(trained: dict) -> None:
    """Two `reflexa serve` processes on one store; 16 clients stream through both while the
    CLI promotes and rolls back: no request fails (none is sent to an adapter that is not
    loaded), and each process answers with the new default on its next request."""
    from tests.integration.test_serve import start_api

    env, (v1, v2) = trained["env"], trained["rows"]
    session = Session(trained["home"], int(env["REFLEXA_VLLM_URL"].rsplit(":", 1)[1]), env, {})
    apis = [start_api(session, trained["home"], free_port(), max_tokens=8) for _ in range(2)]
    failures: list[str] = []
    done = threading.Event()

    def answered_by(url: str) -> str:
        body = {"messages": [{"role": "user", "content": "What is 2 + 2?"}]}
        return str(httpx.post(f"{url}/v1/chat/completions", json=body, timeout=300).json()["model"])

    urls = [url for _, url in apis]
    try:
        with ThreadPoolExecutor(16) as pool:
            streams = [pool.submit(streaming, urls[i % 2], done, failures) for i in range(16)]
            for move, then in ((("promote", "v1"), v1["name"]), (("promote", "v2"), v2["name"]),
                               (("rollback",), v1["name"])):  # fmt: skip
                run_reflexa("adapters", *move, env=env)  # through the CLI: a third process
                assert [answered_by(u) for u in urls] == [then, then], move
            time.sleep(2)
            done.set()
            sent = sum(s.result() for s in streams)
    finally:
        done.set()
        for child, _ in apis:
            child.terminate()
            child.wait(timeout=30)
        run_reflexa("adapters", "rollback", env=env, check=False)  # back to the base model
    assert sent >= 16 and failures == [], failures[:3]


def test_the_training_child_runs_under_accelerate_launch(
    vllm_session: Session, tmp_path: Path
) -> None:
    """`[train] launcher = "accelerate"`: the cycle's child runs through `accelerate launch`
    (one CPU process here: the plumbing; DDP needs a GPU node or MPI) and its adapter comes
    back through the adapters folder."""
    from reflexa.trainers.child import train_in_child
    from reflexa.trainers.launch import EXAMPLES

    env = home_env(vllm_session, tmp_path / "home") | {
        "REFLEXA_TRAIN__LAUNCHER": "accelerate",
        "REFLEXA_TRAIN__ACCELERATE_CONFIG": str(EXAMPLES / "cpu.yaml"),
    }
    ws = load_settings_from(env).workspace()
    assert ws.launch.command([])[2] == "accelerate.commands.launch"
    built = train_in_child(ws, sums_dataset(tmp_path / "data"), "sft", None, None)
    assert built.path.parent == ws.adapters_dir and built.path.name.startswith(".partial-")
    assert {"adapter_model.safetensors", "reflexa_adapter.json"} <= {
        p.name for p in built.path.iterdir()
    }
    assert [e["step"] for e in built.metadata["loss"]] == [1, 2]
    assert built.metadata["processes"] == 1


def test_a_killed_trainer_leaves_no_adapter(vllm_session: Session, tmp_path: Path) -> None:
    env = home_env(vllm_session, tmp_path / "home", steps=500)
    dataset = sums_dataset(tmp_path / "data")
    child = subprocess.Popen(
        [sys.executable, "-m", "reflexa.agent", "train", "--dataset", str(dataset),
         "--train-config", str(tmp_path / "home" / "train.yaml"), "--json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_for_cpu(child.pid, seconds=15)  # model loaded, steps under way
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    adapters = tmp_path / "home" / "adapters"
    assert not list(adapters.glob("v*"))
    listed = json.loads(run_reflexa("adapters", "list", "--json", env=env).stdout)
    assert listed == []


def test_cycle_killed_in_training_promotes_nothing_while_vllm_answers(
    vllm_session: Session, tmp_path: Path
) -> None:
    env = home_env(vllm_session, tmp_path / "home", steps=500)
    seed_failures(env, 16)
    cycle = subprocess.Popen(
        [sys.executable, "-m", "reflexa.agent", "cycle", "--json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    trainer = wait_for_child(cycle.pid, "train")
    wait_for_cpu(trainer.pid, seconds=10)
    reply = httpx.post(
        f"{env['REFLEXA_VLLM_URL']}/v1/chat/completions",
        json={"model": "smollm2-135m-instruct", "max_tokens": 8,
              "messages": [{"role": "user", "content": "Say OK."}]},
        timeout=60,
    )  # fmt: skip
    assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"]
    trainer.send_signal(signal.SIGKILL)
    out, _ = cycle.communicate(timeout=120)
    assert cycle.returncode == 1
    result = json.loads(out)
    assert result["status"] == "failed" and "killed by signal 9" in result["reason"]
    assert [s["stage"] for s in result["stages"]] == ["compile", "train"]
    assert result["stages"][1]["ok"] is False
    assert json.loads(run_reflexa("adapters", "list", "--json", env=env).stdout) == []
    with Store.open(load_settings_from(env).database) as store:
        assert store.cycles()[0]["status"] == "failed"


def gate_runs(env: dict[str, str]) -> list[dict]:
    """The gate's eval runs in the store: id, cycle, status, suite, adapter, memory, and
    how many items it has answered (an episode the kill cut short is an `interrupted`
    error, answered again when the run resumes)."""
    from sqlalchemy import text

    with Store.open(load_settings_from(env).database) as store, store.engine.connect() as c:
        rows = c.execute(text(
            "select r.id, json_extract(r.config, '$.cycle'), r.status, r.suite, "
            "coalesce(json_extract(r.config, '$.adapter'), ''), "
            "json_extract(r.config, '$.memory'), (select count(*) from episodes e "
            "where e.eval_run_id = r.id and e.status not in ('running', 'error')) "
            "from eval_runs r where json_extract(r.config, '$.cycle') is not null"
        ))  # fmt: skip
        keys = ("id", "cycle", "status", "suite", "adapter", "memory", "answered")
        return [dict(zip(keys, row, strict=True)) for row in rows]


@pytest.mark.timeout(1500)
def test_a_cycle_killed_in_its_gate_is_taken_up_without_training_again(
    vllm_session: Session, tmp_path: Path
) -> None:
    """The night a reboot cut short: `reflexa cycle` killed (SIGKILL, its whole process
    group) while its gate is under way. The next `reflexa cycle` goes on with the same
    cycle: it gates the adapter trained before the kill without training again, resumes the
    gate run that was cut short (its answers kept, no run or item twice) and decides."""
    env = home_env(vllm_session, tmp_path / "home", steps=4) | {
        "REFLEXA_CYCLE__GATE_DRAWS": "1",  # CI's 2 cores: the path, not the power
        "REFLEXA_CYCLE__FROZEN_DRAWS": "1",
        "REFLEXA_REFLECT__MAX_TOKENS": "64",
    }
    seed_failures(env, 16)
    cycle = subprocess.Popen(
        [sys.executable, "-m", "reflexa.agent", "cycle", "--json"], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 900
    while not any(r["answered"] >= 8 for r in gate_runs(env)):
        assert cycle.poll() is None, "the cycle ended before its gate was under way"
        assert time.monotonic() < deadline, "the gate never got going"
        time.sleep(1)
    os.killpg(cycle.pid, signal.SIGKILL)
    cycle.wait(timeout=30)
    [cut] = [r for r in gate_runs(env) if r["status"] == "running"]
    with Store.open(load_settings_from(env).database) as store:
        [killed] = store.cycles()
        [trained] = store.adapters()
    assert killed["status"] == "running" and [s["stage"] for s in killed["stages"]] == [
        "compile", "train"]  # fmt: skip

    done = run_reflexa("cycle", "--json", env=env, check=False, timeout=1400)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["cycle_id"] == killed["id"] and result["adapter"]["version"] == trained["version"]
    stages = [s["stage"] for s in result["stages"]]
    assert stages[:4] == ["compile", "train", "resume", "gate"], stages
    assert stages[4:] in (["promote"], ["reject"]) and result["decision"] in ("promote", "reject")
    listed = json.loads(run_reflexa("adapters", "list", "--json", env=env).stdout)
    assert [a["version"] for a in listed] == [trained["version"]]
    runs = gate_runs(env)
    assert all(r["cycle"] == killed["id"] and r["status"] == "done" for r in runs)
    assert cut["id"] in {r["id"] for r in runs}  # the run cut short went on, its answers kept
    sides = [(r["adapter"], r["suite"], r["memory"]) for r in runs]
    assert len(sides) == len(set(sides)) and {a for a, _, _ in sides} == {"", trained["name"]}
    with Store.open(load_settings_from(env).database) as store:
        for r in runs:
            items = [e["item_id"] for e in store.run_episodes(r["id"])]
            assert len(items) == len(set(items)) == r["answered"]
    client = ModelClient(env["REFLEXA_VLLM_URL"], "smollm2-135m-instruct")
    if trained["name"] in client.adapters():
        client.unload_adapter(trained["name"])


# Two rounds of two real trainings and gates, each gate over 123 frozen items and a dev
# sample: 722 s alone on the 2-core VM (2026-12-05), too close to the default 900 s.
@pytest.mark.timeout(1800)
def test_one_cycle_end_to_end(vllm_session: Session, tmp_path: Path) -> None:
    """The issue's check, scaled to CI: recorded failures → `reflexa cycle --rounds 2 --json`
    samples the model, trains one PEFT adapter per method (SFT with gold, SFT without), gates
    each on held-out arithmetic and the frozen suite, promotes the better or none; a second
    round, if the first promoted, learns without gold. The label-free SFT carries a learning
    rate of its own, which reaches its training child."""
    env = home_env(vllm_session, tmp_path / "home", steps=6) | {
        "REFLEXA_CYCLE__METHODS": '["sft", "sft-label-free@learning_rate=1e-4"]',
        "REFLEXA_CYCLE__SAMPLE_N": "2",
        "REFLEXA_CYCLE__SAMPLE_LIMIT": "12",
        "REFLEXA_CYCLE__SAMPLE_MAX_TOKENS": "32",
        # CI's 2 cores: one draw per gate item (the path, not the power), short answers.
        "REFLEXA_CYCLE__GATE_DRAWS": "1",
        "REFLEXA_CYCLE__FROZEN_DRAWS": "1",
        "REFLEXA_REFLECT__MAX_TOKENS": "64",
    }
    run_reflexa("eval", "run", "arithmetic", "--limit", "12", "--no-reflect", env=env)
    cycle = run_reflexa("cycle", "--rounds", "2", "--json", env=env, check=False, timeout=1700)
    assert cycle.returncode == 0, cycle.stderr[-2000:]
    doc = json.loads(cycle.stdout)
    first = doc["rounds"][0] if "rounds" in doc else doc
    assert first["round"] == 1 and first["gold"] is True
    assert first["decision"] in ("promote", "reject") and first["reason"]
    held = first["suites"]["arithmetic:dev"]  # a fresh dev sample, less what training saw
    futile = first["reason"].startswith("futile: on a random half of the dev items")
    assert (30 <= held["items"] <= 70) if futile else (90 <= held["items"] <= 100)
    assert 0 <= held["candidate"] <= 1 and 0 <= held["p_value"] <= 1 and held["answers"] == 2
    if futile or "capabilities: not measured, as the dev splits reject" in first["notes"]:
        assert set(first["suites"]) == {"arithmetic:dev"} and first["decision"] == "reject"
    else:  # the dev splits would promote: judged on the frozen suite too
        assert first["suites"]["capabilities"]["items"] == 123
    assert any(note.startswith("arithmetic: a fresh dev sample") for note in first["notes"])
    stages = [s["stage"] for s in first["stages"]]
    assert stages[:4] == ["sample", "compile sft", "train sft", "gate sft"]
    assert stages[4] == "compile sft-label-free@learning_rate=1e-4"
    assert stages[-1] in ("promote", "reject")
    sampled = first["stages"][0]
    assert sampled["prompts"] == 12 and sampled["consistency"] + sampled["checks"] <= 12
    assert 0 <= sampled["mixed"] <= sampled["consistency"] + sampled["checks"]  # one passed
    methods = first["methods"]
    assert methods["sft"]["decision"] in ("promote", "reject") and methods["sft"]["examples"] >= 8
    free = methods["sft-label-free@learning_rate=1e-4"]  # the model's own answers: often few
    assert "skipped" in free or free["decision"] in ("promote", "reject")
    folder = Path(first["adapter"]["path"])
    assert folder.parent == tmp_path / "home" / "adapters"
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {
        p.name for p in folder.iterdir()
    }
    listed = json.loads(run_reflexa("adapters", "list", "--json", env=env).stdout)
    round_one = [a for a in listed if a["metrics"]["cycle"]["round"] == 1]
    assert {a["metrics"]["cycle"]["method"]: a["metrics"]["cycle"]["gold"] for a in round_one} == {
        m: m == "sft" for m in methods if "skipped" not in methods[m]}  # fmt: skip
    rates = {a["metrics"]["cycle"]["method"]: a["metrics"]["train"]["config"]["learning_rate"]
             for a in round_one}  # fmt: skip
    assert rates.get("sft") == 2e-4 and rates.get("sft-label-free@learning_rate=1e-4", 1e-4) == 1e-4
    assert sum(a["status"] == "promoted" for a in listed) <= 1
    if first["status"] == "promoted":  # the chain went on, without gold
        assert doc["rounds"][1]["round"] == 2 and doc["rounds"][1]["gold"] is False
    else:
        assert "rounds" not in doc
    client = ModelClient(env["REFLEXA_VLLM_URL"], "smollm2-135m-instruct")
    for a in listed:
        if a["name"] in client.adapters():
            client.unload_adapter(a["name"])


def wait_for_child(pid: int, word: str, timeout: float = 120) -> psutil.Process:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in psutil.Process(pid).children(recursive=True):
            if word in " ".join(child.cmdline()):
                return child
        time.sleep(0.5)
    raise AssertionError(f"no child process running {word!r}")


def wait_for_cpu(pid: int, seconds: float, timeout: float = 180) -> None:
    process = psutil.Process(pid)
    deadline = time.monotonic() + timeout
    while sum(process.cpu_times()[:2]) < seconds:
        assert time.monotonic() < deadline, "the trainer never got going"
        time.sleep(0.5)


def test_dpo_trains_but_only_the_gate_may_promote_it(trained: dict, tmp_path: Path) -> None:
    env = trained["env"]
    examples = [
        Example(f"h{i}", f"What is {i} + 1? Reply with only the number.", str(i + 1), "gold",
                f"{i} + 1 = {i}")
        for i in range(10, 18)
    ]  # fmt: skip
    data = write_dataset(to_records(examples, "dpo"), tmp_path / "dpo", "dpo")
    sft_data = run_reflexa("train", "--method", "dpo", "--dataset", str(trained["home"] / "data"),
                           env=env, check=False)  # fmt: skip
    assert sft_data.returncode == 1 and "holds sft data" in sft_data.stderr
    row = json.loads(run_reflexa("train", "--method", "dpo", "--dataset", str(data),
                                 "--max-steps", "1", "--json", env=env).stdout)  # fmt: skip
    assert row["method"] == "dpo" and row["metrics"]["train"]["loss"]
    refused = run_reflexa("adapters", "promote", row["version"], env=env, check=False)
    assert refused.returncode == 1 and "only the gate may promote DPO" in refused.stderr


def test_kto_learns_from_thumbs_and_only_the_gate_may_promote_it(
    trained: dict, tmp_path: Path
) -> None:
    """People's thumbs (desirable or not), one real KTO step (TRL's KTOTrainer, its KL term
    over the batch) on the bundled model."""
    rows = [{"prompt": [{"role": "user", "content": f"What is {i} + 1?"}],
             "completion": [{"role": "assistant", "content": str(i + 1 if i % 2 else i)}],
             "label": bool(i % 2), "source": "rating", "justification": "user",
             "prompt_hash": f"k{i}", "episode_ids": []} for i in range(10, 18)]  # fmt: skip
    data = write_dataset(rows, tmp_path / "kto", "kto")
    args = ("train", "--method", "kto", "--dataset", str(data), "--max-steps", "1", "--json")
    row = json.loads(run_reflexa(*args, env=trained["env"]).stdout)
    assert row["method"] == "kto" and row["metrics"]["train"]["loss"]
    refused = run_reflexa("adapters", "promote", row["version"], env=trained["env"], check=False)
    assert refused.returncode == 1 and "only the gate may promote KTO" in refused.stderr


def test_grpo_two_real_steps_rewarded_by_the_verifiers(
    trained: dict, vllm_session: Session, tmp_path: Path
) -> None:
    """`reflexa train --method grpo`, continuing an SFT adapter: 4 completions per prompt
    sampled on the CPU, rewarded by the strict number check (no label; some samples chatter,
    so a group's rewards differ and there is something to learn), 2 optimizer steps."""
    from reflexa.evals.contamination import prompt_hash

    env = trained["env"]
    rows = [
        {"prompt": [{"role": "user", "content": f"Pick a number from 1 to {i}. Reply with only "
                                                "the number."}],
         "checks": '[{"type": "numeric", "strict": true}]', "scoring": "[]", "source": "prompt",
         "justification": "checks", "prompt_hash": prompt_hash(str(i)), "episode_ids": []}
        for i in range(10, 18)
    ]  # fmt: skip
    data = write_dataset(rows, tmp_path / "grpo", "grpo")
    alone = home_env(vllm_session, tmp_path / "alone")  # no adapter yet: a new LoRA
    fresh = json.loads(run_reflexa("train", "--method", "grpo", "--dataset", str(data),
                                   "--max-steps", "1", "--json", env=alone).stdout)  # fmt: skip
    assert fresh["metrics"]["train"]["continued_from"] is None
    parent = trained["rows"][0]
    row = json.loads(run_reflexa("train", "--method", "grpo", "--dataset", str(data),
                                 "--max-steps", "2", "--parent", parent["version"], "--json",
                                 env=env).stdout)  # fmt: skip
    train = row["metrics"]["train"]
    assert row["method"] == "grpo" and [p["step"] for p in train["loss"]] == [1, 2]
    assert all(0.0 <= p["reward"] <= 1.0 for p in train["loss"])  # the verifiers' mean reward
    assert train["continued_from"] == parent["path"]  # on-policy: the parent's LoRA goes on
    before = load_file(str(Path(parent["path"]) / "adapter_model.safetensors"))
    after = load_file(str(Path(row["path"]) / "adapter_model.safetensors"))
    assert before.keys() == after.keys()
    assert any(abs(after[k] - before[k]).max() > 0 for k in after if "lora_" in k)
    refused = run_reflexa("adapters", "promote", row["version"], env=env, check=False)
    assert refused.returncode == 1 and "only the gate may promote GRPO" in refused.stderr


def test_sft_can_go_on_from_its_parent_as_a_later_round_does(trained: dict, tmp_path: Path) -> None:
    """What a chain's round after the gold ones runs: the training child continuing the
    parent's LoRA (2 real SFT steps), not a new one on the base model; the child builds the
    folder, knowing no store, and the cycle registers it."""
    env, parent = trained["env"], trained["rows"][0]
    workspace_file = tmp_path / "workspace.json"
    workspace_file.write_text(load_settings_from(env).workspace().to_json())
    child = subprocess.run(
        [sys.executable, "-m", "reflexa.trainers.train", "--workspace", str(workspace_file),
         "--dataset", str(trained["home"] / "data"), "--start", parent["path"],
         "--parent", parent["version"]],
        capture_output=True, text=True, env=env, check=False, timeout=600,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr[-2000:]
    built = json.loads(child.stdout)
    assert built["metadata"]["continued_from"] == parent["path"]
    assert Path(built["path"]).name.startswith(".partial-")  # not registered by the child
    before = load_file(str(Path(parent["path"]) / "adapter_model.safetensors"))
    after = load_file(str(Path(built["path"]) / "adapter_model.safetensors"))
    assert before.keys() == after.keys()
    assert any(abs(after[k] - before[k]).max() > 0 for k in after if "lora_" in k)


def test_a_blend_is_the_weighted_sum_of_the_updates_at_their_rank_and_the_server_loads_it(
    trained: dict,
) -> None:
    """What a night gates when its candidate only forgot (trainers/blend.py, PEFT in a child
    process): half of one adapter's weight update plus half of the other's, registered with
    the other as its parent, at their rank; every module's update is that sum (to within
    what the SVD cuts), and the real server loads it and answers. Blended with the base
    model, it is half the update exactly."""
    from reflexa.trainers.blend import blend_adapter
    from reflexa.trainers.registry import load

    settings = load_settings_from(trained["env"])
    ws = settings.workspace()
    with Store.open(settings.database) as store:
        current, candidate = (store.adapter(r["version"]) for r in trained["rows"])
        assert current and candidate
        both = blend_adapter(ws, store, candidate, current, 0.5)
        alone = blend_adapter(ws, store, candidate, None, 0.5)
        assert both["parent"] == current["version"] and alone["parent"] is None
        assert store.adapter(both["version"])["metrics"]["blend"] == {  # type: ignore[index]
            "of": candidate["version"], "weight": 0.5, "with": current["version"]}  # fmt: skip

    def updates(row: dict) -> dict:
        path = Path(row["path"])
        config = json.loads((path / "adapter_config.json").read_text())
        weights = load_file(str(path / "adapter_model.safetensors"))
        assert config["r"] == 16
        scale = config["lora_alpha"] / config["r"]
        return {k: scale * weights[k.replace("lora_A", "lora_B")] @ weights[k]
                for k in weights if "lora_A" in k}  # fmt: skip

    a, b, ab, b_alone = map(updates, (current, candidate, both, alone))
    assert a.keys() == b.keys() == ab.keys() == b_alone.keys()
    for k in a:
        want = 0.5 * a[k] + 0.5 * b[k]
        assert np.linalg.norm(ab[k] - want) <= 0.05 * np.linalg.norm(want), k  # the SVD's cut
        assert np.linalg.norm(b_alone[k] - 0.5 * b[k]) <= 1e-4 * np.linalg.norm(b[k]), k
    client = ModelClient(trained["env"]["REFLEXA_VLLM_URL"], "smollm2-135m-instruct")
    name = load(ws, client, both)
    try:
        chat = client.chat_model(name, temperature=0, max_tokens=8)
        assert chat.invoke("What is 2 + 3? Reply with only the number.").content
    finally:
        client.unload_adapter(name)


def test_rehearsal_rows_are_the_served_model_s_own_greedy_answers(
    server: ModelClient, tmp_path: Path
) -> None:
    """Real vLLM, real SQLite: chat turns in the store are asked afresh of the model the
    server serves, greedily; each kept row is its answer word for word (a second greedy
    request gives the same), and it reaches a real SFT dataset beside the night's rows."""
    from datasets import load_from_disk

    from reflexa.agent.store.db import sqlite_url
    from reflexa.evals.contamination import Guard
    from reflexa.trainers.dataset import build_dataset
    from reflexa.trainers.rehearsal import rehearsal_prompts, rehearse
    from tests.unit.test_dataset import attempt, episode
    from tests.unit.test_rehearsal import chat

    chats = ["Name one colour of the rainbow.", "Say hello to a new colleague in one line."]
    with Store.open(sqlite_url(tmp_path / "db.sqlite")) as store:
        for prompt in chats:
            chat(store, prompt)
        for n in range(4):
            episode(store, f"What is 40 + {n}?", [attempt(str(40 + n), True)], scoring=[])
        ws = load_settings().workspace()
        kept, counts = asyncio.run(
            rehearse(ws, server, None, rehearsal_prompts(store, Guard(), 10))
        )
        assert counts["prompts"] == 2 and counts["kept"] + counts["cut_off"] == 2, counts
        for row in kept:
            again = httpx.post(f"{server.url}/v1/chat/completions", timeout=120, json={
                "model": server.model, "temperature": 0, "max_tokens": 256,
                "messages": [{"role": "user", "content": row.prompt}]}).json()  # fmt: skip
            assert row.chosen == again["choices"][0]["message"]["content"].strip()
        out = tmp_path / "sft"
        compiled, rows = build_dataset(store, out, "sft", allow_gold=False, protected=Guard(),
                                       rehearsal=kept, rehearsal_share=0.5)  # fmt: skip
    assert rows == 4 + len(kept) and compiled.summary(rows)["rehearsal"] == len(kept)
    answers = {r["messages"][-1]["content"] for r in load_from_disk(str(out))}
    assert {row.chosen for row in kept} <= answers
