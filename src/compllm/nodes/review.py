"""The `review` node (`Context.review_plan`): interrupts with the routed plan until it gets a
usable decision, then goes on to the executor the run's context names (or ends, when
cancelled). What a decision may be: `compllm.review`."""

from __future__ import annotations

from typing import Literal

from langgraph.runtime import Runtime
from langgraph.types import Command, interrupt

from compllm.errors import RegistryError
from compllm.plan import PlanError
from compllm.review import CANCELLED_ANSWER, parse_decision, review_request
from compllm.router import route_plan
from compllm.services import Services
from compllm.state import Context, NodeFunction, State, plan_data, run_context

__all__ = ["make_review_node"]


def make_review_node(services: Services) -> NodeFunction[State]:
    def review(
        state: State, *, runtime: Runtime[Context]
    ) -> Command[Literal["execute", "schedule", "__end__"]]:
        context = run_context(runtime.context)
        router = services.router(context)
        executor: Literal["execute", "schedule"] = (
            "schedule" if context.executor == "waves" else "execute"
        )
        error: str | None = None
        while True:  # each retry is a new interrupt of this node, answered in turn
            decision = interrupt(review_request(state, context, router.registry.names, error))
            try:
                action, edited = parse_decision(decision, max_subqueries=context.max_subqueries)
                if action == "cancel":
                    return Command(
                        goto="__end__",  # END, spelled as its literal type
                        update={"final_answer": CANCELLED_ANSWER, "aggregation": "none"},
                    )
                if edited is None:
                    return Command(goto=executor)
                plan = route_plan(edited, router, threshold=context.routing_threshold)
                return Command(goto=executor, update={"plan": plan_data(plan)})
            except (PlanError, RegistryError) as exc:
                error = str(exc)

    return review  # type: ignore[return-value]
