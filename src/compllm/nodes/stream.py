"""Streaming plan dispatch: experts start while the planner LLM is still writing the plan.

The plan node hands `StreamDispatch.arrive` to the planner (`compllm.planner.plan_run`'s
`on_subquery`). Each sub-query object the LLM finishes is checked on its own, routed, and
its `expert` task called at once; a sub-query that names an id not written yet waits until
that id arrives. Runs with a checkpointer plan first (see `streams`): a run that may be
resumed must find its plan saved.

When the planner is done, its plan (checked as a whole, or the fallback plan when the LLM's
was rejected) is matched against what was started: a sub-query of the final plan with the
same question and the same parents reuses the answer of the call already made, so nothing
is computed twice; started calls the final plan does not have are dropped (those still
waiting never call; those running finish and are left out). What the final plan still
needs runs in the `execute` node, as without streaming.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Mapping
from typing import Any

from langgraph._internal._constants import CONFIG_KEY_CHECKPOINTER
from langgraph.config import get_config
from langgraph.runtime import get_runtime

from compllm.experts import ExpertFailure, failed_answer
from compllm.nodes.execute import GATE, sync_task_threads
from compllm.plan import Plan, PlanError, SubQuery
from compllm.router import route_plan
from compllm.scheduling import Gate
from compllm.services import Services
from compllm.state import Context, State, SubAnswer, answers_data

__all__ = ["StreamDispatch", "streams"]


def streams(context: Context, state: State) -> bool:
    """Whether this run's plan may be dispatched while it is written."""
    return (
        context.stream_plan
        and not context.review_plan  # a person decides on the whole plan first
        and context.executor == "dataflow"
        and state.get("plan") is None
        # With a time limit, which calls ended in time is the execute node's decision alone:
        # it checks the clock only between the outcomes it has recorded, in call order.
        and context.max_run_s is None
        and not _checkpointed()
    )


def _checkpointed() -> bool:
    """Whether the run has a checkpointer. Such a run saves its plan before any expert
    starts: a run resumed after a crash must not plan again, since a planner that samples
    may write another plan, and LangGraph hands a node's saved task results back by the
    order of the calls, not by what they were asked."""
    configurable = get_config().get("configurable", {})
    return configurable.get(CONFIG_KEY_CHECKPOINTER) is not None


def _question_key(text: str) -> str:
    return " ".join(text.lower().split())


