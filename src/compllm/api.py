"""The library API: `CompLLM.default().invoke("...")`, or with your own experts, planner
and aggregator as LangChain/LangGraph objects:

    app = CompLLM(experts=[Expert(name="calculator", description="...", model=my_function),
                           Expert(name="history", description="...", model=ChatOpenAI(...))],
                  planner=ChatOpenAI(...), aggregator=my_runnable)
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeAlias, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, RetryPolicy, StateSnapshot, StreamMode
from pydantic import BaseModel, ConfigDict

from compllm.errors import ConfigError, QueryError
from compllm.graph import build_graph, make_registry
from compllm.models import ModelProvider, default_hub
from compllm.plan import Plan, PlannerPath, clean_text
from compllm.pool import ExpertPool, parse_bytes
from compllm.registry import Expert, Registry, load_registry
from compllm.review import CANCELLED_ANSWER
from compllm.state import (
    Context,
    InputState,
    PlannerAttempt,
    State,
    SubAnswer,
    plan_data,
    state_answers,
    state_plan,
)
from compllm.validation import check_query, unknown_fields

__all__ = ["CompLLM", "CompLLMResult", "RouteInfo", "RunStatus"]


class RouteInfo(BaseModel):
    """Where one sub-query went and why (all experts' scores)."""

    model_config = ConfigDict(frozen=True)

    id: str
    question: str
    expert: str
    depends_on: tuple[str, ...]
    scores: dict[str, float]


RunStatus = Literal["done", "awaiting_review", "cancelled"]


class CompLLMResult(BaseModel):
    """Everything a run produced: the answer, the plan, the routes and each sub-answer.

    A run paused for plan review (`Context.review_plan`) has `status="awaiting_review"`, no
    answer yet, and in `review` what the reviewer is asked (see `CompLLM.resume`)."""

    model_config = ConfigDict(frozen=True)

    query: str
    answer: str
    status: RunStatus = "done"
    plan: Plan
    planner_path: PlannerPath
    planner_attempts: list[PlannerAttempt]
    routes: list[RouteInfo]
    answers: list[SubAnswer]
    aggregation: str
    aggregation_error: str | None = None
    timings: dict[str, float]
    thread_id: str | None = None
    review: dict[str, Any] | None = None

    @classmethod
    def from_state(
        cls,
        state: dict[str, Any],
        total_s: float,
        *,
        thread_id: str | None = None,
        review: dict[str, Any] | None = None,
    ) -> CompLLMResult:
        plan, answers = state_plan(state), state_answers(state)
        status: RunStatus = "awaiting_review" if review is not None else "done"
        if state.get("final_answer") == CANCELLED_ANSWER:
            status = "cancelled"
        return cls(
            query=state["query"],
            answer=state.get("final_answer", ""),
            status=status,
            plan=plan,
            planner_path=state["planner_path"],
            planner_attempts=state.get("planner_attempts") or [],
            routes=[
                RouteInfo(
                    id=s.id,
                    question=s.question,
                    expert=s.expert or "",
                    depends_on=s.depends_on,
                    scores=s.scores,
                )
                for s in plan.subqueries
            ],
            answers=[answers[s.id] for s in plan.subqueries if s.id in answers],
            aggregation=state.get("aggregation", "none"),
            aggregation_error=state.get("aggregation_error"),
            timings={**(state.get("timings") or {}), "total": total_s},
            thread_id=thread_id,
            review=review,
        )


class CompLLM:
    """A configured Comp-LLM pipeline.

    >>> result = CompLLM.default().invoke("What is 12*7, and what are the symptoms of flu?")
    >>> result.answer, [(r.id, r.expert) for r in result.routes]

    With a checkpointer, a run's `thread_id` names it: invoking again with the same thread
    resumes a run that stopped (finished sub-queries are not recomputed) or returns the
    finished result, and a run paused for plan review continues with `resume`.

    Use it as a context manager (or call `close`) to free the pool it made for itself.
    """

    def __init__(
        self,
        *,
        experts: Sequence[Expert] | None = None,
        generalist: str | None = None,
        planner: Any = None,
        router: Any = None,
        aggregator: Any = None,
        registry: Registry | str | Path | None = None,
        context: Context | None = None,
        provider: ModelProvider | None = None,
        pool: ExpertPool | None = None,
        memory_budget: int | str | None = None,
        retry_policy: RetryPolicy | None = None,
        checkpointer: BaseCheckpointSaver[Any] | None = None,
        allow_python: bool = False,
    ) -> None:
        """experts: your experts (`Expert` objects; their models may be reference strings,
        chat models, Runnables, compiled graphs or functions); or `registry`: a registry or
        its file (default: the built-in experts). `generalist` names the expert that takes
        sub-queries no expert matches (default: the registry's, or the last expert).
        planner / aggregator: a reference string, a chat model, a Runnable or a function
        (default: `context.planner_model` / `context.aggregator_model`).
        router: an `ExpertRouter` (default: one over the experts, by `context.embedding_model`).
        context: default run settings; keyword arguments of `invoke` override them.
        provider / pool: where reference-string models come from and the pool that runs them.
        memory_budget: bytes or a size like "6GB" for the weights loaded at once (a pool of
        its own over `provider`, or over the default hub).
        checkpointer: saves each step of each run (see `compllm.open_checkpointer`); needed
        for plan review and for resuming a stopped run.
        allow_python: let a registry file name Python objects (`python:pkg.mod:name`)."""
        if experts is not None and registry is not None:
            raise ValueError("give either experts or registry, not both")
        if isinstance(registry, str | Path):
            registry = load_registry(registry, allow_python=allow_python)
        self.registry = make_registry(experts if experts is not None else registry, generalist)
        self.context = context or Context()
        self._own_pool: ExpertPool | None = None
        if memory_budget is not None:
            if pool is not None:
                raise ValueError("give either pool or memory_budget, not both")
            budget = parse_bytes(memory_budget) if isinstance(memory_budget, str) else memory_budget
            pool = self._own_pool = ExpertPool(
                provider or default_hub(), memory_budget_bytes=budget
            )
        self.graph: CompiledStateGraph[State, Context, InputState, State] = build_graph(
            provider=None if pool is not None else provider,
            experts=self.registry,
            planner=planner,
            router=router,
            aggregator=aggregator,
            pool=pool,
            retry_policy=retry_policy,
            checkpointer=checkpointer,
        )

    @classmethod
    def default(cls) -> CompLLM:
        """The built-in experts on the embedded models (offline)."""
        return cls()

    def close(self) -> None:
        """Free what this object made for itself (the pool of `memory_budget=`); shared
        pools and models stay."""
        if self._own_pool is not None:
            self._own_pool.close()
            self._own_pool = None

    def __enter__(self) -> CompLLM:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def invoke(
        self,
        query: str,
        *,
        plan: Plan | Mapping[str, Any] | None = None,
        thread_id: str | None = None,
        **context: Any,
    ) -> CompLLMResult:
        """Answer `query`. Keyword arguments override `Context` fields for this run; a given
        `plan` (validated, routed as usual) replaces the planner."""
        start = partial(self._start, query, plan, thread_id, context)
        return _last_result(self._stream(start, _RESULT_MODES))

    async def ainvoke(
        self,
        query: str,
        *,
        plan: Plan | Mapping[str, Any] | None = None,
        thread_id: str | None = None,
        **context: Any,
    ) -> CompLLMResult:
        """`invoke` for async applications."""
        result: CompLLMResult | None = None
        start = partial(self._start, query, plan, thread_id, context)
        async for kind, payload in self._astream(start, _RESULT_MODES):
            if kind == "result":
                result = payload
        assert result is not None
        return result

    def resume(self, thread_id: str, decision: Any = "approve", **context: Any) -> CompLLMResult:
        """Continue a run paused for plan review with the reviewer's decision: "approve",
        {"plan": {...}} (an edited plan, validated and routed) or "cancel". An unusable
        decision pauses the run again, with the error in `result.review["error"]`."""
        return _last_result(self._resume(thread_id, decision, context, _RESULT_MODES))

    def stream(
        self,
        query: str,
        *,
        plan: Plan | Mapping[str, Any] | None = None,
        thread_id: str | None = None,
        **context: Any,
    ) -> Iterator[tuple[str, Any]]:
        """Yield (kind, payload) while the run goes: ("update", {node: update}) for each
        node that finishes, ("event", {...}) when a sub-query starts or ends, ("review",
        request) when the run pauses for plan review, and finally ("result", CompLLMResult)."""
        return self._stream(partial(self._start, query, plan, thread_id, context), _STREAM_MODES)

    async def astream(
        self,
        query: str,
        *,
        plan: Plan | Mapping[str, Any] | None = None,
        thread_id: str | None = None,
        **context: Any,
    ) -> AsyncIterator[tuple[str, Any]]:
        """`stream` for async applications (async models are awaited on the event loop)."""
        start = partial(self._start, query, plan, thread_id, context)
        async for item in self._astream(start, _STREAM_MODES):
            yield item

    def stream_resume(
        self, thread_id: str, decision: Any = "approve", **context: Any
    ) -> Iterator[tuple[str, Any]]:
        """`resume`, streamed like `stream`."""
        return self._resume(thread_id, decision, context, _STREAM_MODES)

    def result(self, thread_id: str) -> CompLLMResult | None:
        """What a thread's run has produced so far (None when it has not planned yet)."""
        snapshot = self._snapshot(_config(thread_id))
        if snapshot is None or "plan" not in snapshot.values:
            return None
        review = snapshot.interrupts[0].value if snapshot.interrupts else None
        return CompLLMResult.from_state(snapshot.values, 0.0, thread_id=thread_id, review=review)

    # -- internals -------------------------------------------------------------------------

    # `start` is called when the stream is first read, as a generator's body would be.

    def _stream(
        self, start: Callable[[], _Start], modes: list[StreamMode]
    ) -> Iterator[tuple[str, Any]]:
        begun = start()
        if isinstance(begun, CompLLMResult):
            yield "result", begun
            return
        yield from self._run(*begun, modes)

    async def _astream(
        self, start: Callable[[], _Start], modes: list[StreamMode]
    ) -> AsyncIterator[tuple[str, Any]]:
        begun = start()
        if isinstance(begun, CompLLMResult):
            yield "result", begun
            return
        graph_input, config, run_context = begun
        run = _RunReader(self, config)
        async for chunk in self.graph.astream(
            graph_input, config=config, context=run_context, stream_mode=modes
        ):
            if (item := run.read(chunk)) is not None:
                yield item
        yield run.result()

    def _resume(
        self, thread_id: str, decision: Any, context: dict[str, Any], modes: list[StreamMode]
    ) -> Iterator[tuple[str, Any]]:
        config = _config(thread_id)
        snapshot = self._snapshot(config)
        if snapshot is None or not snapshot.interrupts:
            raise QueryError(f"thread {thread_id!r} has no run waiting for a plan review")
        yield from self._run(Command(resume=decision), config, self._run_context(context), modes)

    def _run(
        self,
        graph_input: Any,
        config: RunnableConfig,
        context: Context,
        modes: list[StreamMode],
    ) -> Iterator[tuple[str, Any]]:
        run = _RunReader(self, config)
        for chunk in self.graph.stream(
            graph_input, config=config, context=context, stream_mode=modes
        ):
            if (item := run.read(chunk)) is not None:
                yield item
        yield run.result()

    def _start(
        self,
        query: str,
        plan: Plan | Mapping[str, Any] | None,
        thread_id: str | None,
        overrides: dict[str, Any],
    ) -> _Start:
        """What a run starts from (graph input, config, context), or the result a thread
        already has. The graph input is None to resume the thread's stopped run."""
        run_context = self._run_context(overrides)
        config = _config(thread_id or uuid.uuid4().hex)
        graph_input = _input(query, plan, run_context.max_query_chars)
        snapshot = self._snapshot(config)
        if snapshot is None:
            return graph_input, config, run_context
        held = snapshot.values.get("query")
        if held != graph_input["query"]:
            raise QueryError(
                f"thread {config['configurable']['thread_id']!r} holds another query "
                f"({held!r}); use a new thread id"
            )
        if snapshot.interrupts or not snapshot.next:
            result = self.result(config["configurable"]["thread_id"])
            if result is not None:
                return result
        return None, config, run_context  # resume: LangGraph reruns only what had not finished

    def _run_context(self, overrides: dict[str, Any]) -> Context:
        unknown_fields(Context, overrides, "Context")
        context = replace(self.context, **overrides)
        if context.review_plan and self.graph.checkpointer is None:
            raise ConfigError(
                "plan review pauses the run, which needs a checkpointer: "
                "CompLLM(checkpointer=...), e.g. compllm.open_checkpointer('memory')"
            )
        return context

    def _snapshot(self, config: RunnableConfig) -> StateSnapshot | None:
        if self.graph.checkpointer is None:
            return None
        snapshot = self.graph.get_state(config)
        return snapshot if snapshot.created_at is not None else None

    def _result(
        self, config: RunnableConfig, state: dict[str, Any], total_s: float
    ) -> CompLLMResult:
        thread_id = config["configurable"]["thread_id"]
        snapshot = self._snapshot(config)
        if snapshot is not None:
            state = snapshot.values
        interrupts = snapshot.interrupts if snapshot is not None else ()
        review = interrupts[0].value if interrupts else None
        return CompLLMResult.from_state(state, total_s, thread_id=thread_id, review=review)


_STREAM_MODES: list[StreamMode] = ["updates", "custom", "values"]
# What a run starts from (graph input, config, context), or the result its thread has.
_Start: TypeAlias = "tuple[Any, RunnableConfig, Context] | CompLLMResult"
# What `invoke` needs (review requests are read from the checkpoint). Without "custom" the
# per-call events cost nothing, and without "updates" no update is copied out: together
# about a third of the framework's own time per sub-query (benchmarks/overhead.py).
_RESULT_MODES: list[StreamMode] = ["values"]


class _RunReader:
    """Turns a run's stream chunks into what `CompLLM.stream` yields, keeping the latest
    state for the result (shared by the sync and async streams)."""

    def __init__(self, app: CompLLM, config: RunnableConfig) -> None:
        self.app, self.config = app, config
        self.state: dict[str, Any] = {}
        self.started = time.perf_counter()

    def read(self, chunk: Any) -> tuple[str, Any] | None:
        mode, payload = chunk
        if mode == "values":
            self.state = cast(dict[str, Any], payload)
            return None
        if mode == "custom":
            return "event", payload
        update = cast(dict[str, Any], payload)
        if "__interrupt__" in update:
            return "review", update["__interrupt__"][0].value
        return "update", update

    def result(self) -> tuple[str, CompLLMResult]:
        elapsed = time.perf_counter() - self.started
        return "result", self.app._result(self.config, self.state, elapsed)


def _last_result(items: Iterator[tuple[str, Any]]) -> CompLLMResult:
    result: CompLLMResult | None = None
    for kind, payload in items:
        if kind == "result":
            result = payload
    assert result is not None
    return result


def _config(thread_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id}}


def _input(query: str, plan: Plan | Mapping[str, Any] | None, max_chars: int) -> InputState:
    query = clean_text(check_query(query, max_chars))
    if plan is None:
        return InputState(query=query.strip())
    # A plan as JSON (an edited one) is validated by the planner node, as the server's is.
    data = plan_data(plan) if isinstance(plan, Plan) else plan
    return InputState(query=query.strip(), plan=data)  # type: ignore[typeddict-item]
