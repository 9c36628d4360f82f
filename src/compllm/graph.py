"""The Comp-LLM graph. This module only wires; each node family lives in its own module.

START -> plan -> route -> schedule -(Send per ready sub-query)-> expert -> schedule
                                   \\-(nothing left)-> aggregate -> END
"""

from __future__ import annotations

from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import RetryPolicy

from compllm.aggregator import make_aggregate_node
from compllm.executor import (
    DEFAULT_EXPERT_RETRY,
    dispatch,
    make_expert_failed_node,
    make_expert_node,
    schedule,
)
from compllm.models import ModelProvider
from compllm.planner import make_plan_node
from compllm.registry import Registry
from compllm.router import make_route_node
from compllm.services import Services
from compllm.state import Context, InputState, State

__all__ = ["build_graph", "graph"]

_RUN_THREADS = 64


def build_graph(
    *,
    provider: ModelProvider | None = None,
    registry: Registry | None = None,
    retry_policy: RetryPolicy | None = None,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
    name: str = "compllm",
) -> CompiledStateGraph[State, Context, InputState, State]:
    """Compile the Comp-LLM graph.

    provider: where models come from (default: the process-wide `ModelHub`, lazy and cached).
    registry: experts to use instead of `Context.registry_path` (default: the built-in ones).
    retry_policy: for each expert call (default: 2 attempts, not on configuration errors).
    """
    services = Services(provider, registry)
    builder = StateGraph(State, context_schema=Context, input_schema=InputState)
    builder.add_node("plan", make_plan_node(services))
    builder.add_node("route", make_route_node(services))
    builder.add_node("schedule", schedule)
    builder.add_node(
        "expert",
        make_expert_node(services),
        retry_policy=retry_policy or DEFAULT_EXPERT_RETRY,
        error_handler=make_expert_failed_node(services),
    )
    builder.add_node("aggregate", make_aggregate_node(services))
    builder.add_edge(START, "plan")
    builder.add_edge("plan", "route")
    builder.add_edge("route", "schedule")
    builder.add_conditional_edges("schedule", dispatch, ["expert", "aggregate"])
    builder.add_edge("expert", "schedule")
    builder.add_edge("aggregate", END)
    compiled = builder.compile(checkpointer=checkpointer, name=name)
    # `max_concurrency` sizes the thread pool of a sync run; the default (CPUs + 4) would
    # cap parallel experts on small machines. The resource bound is
    # `Context.max_parallel_experts`, not this.
    return compiled.with_config(max_concurrency=_RUN_THREADS)


# Compiling loads no model: models load on first use, inside the nodes.
graph = build_graph()
