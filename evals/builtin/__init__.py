"""The built-in suites, by name."""

from collections.abc import Callable

from evals.builtin.arithmetic import arithmetic, sums
from evals.builtin.capabilities import capabilities
from evals.builtin.humaneval import humaneval
from evals.builtin.json_extract import json_extract
from evals.suite import Suite

BUILTIN: dict[str, Callable[[], Suite]] = {
    "arithmetic": arithmetic,
    "sums": sums,
    "json-extract": json_extract,
    "humaneval": humaneval,
    "capabilities": capabilities,
}