class StreamDispatch:
    """Starts each sub-query's expert as the planner writes it (see the module doc)."""

    def __init__(self, services: Services, context: Context, state: State, expert: Any) -> None:
        self.services, self.context, self.state, self.expert = services, context, state, expert
        self.router = services.router(context)
        self.gate: Gate | None = None
        self.waiting: list[SubQuery] = []  # written, but naming ids not written yet
        self.calls: dict[concurrent.futures.Future[SubAnswer], str] = {}
        # The written plan cannot be a plan, or a call failed with a bug: dispatch stops.
        self.broken = False
        self.first_call_at: float | None = None
        self._token: Any = None
        self.write = get_runtime(Context).stream_writer  # on the node's thread only
        self.events: list[Any] = []  # from done-callbacks, for the node's thread to write

    # -- while the planner writes ------------------------------------------------------------

    def arrive(self, item: Mapping[str, Any]) -> None:
        """One sub-query object, as the planner finished writing it."""
        self._write_events()
        if self.broken:
            return
        try:
            sub = SubQuery(
                id=str(item.get("id", "")),
                question=str(item.get("question", "")),
                depends_on=tuple(
                    str(d) for d in item.get("depends_on") or () if d != item.get("id")
                ),
            )
        except (ValueError, TypeError):
            return  # the final check of the whole plan says what is wrong
        self.waiting.append(sub)
        self._start_ready()

    def _start_ready(self) -> None:
        known = set() if self.gate is None else set(self.gate.plan.ids)
        progress = True
        while progress:
            progress = False
            for sub in list(self.waiting):
                if sub.id in known or not set(sub.depends_on) <= known:
                    continue
                self.waiting.remove(sub)
                try:
                    self._start(self._routed(sub))
                except PlanError:
                    self.broken = True  # a duplicate id, a plan past its size limit
                    return
                known.add(sub.id)
                progress = True

    def _routed(self, sub: SubQuery) -> SubQuery:
        """`sub` routed as `route_plan` routes it in a whole plan (with its parents)."""
        parents = [] if self.gate is None else [self.gate.plan.get(d) for d in sub.depends_on]
        alone = [p.model_copy(update={"depends_on": ()}) for p in parents]
        routed = route_plan(
            Plan.build([*alone, sub], max_subqueries=len(alone) + 1),
            self.router,
            threshold=self.context.routing_threshold,
        )
        return routed.get(sub.id)

    def _start(self, sub: SubQuery) -> None:
        if self.gate is None:
            self.gate = Gate(
                plan=Plan.build([sub], max_subqueries=self.context.max_subqueries),
                query=self.state["query"],
                context=self.context,
                registry=self.services.registry(self.context),
                expected_latency=self.services.expected_latency,
                answers={},
                capacity=sync_task_threads(),
                out_of_time=lambda: False,  # runs with a time limit do not stream
            )
            self._token = GATE.set(self.gate)
        else:
            self.gate.extend(sub, max_subqueries=self.context.max_subqueries)
        future = self.expert(self.gate.task_input(sub.id))
        self.calls[future] = sub.id
        future.add_done_callback(self._finished)
        if self.first_call_at is None:
            self.first_call_at = time.time()
            self.gate.start()

    def _finished(self, future: concurrent.futures.Future[SubAnswer]) -> None:
        # On the call's own thread: its children may start at once, while the planner writes.
        assert self.gate is not None
        sid = self.calls[future]
        error = future.exception()
        if error is None:
            self.gate.finish(sid, future.result())
        elif isinstance(error, ExpertFailure):
            answer = failed_answer(self.gate.task_input(sid), error)
            self.gate.finish(sid, answer)
            self.events.append(answer.end_event())  # written by the node's thread
        else:
            # A bug or a configuration error: `finish` raises it in the node once every call
            # has ended. So the run stops calling: this call's slot is freed, tasks waiting
            # at the gate end now (or that wait would never end), and sub-queries the
            # planner writes from now on are not started.
            self.broken = True
            sub = self.gate.plan.get(sid)
            failed = SubAnswer(
                id=sid,
                question=sub.question,
                expert=sub.expert or "",
                status="failed",
                error=f"{type(error).__name__}: {error}",
            )
            self.gate.finish(sid, failed)
            self.gate.drop(
                self.gate.plan.ids, reason="not run: an expert task failed with an error"
            )

    # -- when the planner is done --------------------------------------------------------

    def abandon(self) -> None:
        """The planner failed: tasks still waiting end without calling, calls already
        running finish before the error goes on (a node's tasks end with the node)."""
        if self.gate is None:
            return
        try:
            self.gate.drop(self.gate.plan.ids)
            concurrent.futures.wait(list(self.calls))
        finally:
            GATE.reset(self._token)

    def finish(self, final: Plan) -> dict[str, Any]:
        """The answers of the calls the final plan keeps, under its ids."""
        if self.gate is None:
            return {}
        try:
            reused = self._match(final)
            self.gate.drop(sid for sid in self.gate.plan.ids if sid not in reused.values())
            self._wait()
            self._write_events()
            for future in self.calls:
                error = future.exception() if future.done() else None
                if error is not None and not isinstance(error, ExpertFailure):
                    raise error
            kept = {
                final_id: self.gate.answers[sid].model_copy(update={"id": final_id})
                for final_id, sid in reused.items()
                if sid in self.gate.answers
            }
            return {"answers": answers_data(kept)} if kept else {}
        finally:
            GATE.reset(self._token)

    def _match(self, final: Plan) -> dict[str, str]:
        """Final plan id -> started sub-query id with the same question and parents."""
        assert self.gate is not None
        started = self.gate.plan
        matched: dict[str, str] = {}
        taken: set[str] = set()
        for sid in final.topological_order():
            sub = final.get(sid)
            parents = {matched.get(d) for d in sub.depends_on}
            for candidate in started.subqueries:
                if (
                    candidate.id not in taken
                    and _question_key(candidate.question) == _question_key(sub.question)
                    and set(candidate.depends_on) == parents
                ):
                    matched[sid] = candidate.id
                    taken.add(candidate.id)
                    break
        return matched

    def _write_events(self) -> None:
        while self.events:
            self.write(self.events.pop(0))

    def _wait(self) -> None:
        assert self.gate is not None
        while not self.gate.done:
            pending = [f for f in self.calls if not f.done()]
            if not pending:
                return
            concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
