"""When expert calls start: which sub-queries are ready, in which order, within which slots,
and what happens to the others (skipped after a failed parent, failed when the run is out of
time). Pure logic: no LangGraph, no models. `compllm.experts` holds how one call happens; the
executor nodes (`compllm.nodes.execute`, `compllm.nodes.waves`) drive both.

When fewer slots than ready sub-queries are free, those with the longest remaining chain
(weighted by each expert's recent latency) go first: the critical path is never starved.
"""

from __future__ import annotations

import heapq
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from compllm.plan import Plan, SubQuery
from compllm.registry import Registry
from compllm.state import Context, ExpertTask, ParentAnswer, SubAnswer

__all__ = [
    "PlanRun",
    "expert_task",
    "expired_answers",
    "priority_order",
    "ready_subqueries",
    "remaining_ranks",
    "skipped_answers",
    "startable",
]


def skipped_answers(plan: Plan, answers: Mapping[str, SubAnswer]) -> dict[str, SubAnswer]:
    """Sub-queries that can never run because a parent (or its parent) has no answer."""
    known, skipped = dict(answers), {}
    for sid in plan.topological_order():
        if sid in known:
            continue
        sub = plan.get(sid)
        missing = [d for d in sub.depends_on if d in known and known[d].status != "ok"]
        if missing:
            known[sid] = skipped[sid] = SubAnswer(
                id=sid,
                question=sub.question,
                expert=sub.expert or "",
                status="skipped",
                error=f"not run: it needs {', '.join(missing)}, which has no answer",
            )
    return skipped


def expired_answers(
    plan: Plan, answers: Mapping[str, SubAnswer], limit_s: float
) -> dict[str, SubAnswer]:
    """The sub-queries still without an answer when the run's time is up, failed with why."""
    return {
        sub.id: SubAnswer(
            id=sub.id,
            question=sub.question,
            expert=sub.expert or "",
            status="failed",
            error=f"not answered: the run reached its time limit ({limit_s:g} s, "
            "Context.max_run_s)",
            finished_at=time.time(),
        )
        for sub in plan.subqueries
        if sub.id not in answers
    }


def remaining_ranks(plan: Plan, expected_latency: Callable[[str], float]) -> dict[str, float]:
    """For each sub-query, the expected length of the longest chain from it to the end of
    the plan (itself included): the sub-query with the highest rank is on the critical path."""
    rank: dict[str, float] = {}
    for sid in reversed(plan.topological_order()):
        own = expected_latency(plan.get(sid).expert or "")
        rank[sid] = own + max((rank[c] for c in plan.children(sid)), default=0.0)
    return rank


def ready_subqueries(plan: Plan, answers: Mapping[str, SubAnswer]) -> list[SubQuery]:
    """Sub-queries not yet answered whose parents all have answers."""
    return [
        sub
        for sub in plan.subqueries
        if sub.id not in answers
        and all(d in answers and answers[d].status == "ok" for d in sub.depends_on)
    ]


def priority_order(plan: Plan, ranks: Mapping[str, float]) -> dict[str, tuple[float, int]]:
    """Sort key per sub-query: the longest remaining chain first, then plan order."""
    return {sub.id: (-ranks.get(sub.id, 0.0), i) for i, sub in enumerate(plan.subqueries)}


def startable(
    ready: Iterable[SubQuery],
    running: Mapping[str, str],
    *,
    context: Context,
    registry: Registry,
) -> list[SubQuery]:
    """Of `ready` (in priority order), those that free slots allow now: the run's slots
    (`Context.max_parallel_experts`) and each expert's own (`max_concurrency`). `running`
    maps the sub-queries in flight to their experts."""
    free = max(0, context.max_parallel_experts - len(running))
    per_expert = Counter(running.values())
    chosen: list[SubQuery] = []
    for sub in ready:
        if len(chosen) == free:
            break
        expert = sub.expert or ""
        limit = registry.expert(expert).max_concurrency if expert in registry.names else None
        if limit is not None and per_expert[expert] >= limit:
            continue
        per_expert[expert] += 1
        chosen.append(sub)
    return chosen


