"""The waves executor (`Context.executor="waves"`): `schedule` and `wave_expert` nodes, one
`Send` per ready sub-query.

LangGraph runs a wave's sends in parallel and starts the next wave when the whole wave is
done (the superstep barrier), so a fast branch's child waits for an unrelated slow sibling.
Kept to compare against the dataflow executor; it uses the same slots, priorities, pool,
retries, events and expert calls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langgraph.runtime import Runtime
from langgraph.types import Send

from compllm.experts import ExpertFailure, failed_answer
from compllm.nodes.execute import expert_call_steps
from compllm.scheduling import (
    expert_task,
    expired_answers,
    priority_order,
    ready_subqueries,
    remaining_ranks,
    skipped_answers,
    startable,
)
from compllm.services import Services
from compllm.state import (
    Context,
    ExpertTask,
    NodeFunction,
    State,
    answers_data,
    run_context,
    state_answers,
    state_plan,
    time_left,
)
from compllm.steps import run_steps

__all__ = ["make_dispatch", "make_wave_expert_node", "schedule"]


def schedule(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Between waves: a sub-query whose parent has no answer is skipped, with the reason;
    when the run is out of time (`Context.max_run_s`), every unanswered one fails."""
    context = run_context(runtime.context)
    plan, answers = state_plan(state), state_answers(state)
    left = time_left(state, context)
    if left is not None and left <= 0 and context.max_run_s is not None:
        expired = expired_answers(plan, answers, context.max_run_s)
        for answer in expired.values():
            runtime.stream_writer(answer.end_event())
        return {"answers": answers_data(expired)} if expired else {}
    skipped = skipped_answers(plan, answers)
    return {"answers": answers_data(skipped)} if skipped else {}


def make_dispatch(services: Services) -> Callable[..., list[Send] | str]:
    def dispatch(state: State, runtime: Runtime[Context]) -> list[Send] | str:
        """Send the next wave (ready sub-queries, as many as slots allow, critical path
        first) to the wave_expert node, or go to the aggregator when none is left."""
        context = run_context(runtime.context)
        plan, answers = state_plan(state), state_answers(state)
        ranks = remaining_ranks(plan, services.expected_latency)
        order = priority_order(plan, ranks)
        ready = sorted(ready_subqueries(plan, answers), key=lambda sub: order[sub.id])
        wave = startable(ready, {}, context=context, registry=services.registry(context))
        if not wave:
            return "aggregate"
        return [
            Send("wave_expert", expert_task(sub, answers, ranks[sub.id], state["query"]))
            for sub in wave
        ]

    return dispatch


def make_wave_expert_node(services: Services) -> NodeFunction[ExpertTask]:
    """One `Send`: calls the sub-query's expert. A failure that another attempt could mend
    is raised for the node's retry policy; after the last attempt the failure is recorded as
    the sub-query's answer, so the wave ends and the aggregator can report it. Configuration
    errors fail the run (and a resumed run tries again)."""

    def expert(state: ExpertTask, *, runtime: Runtime[Context]) -> dict[str, Any]:
        try:
            answer = run_steps(expert_call_steps(services, state))
        except ExpertFailure as failure:
            info = runtime.execution_info
            attempt = info.node_attempt if info else 1
            if failure.retryable and attempt < services.expert_attempts:
                raise
            answer = failed_answer(state, failure)
            runtime.stream_writer(answer.end_event())
        return {"answers": answers_data({answer.id: answer})}

    return expert
