"""The `plan` node: checks the query, then writes `plan`, `planner_path` and
`planner_attempts` (from a plan given with the query, or from the planner)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from langgraph.config import get_config
from langgraph.runtime import Runtime
from pydantic import ValidationError

from compllm.plan import Plan, PlanError, SubQuery
from compllm.planner import plan_run
from compllm.services import Services
from compllm.state import Context, NodeFunction, State, plan_data, run_context
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


def make_plan_node(services: Services) -> NodeFunction[State]:
    def plan(state: State, *, runtime: Runtime[Context]) -> dict[str, Any]:
        context = run_context(runtime.context)
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
        result, path, attempts = plan_run(state["query"], context, services, config=get_config())
        return {
            "plan": plan_data(result),
            "planner_path": path,
            "planner_attempts": [a.model_dump(mode="json") for a in attempts],
            "timings": {"plan": time.perf_counter() - started},
            **run,
        }

    return plan
