"""Wiring the reflection graph:

recall → generate → evaluate ─pass / repairs done / verifiers broken→ finish
              └fail→ diagnose ─budget spent→ finish
                        └→ repair → evaluate …
"""

from __future__ import annotations

from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from reflexa.graphs.nodes import (
    after_diagnose,
    after_evaluate,
    diagnose,
    evaluate,
    finish,
    generate,
    recall,
    repair,
)
from reflexa.graphs.state import ReflectionContext, ReflectionState
from reflexa.graphs.tracing import traced


def build_reflection_graph(
    checkpointer: BaseCheckpointSaver[Any] | None = None,
) -> CompiledStateGraph[ReflectionState, ReflectionContext, ReflectionState, ReflectionState]:
    graph = StateGraph(ReflectionState, context_schema=ReflectionContext)
    for name, node in (("recall", recall), ("generate", generate), ("evaluate", evaluate),
                       ("diagnose", diagnose), ("repair", repair), ("finish", finish)):  # fmt: skip
        graph.add_node(name, traced(name, node))
    graph.add_edge(START, "recall")
    graph.add_edge("recall", "generate")
    graph.add_edge("generate", "evaluate")
    graph.add_conditional_edges("evaluate", after_evaluate, ["diagnose", "finish"])
    graph.add_conditional_edges("diagnose", after_diagnose, ["repair", "finish"])
    graph.add_edge("repair", "evaluate")
    graph.add_edge("finish", END)
    return graph.compile(checkpointer=checkpointer)
