"""The `execute` node (the default, dataflow executor): each sub-query starts as a LangGraph
task named `expert` the moment its own parents are done.

LangGraph's supersteps would make a child of a fast branch wait for an unrelated slow
sibling; tasks run outside that barrier. The node keeps the plan's bookkeeping
(`compllm.scheduling.PlanRun`) and waits for whichever call finishes first, so a run takes
about its plan's critical path. Each call is still its own task (in Studio, in the stream,
in the checkpoint: a resumed run does not recompute finished calls), with the retry policy on
the task.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable, Generator
from typing import Any

from langchain_core.runnables import Runnable, RunnableLambda
from langgraph.config import get_config
from langgraph.func import task
from langgraph.runtime import get_runtime
from langgraph.types import RetryPolicy

from compllm.experts import ExpertFailure, expert_steps, failed_answer
from compllm.scheduling import PlanRun
from compllm.services import Services
from compllm.state import (
    Context,
    ExpertTask,
    State,
    SubAnswer,
    answers_data,
    run_context,
    state_answers,
    state_plan,
    time_left,
)
from compllm.steps import Step, arun_steps, run_steps

__all__ = ["expert_call_steps", "make_execute_node", "plan_run"]

# What the scheduler asks for: start these tasks, then send back those that finished
# (waiting at most the seconds given; None: no limit).
_Wave = tuple[list[ExpertTask], float | None]
_Finished = list[tuple[ExpertTask, SubAnswer | BaseException]]


def expert_call_steps(
    services: Services, expert_input: ExpertTask
) -> Generator[Step, Any, SubAnswer]:
    """The steps of one expert call inside a running node or task (see `compllm.steps`)."""
    runtime = get_runtime(Context)
    info = runtime.execution_info
    return expert_steps(
        services,
        run_context(runtime.context),
        expert_input,
        get_config(),
        attempt=info.node_attempt if info else 1,
        started_at=(info.node_first_attempt_time if info else None) or time.time(),
        write=runtime.stream_writer,
    )


def plan_run(services: Services, state: State) -> PlanRun:
    runtime = get_runtime(Context)
    context = run_context(runtime.context)
    return PlanRun(
        plan=state_plan(state),
        query=state["query"],
        context=context,
        registry=services.registry(context),
        expected_latency=services.expected_latency,
        answers=state_answers(state),
        write=runtime.stream_writer,
    )


def _schedule(run: PlanRun, state: State) -> Generator[_Wave, _Finished, None]:
    """The dataflow loop, written once for sync and async runs."""
    while True:
        left = time_left(state, run.context)
        if left is not None and left <= 0:
            run.expire()
            return
        started = run.next_tasks()
        if not started and not run.running:
            return
        for expert_input, outcome in (yield started, left):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, ExpertFailure):
                    raise outcome  # a bug or a configuration error: fail the run loudly
                outcome = failed_answer(expert_input, outcome)
                run.write(outcome.end_event())
            run.finish(expert_input, outcome)


def make_execute_node(services: Services, retry_policy: RetryPolicy) -> Runnable[Any, Any]:
    """The `execute` node, with a sync body for `invoke`/`stream` and an async one for
    `ainvoke`/`astream` (the LangGraph server), each driving its own kind of task."""

    def answer(expert_input: ExpertTask) -> SubAnswer:
        return run_steps(expert_call_steps(services, expert_input))

    async def aanswer(expert_input: ExpertTask) -> SubAnswer:
        return await arun_steps(expert_call_steps(services, expert_input))

    expert = _expert_task(answer, retry_policy)
    aexpert = _expert_task(aanswer, retry_policy)

    def execute(state: State) -> dict[str, Any]:
        run = plan_run(services, state)
        schedule = _schedule(run, state)
        running: dict[concurrent.futures.Future[SubAnswer], ExpertTask] = {}
        try:
            started, left = next(schedule)
            while True:
                running.update((expert(t), t) for t in started)
                done, _ = concurrent.futures.wait(
                    running, timeout=left, return_when=concurrent.futures.FIRST_COMPLETED
                )
                started, left = schedule.send([(running.pop(f), _outcome(f)) for f in done])
        except StopIteration:
            pass  # calls still running when time is up are abandoned: results dropped
        return {"answers": answers_data(run.new)} if run.new else {}

    async def aexecute(state: State) -> dict[str, Any]:
        run = plan_run(services, state)
        schedule = _schedule(run, state)
        running: dict[asyncio.Future[SubAnswer], ExpertTask] = {}
        try:
            started, left = next(schedule)
            while True:
                running.update((asyncio.ensure_future(aexpert(t)), t) for t in started)
                done, _ = await asyncio.wait(
                    running, timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
                started, left = schedule.send([(running.pop(f), _outcome(f)) for f in done])
        except StopIteration:
            for future in running:
                future.cancel()  # async calls can be stopped, not only abandoned
        return {"answers": answers_data(run.new)} if run.new else {}

    return RunnableLambda(execute, afunc=aexecute, name="execute")


def _outcome(future: Any) -> SubAnswer | BaseException:
    return future.exception() or future.result()  # type: ignore[no-any-return]


def _expert_task(body: Callable[[ExpertTask], Any], retry_policy: RetryPolicy) -> Any:
    # A LangGraph task named `expert`: calling it returns a future (sync) or an awaitable.
    # (`task`'s overloads do not type-check under mypy, hence the ignore.)
    return task(name="expert", retry_policy=retry_policy)(body)  # type: ignore[arg-type]
