"""The Comp-LLM graph. This module only wires; each node family lives in its own module.

START -> plan -> route -> [review] -+-> execute -------------------------+-> aggregate -> END
                                    \\-> schedule <-> wave_expert --------/

- `review` runs only with `Context.review_plan`: it interrupts for a person's decision on the
  plan, and a cancelled plan ends the run there.
- `execute` is the dataflow executor (one task per sub-query, started when its own parents
  are done); `schedule`/`wave_expert` the waves one (a `Send` per ready sub-query).
"""

from __future__ import annotations

from typing import Any, Literal

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import RetryPolicy

from compllm.aggregator import make_aggregate_node
from compllm.dataflow import make_execute_node
from compllm.executor import DEFAULT_EXPERT_RETRY
from compllm.models import ModelProvider
from compllm.planner import make_plan_node
from compllm.pool import ExpertPool
from compllm.registry import Registry
from compllm.review import make_review_node
from compllm.router import make_route_node
from compllm.services import Services
from compllm.state import Context, InputState, State
from compllm.waves import make_dispatch, make_expert_failed_node, make_wave_expert_node, schedule

__all__ = ["build_graph", "graph"]

_RUN_THREADS = 64


def _after_route(
    state: State, runtime: Runtime[Context]
) -> Literal["review", "execute", "schedule"]:
    context = runtime.context or Context()
    if context.review_plan:
        return "review"
    return "schedule" if context.executor == "waves" else "execute"


def build_graph(
    *,
    provider: ModelProvider | None = None,
    registry: Registry | None = None,
    pool: ExpertPool | None = None,
    retry_policy: RetryPolicy | None = None,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
    name: str = "compllm",
) -> CompiledStateGraph[State, Context, InputState, State]:
    """Compile the Comp-LLM graph.

    provider: where models come from (default: the process-wide `ModelHub`, lazy and cached).
    registry: experts to use instead of `Context.registry_path` (default: the built-in ones).
    pool: runs the model calls within a memory budget, batched (default: one per provider;
        the process-wide hub's pool reads `$COMPLLM_MEMORY_BUDGET`).
    retry_policy: for each expert call (default: 2 attempts, not on configuration errors).
    """
    services = Services(provider, registry, pool)
    retry = retry_policy or DEFAULT_EXPERT_RETRY
    services.expert_attempts = retry.max_attempts
    builder = StateGraph(State, context_schema=Context, input_schema=InputState)
    builder.add_node("plan", make_plan_node(services))
    builder.add_node("route", make_route_node(services))
    builder.add_node(
        "review", make_review_node(services), destinations=("execute", "schedule", END)
    )
    builder.add_node("execute", make_execute_node(services, retry))
    builder.add_node("schedule", schedule)
    builder.add_node(
        "wave_expert",  # not "expert": LangGraph would apply its error handler to the tasks
        make_wave_expert_node(services),
        retry_policy=retry,
        error_handler=make_expert_failed_node(),
    )
    builder.add_node("aggregate", make_aggregate_node(services))
    builder.add_edge(START, "plan")
    builder.add_edge("plan", "route")
    builder.add_conditional_edges("route", _after_route, ["review", "execute", "schedule"])
    builder.add_edge("execute", "aggregate")
    builder.add_conditional_edges("schedule", make_dispatch(services), ["wave_expert", "aggregate"])
    builder.add_edge("wave_expert", "schedule")
    builder.add_edge("aggregate", END)
    compiled = builder.compile(checkpointer=checkpointer, name=name)
    # `max_concurrency` sizes the thread pool of a sync run, which also runs the dataflow
    # executor's tasks; the default (CPUs + 4) would cap parallel experts on small machines.
    # The resource bounds are `Context.max_parallel_experts` and the pool, not this.
    return compiled.with_config(max_concurrency=_RUN_THREADS)


# Compiling loads no model: models load on first use, inside the nodes.
graph = build_graph()
