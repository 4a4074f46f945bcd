"""The inspect_ai side of `bench/inspect_bench.py`: the same items, prompt and limits.

Runs in the bench environment (`.venv-bench`, inspect-ai pinned there), not Reflexa's. Reads
the items that inspect_bench.py wrote to $REFLEXA_BENCH_ITEMS.
"""

import json
import os

from inspect_ai import Task, task
from inspect_ai.dataset import Sample
from inspect_ai.scorer import match
from inspect_ai.solver import generate, system_message


@task
def arithmetic_heldout() -> Task:
    with open(os.environ["REFLEXA_BENCH_ITEMS"]) as f:
        spec = json.load(f)
    samples = [Sample(id=i["id"], input=i["prompt"], target=i["target"]) for i in spec["items"]]
    return Task(
        dataset=samples,
        solver=[system_message(spec["system"]), generate()],
        scorer=match(numeric=True),
    )
