"""The wave scheduler: `schedule` and `wave_expert` nodes, one `Send` per ready sub-query.

LangGraph runs a wave's sends in parallel and starts the next wave when the whole wave is
done (the superstep barrier), so a fast branch's child waits for an unrelated slow sibling.
Kept as `Context.executor="waves"` to compare against the dataflow scheduler; it uses the
same slots, priorities, pool, retries and events.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langgraph.errors import NodeError
from langgraph.runtime import Runtime
from langgraph.types import Command, Send

from compllm.executor import (
    ExpertFailure,
    call_expert,
    end_event,
    expert_task,
    expired_answers,
    failed_answer,
    priority_order,
    ready_subqueries,
    remaining_ranks,
    skipped_answers,
    startable,
)
from compllm.state import (
    Context,
    ExpertTask,
    NodeFunction,
    State,
    state_answers,
    state_plan,
    time_left,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from compllm.services import Services

__all__ = ["make_dispatch", "make_expert_failed_node", "make_wave_expert_node", "schedule"]


def schedule(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Between waves: a sub-query whose parent has no answer is skipped, with the reason;
    when the run is out of time (`Context.max_run_s`), every unanswered one fails."""
    context = runtime.context or Context()
    plan, answers = state_plan(state), state_answers(state)
    left = time_left(state, context)
    if left is not None and left <= 0 and context.max_run_s is not None:
        expired = expired_answers(plan, answers, context.max_run_s)
        for answer in expired.values():
            runtime.stream_writer(end_event(answer))
        return {"answers": expired} if expired else {}
    skipped = skipped_answers(plan, answers)
    return {"answers": skipped} if skipped else {}


def make_dispatch(services: Services) -> Callable[..., list[Send] | str]:
    def dispatch(state: State, runtime: Runtime[Context]) -> list[Send] | str:
        """Send the next wave (ready sub-queries, as many as slots allow, critical path
        first) to the wave_expert node, or go to the aggregator when none is left."""
        context = runtime.context or Context()
        plan, answers = state_plan(state), state_answers(state)
        ranks = remaining_ranks(plan, services)
        order = priority_order(plan, ranks)
        ready = sorted(ready_subqueries(plan, answers), key=lambda sub: order[sub.id])
        wave = startable(ready, {}, context=context, registry=services.registry(context))
        if not wave:
            return "aggregate"
        return [Send("wave_expert", expert_task(sub, answers, ranks[sub.id])) for sub in wave]

    return dispatch


def make_wave_expert_node(services: Services) -> NodeFunction[ExpertTask]:
    def expert(state: ExpertTask, *, runtime: Runtime[Context]) -> dict[str, Any]:
        answer = call_expert(services, state, runtime)
        return {"answers": {answer.id: answer}}

    return expert


def make_expert_failed_node() -> Any:
    """The expert node's error handler: after the last retry, record the failure as the
    sub-query's answer so that the run finishes and the aggregator can report it."""

    def expert_failed(
        state: ExpertTask, error: NodeError, *, runtime: Runtime[Context]
    ) -> Command[str]:
        if not isinstance(error.error, ExpertFailure):
            raise error.error  # a bug or a configuration error: fail the run loudly
        answer = failed_answer(state, error.error)
        runtime.stream_writer(end_event(answer))
        # The handler is its own node: route on to `schedule` as the expert node would have.
        return Command(update={"answers": {answer.id: answer}}, goto="schedule")

    return expert_failed
