"""The dataflow scheduler: one `execute` node that starts each sub-query as a LangGraph task
the moment its own parents are done.

LangGraph's supersteps would make a child of a fast branch wait for an unrelated slow
sibling; tasks run outside that barrier. The node keeps the plan's bookkeeping (what is
running, what is ready, what must be skipped) and waits for whichever call finishes first,
so a run takes about its plan's critical path. Each call is still its own task named
`expert` (in Studio, in the stream, in the checkpoint: a resumed run does not recompute
finished calls), with the retry policy on the task.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import heapq
from collections.abc import Callable, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

from langchain_core.runnables import Runnable, RunnableLambda
from langgraph.func import task
from langgraph.runtime import get_runtime
from langgraph.types import RetryPolicy

from compllm.executor import (
    ExpertFailure,
    acall_expert,
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
from compllm.plan import SubQuery
from compllm.state import (
    Context,
    ExpertTask,
    State,
    SubAnswer,
    state_answers,
    state_plan,
    time_left,
)

if TYPE_CHECKING:
    from compllm.services import Services

__all__ = ["make_execute_node"]


class _PlanRun:
    """Bookkeeping of one plan's execution inside the `execute` node, incremental so that
    each finished sub-query costs time in proportion to its children, not to the plan."""

    def __init__(self, services: Services, state: State) -> None:
        self.runtime = get_runtime(Context)
        self.context = self.runtime.context or Context()
        self.services, self.plan, self.state = services, state_plan(state), state
        self.registry = services.registry(self.context)
        self.ranks = remaining_ranks(self.plan, services)
        self.order = priority_order(self.plan, self.ranks)
        self.answers: dict[str, SubAnswer] = state_answers(state)
        self.new: dict[str, SubAnswer] = {}
        self.running: dict[str, str] = {}  # sub-query id -> expert
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
        return [expert_task(sub, self.answers, self.ranks[sub.id]) for sub in chosen]

    def finish(self, task_input: ExpertTask, outcome: SubAnswer | BaseException) -> None:
        sid = task_input["id"]
        del self.running[sid]
        if isinstance(outcome, BaseException):
            if not isinstance(outcome, ExpertFailure):
                raise outcome  # a bug or a configuration error: fail the run loudly
            outcome = failed_answer(task_input, outcome)
            self.runtime.stream_writer(end_event(outcome))
        self._record({sid: outcome})
        if outcome.status != "ok":
            self._record(skipped_answers(self.plan, self.answers))
            return
        for child in self.plan.children(sid):
            self.waiting[child] -= 1
            if self.waiting[child] == 0 and child not in self.answers:
                heapq.heappush(self.ready, self._key(self.plan.get(child)))

    def update(self) -> dict[str, Any]:
        return {"answers": self.new} if self.new else {}

    def time_left(self) -> float | None:
        return time_left(self.state, self.context)

    def expire(self) -> dict[str, Any]:
        """The run is out of time: every sub-query without an answer fails, with the reason;
        calls still running are abandoned (their results are dropped)."""
        assert self.context.max_run_s is not None
        expired = expired_answers(self.plan, self.answers, self.context.max_run_s)
        for answer in expired.values():
            self.runtime.stream_writer(end_event(answer))
        self._record(expired)
        return self.update()

    @cached_property
    def _has_expert_limits(self) -> bool:
        return any(e.max_concurrency is not None for e in self.registry.experts)

    def _key(self, sub: SubQuery) -> tuple[float, int, str]:
        return (*self.order[sub.id], sub.id)

    def _record(self, answers: Mapping[str, SubAnswer]) -> None:
        self.answers.update(answers)
        self.new.update(answers)


def _expert_task(body: Callable[[ExpertTask], Any], retry_policy: RetryPolicy) -> Any:
    # A LangGraph task named `expert`: calling it returns a future (sync) or an awaitable.
    # (`task`'s overloads do not type-check under mypy, hence the ignore.)
    return task(name="expert", retry_policy=retry_policy)(body)  # type: ignore[arg-type]


def make_execute_node(services: Services, retry_policy: RetryPolicy) -> Runnable[Any, Any]:
    """The `execute` node, with a sync body for `invoke`/`stream` and an async one for
    `ainvoke`/`astream` (the LangGraph server), each driving its own kind of task."""

    def answer(expert_input: ExpertTask) -> SubAnswer:
        return call_expert(services, expert_input, get_runtime(Context))

    async def aanswer(expert_input: ExpertTask) -> SubAnswer:
        return await acall_expert(services, expert_input, get_runtime(Context))

    expert = _expert_task(answer, retry_policy)
    aexpert = _expert_task(aanswer, retry_policy)

    def execute(state: State) -> dict[str, Any]:
        run = _PlanRun(services, state)
        running: dict[concurrent.futures.Future[SubAnswer], ExpertTask] = {}
        while True:
            left = run.time_left()
            if left is not None and left <= 0:
                return run.expire()
            for expert_input in run.next_tasks():
                running[expert(expert_input)] = expert_input
            if not running:
                return run.update()
            done, _ = concurrent.futures.wait(
                running, timeout=left, return_when=concurrent.futures.FIRST_COMPLETED
            )
            for future in done:
                run.finish(running.pop(future), future.exception() or future.result())

    async def aexecute(state: State) -> dict[str, Any]:
        run = _PlanRun(services, state)
        running: dict[asyncio.Future[SubAnswer], ExpertTask] = {}
        while True:
            left = run.time_left()
            if left is not None and left <= 0:
                for future in running:
                    future.cancel()  # async calls can be stopped, not only abandoned
                return run.expire()
            for expert_input in run.next_tasks():
                running[asyncio.ensure_future(aexpert(expert_input))] = expert_input
            if not running:
                return run.update()
            done, _ = await asyncio.wait(running, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            for future in done:
                run.finish(running.pop(future), future.exception() or future.result())

    return RunnableLambda(execute, afunc=aexecute, name="execute")