def expert_task(
    sub: SubQuery, answers: Mapping[str, SubAnswer], priority: float, query: str
) -> ExpertTask:
    """The input of one expert call: the sub-query, its parents' answers, its priority."""
    parents = [
        ParentAnswer(id=d, question=answers[d].question, answer=answers[d].answer)
        for d in sub.depends_on
    ]
    return ExpertTask(
        id=sub.id,
        question=sub.question,
        expert=sub.expert or "",
        parents=parents,
        priority=priority,
        query=query,
    )


@dataclass
class PlanRun:
    """The bookkeeping of one plan's execution, incremental so that each finished sub-query
    costs time in proportion to its children, not to the plan.

    `write` receives the `subquery_end` events of sub-queries that end without a call
    (failed by the time limit); `new` collects every answer this run recorded.
    """

    plan: Plan
    query: str
    context: Context
    registry: Registry
    expected_latency: Callable[[str], float]
    answers: dict[str, SubAnswer]
    write: Callable[[dict[str, Any]], None] = lambda event: None
    new: dict[str, SubAnswer] = field(default_factory=dict)
    running: dict[str, str] = field(default_factory=dict)  # sub-query id -> expert

    def __post_init__(self) -> None:
        self.ranks = remaining_ranks(self.plan, self.expected_latency)
        self.order = priority_order(self.plan, self.ranks)
        self._record(skipped_answers(self.plan, self.answers))  # a resumed run may have some
        self.waiting = {  # parents still without an answer
            sub.id: sum(d not in self.answers for d in set(sub.depends_on))
            for sub in self.plan.subqueries
        }
        self.ready = [self._key(sub) for sub in ready_subqueries(self.plan, self.answers)]
        heapq.heapify(self.ready)

    def next_tasks(self) -> list[ExpertTask]:
        """The sub-queries to start now (ready, within slots, critical path first)."""
        candidates: list[SubQuery] = []
        while self.ready and len(candidates) < len(self.plan):
            candidates.append(self.plan.get(heapq.heappop(self.ready)[2]))
            if len(candidates) >= self.context.max_parallel_experts - len(self.running) and (
                not self._has_expert_limits
            ):
                break
        chosen = startable(candidates, self.running, context=self.context, registry=self.registry)
        picked = {sub.id for sub in chosen}
        for sub in candidates:
            if sub.id not in picked:
                heapq.heappush(self.ready, self._key(sub))
        for sub in chosen:
            self.running[sub.id] = sub.expert or ""
        return [expert_task(sub, self.answers, self.ranks[sub.id], self.query) for sub in chosen]

    def finish(self, task: ExpertTask, outcome: SubAnswer) -> None:
        """Record a call's outcome and make its children ready (or skip them)."""
        sid = task["id"]
        del self.running[sid]
        self._record({sid: outcome})
        if outcome.status != "ok":
            self._record(skipped_answers(self.plan, self.answers))
            return
        for child in self.plan.children(sid):
            self.waiting[child] -= 1
            if self.waiting[child] == 0 and child not in self.answers:
                heapq.heappush(self.ready, self._key(self.plan.get(child)))

    def expire(self) -> None:
        """The run is out of time: every sub-query without an answer fails, with the reason;
        calls still running are abandoned (their results are dropped)."""
        assert self.context.max_run_s is not None
        expired = expired_answers(self.plan, self.answers, self.context.max_run_s)
        for answer in expired.values():
            self.write(answer.end_event())
        self._record(expired)

    @property
    def done(self) -> bool:
        return not self.running and not self.ready

    @cached_property
    def _has_expert_limits(self) -> bool:
        return any(e.max_concurrency is not None for e in self.registry.experts)

    def _key(self, sub: SubQuery) -> tuple[float, int, str]:
        return (*self.order[sub.id], sub.id)

    def _record(self, answers: Mapping[str, SubAnswer]) -> None:
        self.answers.update(answers)
        self.new.update(answers)
