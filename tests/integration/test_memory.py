"""Correction memory end to end: recalled corrections reach the real vLLM server as worked
examples, are named in the trace, and `--no-memory` turns them off."""

from __future__ import annotations

import json
import sqlite3

import pytest

from reflexa.agent.model.client import ModelClient
from reflexa.agent.settings import load_settings
from reflexa.agent.store import Store, prompt_hash
from reflexa.evals.builtin import BUILTIN
from reflexa.evals.verify import gold_answer
from tests.integration.conftest import Session

pytestmark = pytest.mark.integration


def test_memory_on_and_off_through_ask_and_eval_run(
    vllm_session: Session, server: ModelClient
) -> None:
    suite = BUILTIN["json-extract"]()
    train = [i for i in suite.items if i.split == "train"]
    train_hashes = {prompt_hash(i.user_prompt) for i in train}
    with Store.open(load_settings().database) as store:
        for item in train[:12]:  # as a user's /bad correction in chat would store them
            gold = gold_answer(item.scoring_specs())
            store.add_correction(None, prompt=item.user_prompt, rejected="?", source="user",
                                 chosen=gold, verified=True)  # fmt: skip
        # (other tests of this session may have left json-extract training memories too)
        ids = {m["id"] for m in store.memories() if m["prompt_hash"] in train_hashes}
    assert len(ids) >= 12

    prompt = "Return a JSON object with keys name and age for: Meet Ada Hopper, 52, from Lima."
    check = json.dumps({"type": "json", "expected": {"name": "Ada Hopper", "age": 52}})
    on = json.loads(vllm_session.run("ask", prompt, "--check", check, "--json").stdout)
    off = json.loads(
        vllm_session.run("ask", prompt, "--check", check, "--no-memory", "--json").stdout
    )
    used = on["attempts"][0]["memory"]["used"]
    assert 1 <= len(used) <= 3 and {u["id"] for u in used} <= ids
    assert off["attempts"][0]["memory"]["used"] == []
    assert off["attempts"][0]["memory"]["note"] == "memory off"
    # The examples really went to the server: its own count of prompt tokens grew by them.
    extra = on["attempts"][0]["prompt_tokens"] - off["attempts"][0]["prompt_tokens"]
    assert extra >= sum(u["tokens"] for u in used) - 8 * len(used) > 0

    runs = {}
    for label, flags in (("off", ["--no-memory"]), ("on", [])):
        args = ["--split", "test", "--limit", "6", "--no-reflect", *flags, "--json"]
        doc = json.loads(vllm_session.run("eval", "run", "json-extract", *args).stdout)
        runs[label] = doc["run_id"]
    with sqlite3.connect(vllm_session.home / "reflexa.db") as db:
        rows = db.execute(
            "select e.eval_run_id, a.memory from attempts a join episodes e on e.id = a.episode_id"
            " where e.eval_run_id in (?, ?)", (runs["off"], runs["on"]),
        ).fetchall()  # fmt: skip
        recalled = db.execute("select id, prompt_hash from memories").fetchall()
    assert len(rows) == 12
    by_id = dict(recalled)
    for run_id, memory in rows:
        used = json.loads(memory)["used"]
        if run_id == runs["off"]:
            assert used == []
        else:  # every held-out item recalled training corrections, never a held-out item
            assert used and all(by_id[u["id"]] in train_hashes for u in used)
    compared = json.loads(vllm_session.run("eval", "compare", runs["off"], runs["on"],
                                           "--json").stdout)  # fmt: skip
    assert compared["items"] == 6
