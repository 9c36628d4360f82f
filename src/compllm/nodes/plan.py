"""The `plan` node: checks the query, then writes `plan`, `planner_path` and
`planner_attempts` (from a plan given with the query, or from the planner)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from langchain_core.runnables import Runnable, RunnableLambda
from langchain_core.runnables.config import run_in_executor
from langgraph.config import get_config
from langgraph.runtime import get_runtime
from langgraph.types import RetryPolicy
from pydantic import ValidationError

from compllm.nodes.execute import make_expert_tasks
from compllm.nodes.stream import StreamDispatch, streams
from compllm.plan import Plan, PlanError, SubQuery
from compllm.planner import plan_run
from compllm.services import Services
from compllm.state import Context, State, plan_data, run_context
from compllm.validation import check_query, describe_value

__all__ = ["given_plan", "make_plan_node"]


def given_plan(raw: object, max_subqueries: int) -> Plan:
    """A plan given with the query: a `Plan` (library) or its JSON (Studio, the server),
    validated like any other; `PlanError` names the field and what is wrong."""
    if isinstance(raw, Plan):
        return Plan.build(raw.subqueries, max_subqueries=max_subqueries)
    subqueries = raw.get("subqueries") if isinstance(raw, Mapping) else None
    if not isinstance(subqueries, list | tuple):
        raise PlanError(
            "input.plan must be an object with a 'subqueries' list, not " + describe_value(raw)
        )
    items = []
    for index, item in enumerate(subqueries):
        where = f"input.plan.subqueries[{index}]"
        if not isinstance(item, Mapping):
            raise PlanError(
                f"{where} must be an object with an id and a question, not " + describe_value(item)
            )
        try:
            items.append(SubQuery.model_validate(item))
        except ValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(str(p) for p in error["loc"])
            raise PlanError(
                f"{where}.{field}: {error['msg'].lower()}, not {describe_value(error['input'])}"
            ) from None
    try:
        return Plan.build(items, max_subqueries=max_subqueries)
    except PlanError as exc:
        raise PlanError(f"input.plan: {exc}") from None


def make_plan_node(services: Services, retry_policy: RetryPolicy) -> Runnable[Any, Any]:
    """The plan node; in a sync run with an LLM planner it also starts experts as the plan
    is written (`compllm.nodes.stream`), as tasks named `expert` with `retry_policy`."""
    expert, _ = make_expert_tasks(services, retry_policy)

    def planned(state: State, *, may_stream: bool) -> dict[str, Any]:
        context = run_context(get_runtime(Context).context)
        started = time.perf_counter()
        # Nothing runs before the input is known to be usable (the server sends any JSON).
        check_query(state.get("query"), context.max_query_chars)
        run = {"run_started_at": state.get("run_started_at") or time.time()}
        if state.get("plan") is not None:
            given = given_plan(state["plan"], context.max_subqueries)
            return {
                "plan": plan_data(given),
                "planner_path": "given",
                "timings": {"plan": 0.0},
                **run,
            }
        planning_began = time.time()
        dispatch = (
            StreamDispatch(services, context, {**state, **run}, expert)  # type: ignore[typeddict-item]
            if may_stream and streams(context, state)
            else None
        )
        try:
            result, path, attempts = plan_run(
                state["query"],
                context,
                services,
                config=get_config(),
                on_subquery=dispatch.arrive if dispatch else None,
            )
        except BaseException:
            if dispatch:
                dispatch.abandon()
            raise
        timings = {"plan": time.perf_counter() - started}
        streamed = dispatch.finish(result) if dispatch else {}
        if dispatch and dispatch.first_call_at is not None:
            # Time from the planner's start to the first expert call it let begin.
            timings["first_expert"] = dispatch.first_call_at - planning_began
        return {
            **streamed,
            "plan": plan_data(result),
            "planner_path": path,
            "planner_attempts": [a.model_dump(mode="json") for a in attempts],
            "timings": timings,
            **run,
        }

    def plan(state: State) -> dict[str, Any]:
        return planned(state, may_stream=True)

    async def aplan(state: State) -> dict[str, Any]:
        # Async runs (ainvoke, astream, the server) plan, then execute: the planner is
        # synchronous, and the experts of an async run are async tasks of the execute node.
        return await run_in_executor(get_config(), planned, state, may_stream=False)

    return RunnableLambda(plan, afunc=aplan, name="plan")
