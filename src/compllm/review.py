"""Human in the loop: pause after routing so a person can approve, edit or cancel the plan.

With `Context.review_plan` on, the `review` node interrupts the run with the routed plan
(sub-queries, dependencies, experts and their scores). The run resumes with
`Command(resume=decision)`, where the decision is one of:

- `"approve"` (or `None`/`True`): run the plan as it is;
- `{"plan": {...}}` (or the plan itself): run an edited plan; it is validated like any other
  plan and routed again, keeping the experts it names; a sub-query with `"expert": null`
  is routed by similarity;
- `"cancel"`: end the run without calling any expert.

A decision that cannot be used (bad JSON shape, a cycle, an unknown expert) does not fail the
run: the node interrupts again with the error, so the reviewer can correct it. (The node is
`compllm.nodes.review`.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import ValidationError

from compllm.plan import Plan, PlanError
from compllm.state import Context, State, state_plan

__all__ = ["CANCELLED_ANSWER", "ReviewDecision", "parse_decision", "review_request"]

ReviewDecision = Literal["approve", "edit", "cancel"]
CANCELLED_ANSWER = "The plan was cancelled by its reviewer; no expert was called."

_APPROVALS = (None, True, "approve", "approved", "yes", "y", "")
_CANCELS = (False, "cancel", "cancelled", "reject", "no", "n")


def review_request(
    state: State, context: Context, experts: list[str], error: str | None
) -> dict[str, Any]:
    """The interrupt's payload: everything a reviewer needs, as plain JSON."""
    return {
        "kind": "plan_review",
        "query": state["query"],
        "plan": state_plan(state).model_dump(mode="json"),
        "experts": experts,
        "max_subqueries": context.max_subqueries,
        "error": error,
        "instructions": (
            'Resume with "approve", with {"plan": {"subqueries": [...]}} to run an edited '
            'plan (an "expert" of null is routed by similarity), or with "cancel".'
        ),
    }


def parse_decision(decision: Any, *, max_subqueries: int) -> tuple[ReviewDecision, Plan | None]:
    """What a resume value asks for; raises `PlanError` for one that cannot be used."""
    if isinstance(decision, str):
        decision = decision.strip().lower()
    if isinstance(decision, Mapping) and "action" in decision:
        action = str(decision["action"]).strip().lower()
        if action == "edit" or (action == "approve" and "plan" in decision):
            return "edit", _plan(decision.get("plan"), max_subqueries)
        return parse_decision(action, max_subqueries=max_subqueries)
    if decision in _APPROVALS:
        return "approve", None
    if decision in _CANCELS:
        return "cancel", None
    if isinstance(decision, Plan):
        return "edit", Plan.build(decision.subqueries, max_subqueries=max_subqueries)
    if isinstance(decision, Mapping):
        return "edit", _plan(decision.get("plan", decision), max_subqueries)
    raise PlanError(
        f"cannot use the review decision {decision!r}: expected 'approve', 'cancel' or "
        "{'plan': {'subqueries': [...]}}"
    )


def _plan(data: Any, max_subqueries: int) -> Plan:
    if isinstance(data, Plan):
        return Plan.build(data.subqueries, max_subqueries=max_subqueries)
    subqueries = data.get("subqueries") if isinstance(data, Mapping) else None
    if not isinstance(subqueries, list | tuple) or not subqueries:
        raise PlanError("the edited plan needs a non-empty 'subqueries' list")
    try:
        # Scores belong to the router: an edited question must not keep its old ones.
        return Plan.build(
            [
                {k: v for k, v in s.items() if k != "scores"} if isinstance(s, Mapping) else s
                for s in subqueries
            ],
            max_subqueries=max_subqueries,
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'sub-query'}: {e['msg']}" for e in exc.errors()
        )
        raise PlanError(f"the edited plan is not valid: {problems}") from None
