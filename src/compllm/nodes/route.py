"""The `route` node: each sub-query gets its expert and every expert's score
(`compllm.router.route_plan`)."""

from __future__ import annotations

import time
from typing import Any

from langgraph.runtime import Runtime

from compllm.router import route_plan
from compllm.services import Services
from compllm.state import Context, NodeFunction, State, plan_data, run_context, state_plan

__all__ = ["make_route_node"]


def make_route_node(services: Services) -> NodeFunction[State]:
    def route(state: State, *, runtime: Runtime[Context]) -> dict[str, Any]:
        context = run_context(runtime.context)
        started = time.perf_counter()
        routed = route_plan(
            state_plan(state), services.router(context), threshold=context.routing_threshold
        )
        return {"plan": plan_data(routed), "timings": {"route": time.perf_counter() - started}}

    return route
