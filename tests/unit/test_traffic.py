"""`reflexa traffic import`: OpenAI chat-format logs as episodes the nightly job learns from,
or as a suite; a bad line imports nothing. Real SQLite, the real command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from reflexa.agent.cli import cli
from reflexa.agent.settings import load_settings
from reflexa.agent.store import Store
from reflexa.evals.contamination import Guard
from reflexa.evals.suite import load_suite
from reflexa.trainers.sampling import sampling_targets

NUMBER = '{"type": "numeric", "strict": true}'
ASK = "What is 12 + 30? Reply with only the number."
LINES: list[Any] = [
    {"messages": [{"role": "user", "content": ASK}], "response": "42",
     "metadata": {"id": "a", "team": "x"}},
    {"request": {"model": "m", "messages": [{"role": "system", "content": "Be brief."},
                                            {"role": "user", "content": "What is 7 + 8?"}]},
     "response": {"choices": [{"message": {"role": "assistant", "content": "16"}}]},
     "metadata": {"id": "b", "team": "y"}},
    {"messages": [{"role": "user", "content": [{"type": "text", "text": "What is 2 + 2?"}]},
                  {"role": "assistant", "content": "4"}]},
    {"body": {"messages": [{"role": "user", "content": "What is 3 + 3?"}]},
     "response": {"body": {"choices": [{"message": {"content": "six"}}]}}},
]  # fmt: skip


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def log(tmp_path: Path, lines: list[Any]) -> Path:
    path = tmp_path / "traffic.jsonl"
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def episodes(home: Path) -> list[dict[str, Any]]:
    with Store.open(load_settings().database) as store:
        return [store.episode(e.id) for e in store.training_episodes("train")]  # type: ignore[misc]


def test_each_shape_is_recorded_judged_by_the_checks_and_becomes_something_to_learn(
    clean_env: Path, tmp_path: Path
) -> None:
    code, out, _ = invoke("traffic", "import", str(log(tmp_path, LINES)), "--check", NUMBER,
                          "--json")  # fmt: skip
    assert code == 0, out
    assert json.loads(out) == {"episodes": 4, "passed": 2, "unresolved": 2, "unchecked": 0}
    recorded = {e["prompt"]: e for e in episodes(clean_env)}
    assert {p: (e["status"], e["answer"]) for p, e in recorded.items()} == {
        ASK: ("passed", "42"), "What is 7 + 8?": ("unresolved", "16"),
        "What is 2 + 2?": ("passed", "4"), "What is 3 + 3?": ("unresolved", "six"),
    }  # fmt: skip
    wrong = recorded["What is 7 + 8?"]
    assert wrong["messages"][0] == {"role": "system", "content": "Be brief."}
    verdicts = {v["verifier"]: v["passed"] for v in wrong["attempts"][0]["verdicts"]}
    assert verdicts == {"numeric": True, "arithmetic": False}  # the tool says 16 is wrong
    with Store.open(load_settings().database) as store:
        targets = sampling_targets(store, Guard(), limit=10)
    assert targets[0].prompt in ("What is 7 + 8?", "What is 3 + 3?")  # failures sampled first

    out_dir = tmp_path / "rows"
    code, out, _ = invoke("failures", "export", "--format", "sft", "--out", str(out_dir), "--json")
    assert code == 0 and json.loads(out)["precision"]["checks"]["examples"] == 2  # 42 and 4


def test_a_bad_line_imports_nothing_and_names_its_line(clean_env: Path, tmp_path: Path) -> None:
    bad = [LINES[0], LINES[1], {"messages": [{"role": "robot", "content": "hi"}]}, LINES[2]]
    code, _, err = invoke("traffic", "import", str(log(tmp_path, bad)), "--check", NUMBER)
    assert code == 1 and "traffic.jsonl:3: messages.0: a message is" in err
    assert "nothing was imported" in err and "Traceback" not in err
    for line, message in [("{not json", "traffic.jsonl:1: not JSON"),
                          ('{"messages": []}', "traffic.jsonl:1: no `messages` list"),
                          ('[1, 2]', "traffic.jsonl:1: a line is a JSON object")]:  # fmt: skip
        code, _, err = invoke("traffic", "import", str(log(tmp_path, [line])))
        assert code == 1 and message in err, err
    code, _, err = invoke("traffic", "import", str(log(tmp_path, [LINES[0], {"messages": [
        {"role": "user", "content": "no answer here"}]}])))  # fmt: skip
    assert code == 1 and "line 2 has no answer" in err
    assert not (clean_env / "reflexa.db").exists() or episodes(clean_env) == []


def test_without_checks_nothing_can_learn_and_the_import_says_so(
    clean_env: Path, tmp_path: Path
) -> None:
    text = {"messages": [{"role": "user", "content": "Tell me a story."}], "response": "Once."}
    code, _, err = invoke("traffic", "import", str(log(tmp_path, [text])))
    assert code == 0 and "1 had no check that applies, so nothing can learn" in err


def test_a_chosen_set_becomes_a_suite_that_runs(clean_env: Path, tmp_path: Path) -> None:
    out = tmp_path / "mine.jsonl"
    args = ("--suite", str(out), "--where", "team=y", "--check", NUMBER, "--split", "dev")
    code, stdout, _ = invoke("traffic", "import", str(log(tmp_path, LINES)), *args, "--json")
    assert code == 0 and json.loads(stdout)["items"] == 1
    [item] = load_suite(out).items
    assert (item.id, item.split, item.user_prompt) == ("b", "dev", "What is 7 + 8?")
    assert item.history == [{"role": "system", "content": "Be brief."}]
    assert item.check_specs() == [{"type": "numeric", "strict": True, "tolerance": 0.0}]
    code, _, err = invoke("traffic", "import", str(log(tmp_path, LINES)), "--suite", str(out))
    assert code == 1 and "exists" in err
    code, _, err = invoke("traffic", "import", str(log(tmp_path, LINES)), "--where", "team")
    assert code == 1 and "give KEY=VALUE" in err
