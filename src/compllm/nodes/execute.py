"""The `execute` node (the default, dataflow executor): every sub-query is a LangGraph task
named `expert`, and each calls its expert the moment its own parents are done.

LangGraph's supersteps would make a child of a fast branch wait for an unrelated slow
sibling; tasks run outside that barrier. The plan's `Gate` (`compllm.scheduling`) gives the
free slots to ready sub-queries (parents answered), the longest remaining chain first; the
node calls the tasks in a fixed order, each once the gate gives a slot to it or to a task
after it in that order, and each task waits at the gate for its turn. So a run takes about
its plan's critical path, each call is its own task (in Studio, in the stream, in the
checkpoint), and a resumed run finds every finished call's saved answer: LangGraph knows a
node's tasks by the order they were called, and that order depends only on the plan.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import queue
import threading
import time
from collections.abc import Callable, Generator
from contextvars import ContextVar
from typing import Any

from langchain_core.runnables import Runnable, RunnableLambda
from langgraph.config import get_config
from langgraph.func import task
from langgraph.runtime import get_runtime
from langgraph.types import RetryPolicy

from compllm.errors import CompLLMError
from compllm.experts import ExpertFailure, expert_steps, failed_answer
from compllm.scheduling import Gate, Turn
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

__all__ = [
    "GATE",
    "expert_call_steps",
    "make_execute_node",
    "make_expert_tasks",
    "sync_task_threads",
]

# The gate of the run whose node called a task. LangGraph runs a node's tasks in a copy of
# the node's context (threads and asyncio tasks alike), so each task sees its own run's gate.
GATE: ContextVar[Gate] = ContextVar("compllm_gate")

_Finished = list[tuple[str, SubAnswer | BaseException]]


def expert_call_steps(
    services: Services, expert_input: ExpertTask, started_at: float | None = None
) -> Generator[Step, Any, SubAnswer]:
    """The steps of one expert call inside a running node or task (see `compllm.steps`).
    `started_at`: when the call began (its first attempt); by default, when the running
    node or task first started."""
    runtime = get_runtime(Context)
    info = runtime.execution_info
    return expert_steps(
        services,
        run_context(runtime.context),
        expert_input,
        get_config(),
        attempt=info.node_attempt if info else 1,
        started_at=started_at or (info.node_first_attempt_time if info else None) or time.time(),
        write=runtime.stream_writer,
    )


def _gate(services: Services, state: State, capacity: int | None) -> Gate:
    context = run_context(get_runtime(Context).context)

    def out_of_time() -> bool:
        left = time_left(state, context)
        return left is not None and left <= 0

    return Gate(
        plan=state_plan(state),
        query=state["query"],
        context=context,
        registry=services.registry(context),
        expected_latency=services.expected_latency,
        answers=state_answers(state),
        capacity=capacity,
        out_of_time=out_of_time,
    )


def _execution(gate: Gate, state: State) -> Generator[float | None, _Finished, None]:
    """Record outcomes as tasks finish until every task has, or the run is out of time;
    yields how long to wait at most, receives the tasks that finished. Written once for
    sync and async runs."""
    write = get_runtime(Context).stream_writer
    position = {sid: i for i, sid in enumerate(gate.call_order())}
    while not gate.done:
        left = time_left(state, gate.context)
        if left is not None and left <= 0:
            for answer in gate.expire().values():
                write(answer.end_event())
            return
        for sid, outcome in sorted((yield left), key=lambda item: position[item[0]]):
            if isinstance(outcome, SubAnswer) and outcome.id != sid:
                raise CompLLMError(
                    f"the checkpoint's saved call for sub-query {sid} answered {outcome.id}: "
                    "it was written by a compllm version that called the expert tasks in "
                    "another order; resume it with that version, or start a new thread"
                )
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, ExpertFailure):
                    raise outcome  # a bug or a configuration error: fail the run loudly
                outcome = failed_answer(gate.task_input(sid), outcome)
                write(outcome.end_event())
            gate.finish(sid, outcome)


def make_expert_tasks(services: Services, retry_policy: RetryPolicy) -> tuple[Any, Any]:
    """The LangGraph tasks named `expert` (sync, async): each waits at its run's gate for
    its turn, then calls its expert. A node calls them with `GATE` set to its gate."""

    def answer(expert_input: ExpertTask) -> SubAnswer:
        turn = _wait_turn(GATE.get(), expert_input["id"])
        if turn.answer is not None:
            return turn.answer  # decided without a call: skipped, or out of time
        with_parents = ExpertTask(**{**expert_input, "parents": turn.parents})
        return run_steps(expert_call_steps(services, with_parents, turn.granted_at))

    async def aanswer(expert_input: ExpertTask) -> SubAnswer:
        turn = await _await_turn(GATE.get(), expert_input["id"])
        if turn.answer is not None:
            return turn.answer
        with_parents = ExpertTask(**{**expert_input, "parents": turn.parents})
        return await arun_steps(expert_call_steps(services, with_parents, turn.granted_at))

    return _expert_task(answer, retry_policy), _expert_task(aanswer, retry_policy)


def make_execute_node(services: Services, retry_policy: RetryPolicy) -> Runnable[Any, Any]:
    """The `execute` node, with a sync body for `invoke`/`stream` and an async one for
    `ainvoke`/`astream` (the LangGraph server), each driving its own kind of task."""
    expert, aexpert = make_expert_tasks(services, retry_policy)

    def execute(state: State) -> dict[str, Any]:
        gate = _gate(services, state, capacity=sync_task_threads())
        token = GATE.set(gate)
        finished: queue.SimpleQueue[concurrent.futures.Future[SubAnswer]] = queue.SimpleQueue()
        calls = _Calls(gate, expert, finished.put)
        try:
            calls.call_wanted()
            execution = _execution(gate, state)
            left = next(execution)
            while True:
                left = execution.send(calls.outcomes(_wait_finished(finished, left)))
                calls.call_wanted()
        except StopIteration:
            pass  # calls still running when time is up are abandoned: results dropped
        except BaseException:
            _release_waiting(gate)
            raise
        finally:
            GATE.reset(token)
        return {"answers": answers_data(gate.new)} if gate.new else {}

    async def aexecute(state: State) -> dict[str, Any]:
        gate = _gate(services, state, capacity=sync_task_threads())
        token = GATE.set(gate)
        finished: asyncio.Queue[asyncio.Future[SubAnswer]] = asyncio.Queue()
        calls = _Calls(gate, lambda task: asyncio.ensure_future(aexpert(task)), finished.put_nowait)
        try:
            calls.call_wanted()
            execution = _execution(gate, state)
            left = next(execution)
            while True:
                left = execution.send(calls.outcomes(await _await_finished(finished, left)))
                calls.call_wanted()
        except StopIteration:
            calls.cancel()  # async calls can be stopped, not only abandoned
        except BaseException:
            _release_waiting(gate)
            calls.cancel()
            raise
        finally:
            GATE.reset(token)
        return {"answers": answers_data(gate.new)} if gate.new else {}

    return RunnableLambda(execute, afunc=aexecute, name="execute")


def _release_waiting(gate: Gate) -> None:
    # The node fails (a bug, a configuration error, an interrupt): LangGraph waits for a
    # node's tasks before it reports the error, so tasks still waiting at the gate for
    # their turn must end, or the run would hang instead of failing.
    gate.drop(gate.plan.ids, reason="not run: the executor stopped with an error")


class _Calls:
    """The plan's expert tasks, called in the gate's fixed order (`Gate.call_order`) up to
    the last sub-query the gate gives a slot to now, rather than all at once: a task called
    long before its turn holds one of the run's threads while it waits, and a plan of
    hundreds would start hundreds of LangGraph tasks at once. `call` returns a
    future (sync or async); each goes to `when_done` as it ends. (Finished calls queue up as
    they end: waiting on every pending future at each turn of the executor's loop would
    cost as much as the calls do in a plan of hundreds.)"""

    def __init__(
        self, gate: Gate, call: Callable[[ExpertTask], Any], when_done: Callable[[Any], None]
    ) -> None:
        self.gate, self._call, self._when_done = gate, call, when_done
        self.order = gate.call_order()
        self._position = {sid: i for i, sid in enumerate(self.order)}
        self._next = 0  # the position of the next task to call
        self.pending: dict[Any, str] = {}  # future -> sub-query id, until it is an outcome
        gate.start()

    def call_wanted(self) -> None:
        """Calls the tasks up to the last one the gate wants started now."""
        wanted = [self._position[sid] for sid in self.gate.to_call() if sid in self._position]
        while self._next <= max(wanted, default=-1):
            sid = self.order[self._next]
            self._next += 1
            future = self._call(self.gate.task_input(sid))
            self.pending[future] = sid
            future.add_done_callback(self._when_done)

    def outcomes(self, done: list[Any]) -> _Finished:
        return [(self.pending.pop(future), _outcome(future)) for future in done]

    def cancel(self) -> None:
        for future in self.pending:
            future.cancel()


def _wait_finished(
    finished: queue.SimpleQueue[concurrent.futures.Future[SubAnswer]], timeout: float | None
) -> list[concurrent.futures.Future[SubAnswer]]:
    """The calls that end within `timeout` seconds (None: the first to end), and with it."""
    try:
        done = [finished.get(timeout=timeout)]
    except queue.Empty:
        return []
    return done + [finished.get() for _ in range(finished.qsize())]


async def _await_finished(
    finished: asyncio.Queue[asyncio.Future[SubAnswer]], timeout: float | None
) -> list[asyncio.Future[SubAnswer]]:
    """`_wait_finished` for the futures of async tasks."""
    try:
        done = [await asyncio.wait_for(finished.get(), timeout)]
    except TimeoutError:
        return []
    return done + [finished.get_nowait() for _ in range(finished.qsize())]


def _wait_turn(gate: Gate, sid: str) -> Turn:
    woken = threading.Event()
    box: list[Turn] = []

    def wake(turn: Turn) -> None:
        box.append(turn)
        woken.set()

    turn = gate.arrive(sid, wake)
    if turn is not None:
        return turn
    woken.wait()
    return box[0]


async def _await_turn(gate: Gate, sid: str) -> Turn:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Turn] = loop.create_future()

    def wake(turn: Turn) -> None:
        loop.call_soon_threadsafe(_resolve, future, turn)

    turn = gate.arrive(sid, wake)
    return turn if turn is not None else await future


def _resolve(future: asyncio.Future[Turn], turn: Turn) -> None:
    if not future.done():
        future.set_result(turn)


def sync_task_threads() -> int:
    """Tasks of this node that can run at once: LangGraph runs a sync run's tasks on a pool
    of `max_concurrency` threads (Python's default size when unset), and bounds an async
    run's tasks by the same number; two may be taken: this node's own, and the one that
    waits on the run's stream queue. (Counting one more than there are deadlocks a plan with
    more tasks than that: the gate would wait for an arrival that cannot come.)"""
    size = get_config().get("max_concurrency") or min(32, (os.cpu_count() or 1) + 4)
    return max(1, size - 2)


def _outcome(future: Any) -> SubAnswer | BaseException:
    return future.exception() or future.result()  # type: ignore[no-any-return]


def _expert_task(body: Callable[[ExpertTask], Any], retry_policy: RetryPolicy) -> Any:
    # A LangGraph task named `expert`: calling it returns a future (sync) or an awaitable.
    # (`task`'s overloads do not type-check under mypy, hence the ignore.)
    return task(name="expert", retry_policy=retry_policy)(body)  # type: ignore[arg-type]
