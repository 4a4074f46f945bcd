"""A check plugin installed as a package (an entry point in `reflexa.checks`), used as a user
would: named in their suite, run through `reflexa eval run` on the real vLLM server, steering
the loop's repair routing, scoring a cycle's GRPO reward, and justifying dataset rows."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from reflexa.evals.plugins import registered, resolve
from reflexa.trainers.rewards import verifier_reward
from tests.integration.conftest import Session, run_reflexa

pytestmark = pytest.mark.integration

PLUGIN = '''
import re

from reflexa.evals import check


@check(decides="value")
def even_above(answer, ctx, *, above):
    """The first whole number in the answer is even and greater than `above`."""
    found = re.search(r"-?[0-9]+", answer)
    if found is None:
        return False, "Give a whole number."
    n = int(found.group())
    return n % 2 == 0 and n > above, f"Give an even number greater than {above}."
'''


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    root = tmp_path_factory.mktemp("plugin")
    (root / "reflexa_test_plugin.py").write_text(PLUGIN)
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "reflexa-test-plugin"\nversion = "0.1"\n'
        '[tool.setuptools]\npy-modules = ["reflexa_test_plugin"]\n'
        '[project.entry-points."reflexa.checks"]\neven_above = "reflexa_test_plugin:even_above"\n'
    )
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--no-deps", "--no-build-isolation", "--no-index", str(root)],
                   check=True)  # fmt: skip
    resolve.cache_clear()
    yield
    subprocess.run([*pip, "uninstall", "-y", "reflexa-test-plugin"], check=True)
    resolve.cache_clear()


def test_an_installed_plugin_runs_through_eval_routing_reward_and_dataset(
    installed: None, vllm_session: Session, tmp_path: Path
) -> None:
    assert registered()["even_above"] == "reflexa_test_plugin:even_above"
    suite = tmp_path / "evens.jsonl"
    items = [{"id": f"easy-{i}", "split": "train", "prompt": f"Write the number {2 * i + 4}.",
              "checks": [{"type": "even_above", "above": 0}]} for i in range(6)]  # fmt: skip
    items += [{"id": f"hard-{i}", "split": "train", "prompt": "Write an even number.",
               "checks": [{"type": "even_above", "above": 10**9}]} for i in range(3)]  # fmt: skip
    suite.write_text("".join(json.dumps(item) + "\n" for item in items))
    home = tmp_path / "home"  # a store of its own, on the session's server
    url = f"http://127.0.0.1:{vllm_session.port}"
    env = vllm_session.env | {"REFLEXA_HOME": str(home), "REFLEXA_VLLM_URL": url}
    args = ("eval", "run", str(suite), "--max-repairs", "1", "--no-memory", "--json")
    run = json.loads(run_reflexa(*args, env=env).stdout)
    assert run["metrics"]["overall"]["errors"] == 0

    with sqlite3.connect(home / "reflexa.db") as db:
        rows = db.execute(
            "select e.item_id, a.verdicts, a.diagnosis from episodes e join attempts a "
            'on a.episode_id = e.id where a."index" = 0'
        ).fetchall()
    verdicts = {item: json.loads(v) for item, v, _ in rows}
    assert all(vs and vs[0]["verifier"] == "even_above" and vs[0]["error"] is None
               for vs in verdicts.values())  # fmt: skip
    hard = [json.loads(d) for item, _, d in rows if item.startswith("hard")]
    assert len(hard) == 3 and all(not verdicts[f"hard-{i}"][0]["passed"] for i in range(3))
    # the plugin decides the value: the router samples candidates for it to choose among
    assert all(d["strategy"] == "sample" and "even_above can check each" in d["why"] for d in hard)

    reward = verifier_reward()
    prompt = [[{"role": "user", "content": "Write an even number."}]] * 2
    spec = json.dumps([{"type": "even_above", "above": 10}])
    got = asyncio.run(reward(prompt, [[{"role": "assistant", "content": "12"}],
                                      [{"role": "assistant", "content": "13"}]],
                             checks=[spec, spec], scoring=["[]", "[]"]))  # fmt: skip
    assert got[0] > got[1] == 0.0

    passed = [i for i, vs in verdicts.items() if vs[0]["passed"]]
    out = tmp_path / "dataset"
    export = ("failures", "export", "--format", "sft", "--out", str(out), "--json")
    exported = json.loads(run_reflexa(*export, env=env).stdout)
    # what the plugin passed is a row justified by the checks (it decides values)
    assert passed and exported["precision"]["checks"]["examples"] == len(passed), (passed, exported)
