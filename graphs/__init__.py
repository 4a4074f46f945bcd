"""The LangGraph reflection loop: recall → generate → evaluate → diagnose → repair."""

from reflexa.graphs.builder import build_reflection_graph
from reflexa.graphs.state import (
    Attempt,
    Recall,
    RecallFn,
    ReflectionContext,
    ReflectionState,
    turn_input,
)

__all__ = [
    "Attempt",
    "Recall",
    "RecallFn",
    "ReflectionContext",
    "ReflectionState",
    "build_reflection_graph",
    "turn_input",
]
