"""The LangGraph reflection loop: generate → evaluate → diagnose → repair."""

from graphs.builder import build_reflection_graph
from graphs.state import Attempt, ReflectionContext, ReflectionState, turn_input

__all__ = [
    "Attempt",
    "ReflectionContext",
    "ReflectionState",
    "build_reflection_graph",
    "turn_input",
]
