"""The Comp-LLM graph. This module only wires; node factories live in `compllm.nodes`.

START -> plan -> route -> [review] -+-> execute -------------------------+-> aggregate -> END
                                    \\-> schedule <-> wave_expert --------/

- `review` runs only with `Context.review_plan`: it interrupts for a person's decision on the
  plan, and a cancelled plan ends the run there.
- `execute` is the dataflow executor (one task per sub-query, started when its own parents
  are done); `schedule`/`wave_expert` the waves one (a `Send` per ready sub-query).

`create_compllm(...)` returns the uncompiled `StateGraph` (add nodes, compile it your way);
`build_graph(...)` compiles it. Either takes experts, planner, router and aggregator as
LangChain/LangGraph objects or references.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import RetryPolicy

from compllm.experts import DEFAULT_EXPERT_RETRY
from compllm.models import ModelProvider
from compllm.nodes import (
    make_aggregate_node,
    make_dispatch,
    make_execute_node,
    make_review_node,
    make_route_node,
    make_wave_expert_node,
    schedule,
)
from compllm.nodes.plan import make_plan_node
from compllm.pool import ExpertPool
from compllm.registry import Expert, Registry
from compllm.services import Services
from compllm.state import Context, InputState, State, run_context

__all__ = ["build_graph", "create_compllm", "graph", "make_registry"]

_RUN_THREADS = 64


def _after_route(
    state: State, runtime: Runtime[Context]
) -> Literal["review", "execute", "schedule"]:
    context = run_context(runtime.context)
    if context.review_plan:
        return "review"
    return "schedule" if context.executor == "waves" else "execute"


def make_registry(
    experts: Registry | Sequence[Expert] | None, generalist: str | None = None
) -> Registry | None:
    """A registry from a list of experts (the generalist defaults to the last one)."""
    if experts is None or isinstance(experts, Registry):
        if generalist is not None and isinstance(experts, Registry):
            return experts.model_copy(update={"generalist": generalist})
        return experts
    experts = list(experts)
    if not experts:
        raise ValueError("give at least one expert")
    return Registry(generalist=generalist or experts[-1].name, experts=tuple(experts))


def create_compllm(
    *,
    experts: Registry | Sequence[Expert] | None = None,
    generalist: str | None = None,
    planner: Any = None,
    router: Any = None,
    aggregator: Any = None,
    provider: ModelProvider | None = None,
    pool: ExpertPool | None = None,
    retry_policy: RetryPolicy | None = None,
) -> StateGraph[State, Context, InputState, State]:
    """The uncompiled Comp-LLM graph (like langgraph-supervisor's `create_supervisor`).

    experts: a `Registry` or a list of `Expert` (default: `Context.registry_path`, else the
        built-in experts); `generalist` names the one that takes unmatched sub-queries.
    planner / aggregator: a reference string, a chat model, a Runnable or a function
        (default: `Context.planner_model` / `Context.aggregator_model`).
    router: an `ExpertRouter` (or any object with its `route` method and `registry`).
    provider / pool: where reference-string models come from and the pool that runs them.
    retry_policy: for each expert call (default: 2 attempts, not on configuration errors).
    """
    retry = retry_policy or DEFAULT_EXPERT_RETRY
    services = Services(
        provider if pool is None else None,
        make_registry(experts, generalist),
        pool,
        expert_attempts=retry.max_attempts,
        planner=planner,
        aggregator=aggregator,
        router=router,
    )
    builder = StateGraph(State, context_schema=Context, input_schema=InputState)
    builder.add_node("plan", make_plan_node(services, retry))
    builder.add_node("route", make_route_node(services))
    builder.add_node(
        "review", make_review_node(services), destinations=("execute", "schedule", END)
    )
    builder.add_node("execute", make_execute_node(services, retry))
    builder.add_node("schedule", schedule)
    builder.add_node("wave_expert", make_wave_expert_node(services), retry_policy=retry)
    builder.add_node("aggregate", make_aggregate_node(services))
    builder.add_edge(START, "plan")
    builder.add_edge("plan", "route")
    builder.add_conditional_edges("route", _after_route, ["review", "execute", "schedule"])
    builder.add_edge("execute", "aggregate")
    builder.add_conditional_edges("schedule", make_dispatch(services), ["wave_expert", "aggregate"])
    builder.add_edge("wave_expert", "schedule")
    builder.add_edge("aggregate", END)
    return builder


def build_graph(
    *,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
    name: str = "compllm",
    **components: Any,
) -> CompiledStateGraph[State, Context, InputState, State]:
    """`create_compllm(**components)` compiled, with `checkpointer` (see
    `compllm.open_checkpointer`) and `name`. Compiling loads no model."""
    compiled = create_compllm(**components).compile(checkpointer=checkpointer, name=name)
    # `max_concurrency` sizes the thread pool of a sync run, which also runs the dataflow
    # executor's tasks; the default (CPUs + 4) would cap parallel experts on small machines.
    # The resource bounds are `Context.max_parallel_experts` and the pool, not this.
    return compiled.with_config(max_concurrency=_RUN_THREADS)


# Compiling loads no model: models load on first use, inside the nodes.
graph = build_graph()
