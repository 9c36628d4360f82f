"""The plan: sub-queries with explicit dependencies, validated as a DAG.

A `Plan` is immutable once built. Every constructor path (LLM output, the deterministic
decomposer, a user's edit) goes through the same validation, so the executor can trust it.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Mapping
from functools import cached_property
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationInfo,
    field_validator,
    model_validator,
)

__all__ = [
    "DEFAULT_MAX_SUBQUERIES",
    "Plan",
    "PlanError",
    "PlannerPath",
    "SubQuery",
    "clean_text",
]

DEFAULT_MAX_SUBQUERIES = 16

PlannerPath = Literal["learned", "llm", "llm-retry", "rules", "given"]


def clean_text(text: str) -> str:
    """`text` without lone surrogates (bytes that were not UTF-8, e.g. from a terminal or a
    model) and NULs, which would break prompts, JSON and checkpoints later on."""
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")


class PlanError(ValueError):
    """A plan that cannot be executed. The message names the offending sub-query ids."""


class SubQuery(BaseModel):
    """One node of the plan: a self-contained question for one expert."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(min_length=1, max_length=32, description="Stable id, e.g. 'q1'.")
    question: str = Field(min_length=1, description="The sub-question sent to the expert.")
    depends_on: tuple[str, ...] = Field(
        default=(), description="Ids whose answers this sub-query needs."
    )
    expert: str | None = Field(default=None, description="Assigned expert, set by the router.")
    scores: dict[str, float] = Field(
        default_factory=dict, description="Routing score per expert (cosine similarity)."
    )

    @field_validator("id", "question", mode="before")
    @classmethod
    def _clean(cls, value: object) -> object:
        return clean_text(value) if isinstance(value, str) else value

    @field_validator("id", "question")
    @classmethod
    def _strip(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be blank")
        return value


class Plan(BaseModel):
    """A DAG of sub-queries. Construction fails with `PlanError` on any structural defect."""

    model_config = ConfigDict(frozen=True)

    subqueries: tuple[SubQuery, ...]

    @model_validator(mode="wrap")
    @classmethod
    def _check_dag(
        cls, data: object, handler: ModelWrapValidatorHandler[Plan], info: ValidationInfo
    ) -> Plan:
        if isinstance(data, Plan):
            return data  # checked when it was built (with the limit in force then)
        plan = handler(data)
        context = info.context if isinstance(info.context, Mapping) else {}
        _check_structure(
            plan.subqueries, int(context.get("max_subqueries", DEFAULT_MAX_SUBQUERIES))
        )
        return plan

    @classmethod
    def build(
        cls,
        subqueries: Iterable[SubQuery | Mapping[str, object]],
        *,
        max_subqueries: int = DEFAULT_MAX_SUBQUERIES,
    ) -> Plan:
        """Validate `subqueries` into a plan, raising `PlanError` with the offending ids."""
        items = tuple(
            s if isinstance(s, SubQuery) else SubQuery.model_validate(s) for s in subqueries
        )
        _check_structure(items, max_subqueries)
        # Already checked; model_validate would wrap PlanError in a pydantic ValidationError.
        return cls.model_construct(subqueries=items)

    @classmethod
    def from_data(cls, data: Plan | Mapping[str, object]) -> Plan:
        """A plan restored from state (`model_dump(mode="json")`): structure checked again,
        but not the size limit, which was checked, with the limit in force then, when the
        plan was first built."""
        if isinstance(data, Plan):
            return data
        subqueries = data.get("subqueries")
        if not isinstance(subqueries, list | tuple):
            raise PlanError("a stored plan needs a 'subqueries' list")
        return cls.build(subqueries, max_subqueries=max(1, len(subqueries)))

    @classmethod
    def single(cls, question: str) -> Plan:
        """The one-node plan for a query that has only one part."""
        return cls.build([SubQuery(id="q1", question=question)])

    # -- lookups -------------------------------------------------------------------------

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.subqueries]

    def __len__(self) -> int:
        return len(self.subqueries)

    def get(self, subquery_id: str) -> SubQuery:
        return self._by_id[subquery_id]

    def children(self, subquery_id: str) -> list[str]:
        return self._children[subquery_id]

    # Indexes built once per plan, so that executors stay linear in the plan's size.
    @cached_property
    def _by_id(self) -> dict[str, SubQuery]:
        return {s.id: s for s in self.subqueries}

    @cached_property
    def _children(self) -> dict[str, list[str]]:
        children: dict[str, list[str]] = {s.id: [] for s in self.subqueries}
        for sub in self.subqueries:
            for parent in dict.fromkeys(sub.depends_on):
                children[parent].append(sub.id)
        return children

    def with_routes(self, routes: Mapping[str, tuple[str, dict[str, float]]]) -> Plan:
        """A copy with `expert` and `scores` set from `routes` (id -> (expert, scores))."""
        routed = [
            s.model_copy(update={"expert": routes[s.id][0], "scores": routes[s.id][1]})
            if s.id in routes
            else s
            for s in self.subqueries
        ]
        # A new plan, not model_copy: a copy would carry over the indexes cached on this one.
        return type(self).model_construct(subqueries=tuple(routed))

    # -- graph helpers -------------------------------------------------------------------

    def topological_order(self) -> list[str]:
        """Ids in an order where every sub-query follows its dependencies (stable: plan order
        breaks ties)."""
        return list(self._order)

    @cached_property
    def _order(self) -> tuple[str, ...]:
        return tuple(sid for level in self.levels() for sid in level)

    def levels(self) -> list[list[str]]:
        """Ids grouped by depth: level 0 has no dependencies, level k depends on level < k."""
        depth: dict[str, int] = {}
        for sub in _kahn(self.subqueries):
            depth[sub.id] = 1 + max((depth[d] for d in sub.depends_on), default=-1)
        grouped: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
        for sub in self.subqueries:
            grouped[depth[sub.id]].append(sub.id)
        return grouped

    def critical_path(self, durations: Mapping[str, float] | None = None) -> list[str]:
        """The longest chain of dependent sub-queries, weighted by `durations` (default: 1 per
        sub-query). Its length bounds any schedule's makespan from below."""
        weight = {s.id: (durations or {}).get(s.id, 1.0) for s in self.subqueries}
        best: dict[str, tuple[float, list[str]]] = {}
        for sub in _kahn(self.subqueries):
            head = max((best[d] for d in sub.depends_on), key=lambda b: b[0], default=(0.0, []))
            best[sub.id] = (head[0] + weight[sub.id], [*head[1], sub.id])
        return max(best.values(), key=lambda b: b[0], default=(0.0, []))[1]


def _check_structure(subqueries: Iterable[SubQuery], limit: int) -> None:
    items = list(subqueries)
    if not items:
        raise PlanError("the plan is empty: it needs at least one sub-query")
    if len(items) > limit:
        raise PlanError(f"the plan has {len(items)} sub-queries; the maximum is {limit}")
    counts = Counter(s.id for s in items)
    duplicates = sorted(sid for sid, n in counts.items() if n > 1)
    if duplicates:
        raise PlanError(f"duplicate sub-query ids: {', '.join(duplicates)}")
    for sub in items:
        if sub.id in sub.depends_on:
            raise PlanError(f"sub-query {sub.id} depends on itself")
        unknown = [d for d in sub.depends_on if d not in counts]
        if unknown:
            raise PlanError(f"sub-query {sub.id} depends on unknown ids: {', '.join(unknown)}")
    _kahn(items)


def _kahn(subqueries: Iterable[SubQuery]) -> list[SubQuery]:
    """Kahn's algorithm in plan order; raises `PlanError` naming the sub-queries on a cycle."""
    items = list(subqueries)
    by_id = {s.id: s for s in items}
    children: dict[str, list[str]] = {s.id: [] for s in items}
    remaining: dict[str, int] = {}
    for sub in items:
        parents = set(sub.depends_on)
        remaining[sub.id] = len(parents)
        for parent in parents:
            children[parent].append(sub.id)
    ready = deque(s.id for s in items if remaining[s.id] == 0)
    order: list[SubQuery] = []
    while ready:
        sid = ready.popleft()
        order.append(by_id[sid])
        for child in children[sid]:
            remaining[child] -= 1
            if remaining[child] == 0:
                ready.append(child)
    if len(order) < len(items):
        stuck = [s.id for s in items if remaining[s.id] > 0]
        raise PlanError(f"dependency cycle among sub-queries: {', '.join(stuck)}")
    return order
