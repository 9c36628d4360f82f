"""The library API: `CompLLM.default().invoke("...")`."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import RetryPolicy
from pydantic import BaseModel, ConfigDict

from compllm.errors import QueryError
from compllm.graph import build_graph
from compllm.models import ModelProvider, default_hub
from compllm.plan import Plan, PlannerPath
from compllm.pool import ExpertPool, parse_bytes
from compllm.registry import Registry, load_registry
from compllm.state import Context, InputState, PlannerAttempt, State, SubAnswer

__all__ = ["CompLLM", "CompLLMResult", "RouteInfo"]


class RouteInfo(BaseModel):
    """Where one sub-query went and why (all experts' scores)."""

    model_config = ConfigDict(frozen=True)

    id: str
    question: str
    expert: str
    depends_on: tuple[str, ...]
    scores: dict[str, float]


class CompLLMResult(BaseModel):
    """Everything a run produced: the answer, the plan, the routes and each sub-answer."""

    model_config = ConfigDict(frozen=True)

    query: str
    answer: str
    plan: Plan
    planner_path: PlannerPath
    planner_attempts: list[PlannerAttempt]
    routes: list[RouteInfo]
    answers: list[SubAnswer]
    aggregation: str
    timings: dict[str, float]

    @classmethod
    def from_state(cls, state: dict[str, Any], total_s: float) -> CompLLMResult:
        plan: Plan = state["plan"]
        answers = state.get("answers") or {}
        return cls(
            query=state["query"],
            answer=state["final_answer"],
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
            timings={**(state.get("timings") or {}), "total": total_s},
        )


class CompLLM:
    """A configured Comp-LLM pipeline.

    >>> result = CompLLM.default().invoke("What is 12*7, and what are the symptoms of flu?")
    >>> result.answer, [(r.id, r.expert) for r in result.routes]
    """

    def __init__(
        self,
        *,
        registry: Registry | str | Path | None = None,
        context: Context | None = None,
        provider: ModelProvider | None = None,
        pool: ExpertPool | None = None,
        memory_budget: int | str | None = None,
        retry_policy: RetryPolicy | None = None,
        checkpointer: BaseCheckpointSaver[Any] | None = None,
    ) -> None:
        """registry: an expert registry or its file (default: the built-in experts).
        context: default run settings; keyword arguments of `invoke` override them.
        provider / pool: where models come from and the pool that runs them.
        memory_budget: bytes or a size like "6GB" for the weights loaded at once (a pool of
        its own over `provider`, or over the default hub)."""
        if isinstance(registry, str | Path):
            registry = load_registry(registry)
        self.registry = registry
        self.context = context or Context()
        if memory_budget is not None:
            if pool is not None:
                raise ValueError("give either pool or memory_budget, not both")
            budget = parse_bytes(memory_budget) if isinstance(memory_budget, str) else memory_budget
            pool = ExpertPool(provider or default_hub(), memory_budget_bytes=budget)
        self.graph: CompiledStateGraph[State, Context, InputState, State] = build_graph(
            provider=None if pool is not None else provider,
            registry=registry,
            pool=pool,
            retry_policy=retry_policy,
            checkpointer=checkpointer,
        )

    @classmethod
    def default(cls) -> CompLLM:
        """The built-in experts on the embedded SmolLM2 and MiniLM models (offline)."""
        return cls()

    def _config(self, thread_id: str | None) -> RunnableConfig:
        return {"configurable": {"thread_id": thread_id or uuid.uuid4().hex}}

    def invoke(
        self,
        query: str,
        *,
        plan: Plan | None = None,
        thread_id: str | None = None,
        **context: Any,
    ) -> CompLLMResult:
        """Answer `query`. Keyword arguments override `Context` fields for this run; a given
        `plan` (validated, routed as usual) replaces the planner."""
        started = time.perf_counter()
        state = self.graph.invoke(
            _input(query, plan),
            config=self._config(thread_id),
            context=replace(self.context, **context),
        )
        return CompLLMResult.from_state(state, time.perf_counter() - started)

    async def ainvoke(
        self,
        query: str,
        *,
        plan: Plan | None = None,
        thread_id: str | None = None,
        **context: Any,
    ) -> CompLLMResult:
        """`invoke` for async applications (the nodes run on the event loop's executor)."""
        started = time.perf_counter()
        state = await self.graph.ainvoke(
            _input(query, plan),
            config=self._config(thread_id),
            context=replace(self.context, **context),
        )
        return CompLLMResult.from_state(state, time.perf_counter() - started)

    def stream(
        self,
        query: str,
        *,
        plan: Plan | None = None,
        thread_id: str | None = None,
        **context: Any,
    ) -> Iterator[tuple[str, Any]]:
        """Yield (kind, payload) while the run goes: ("update", {node: update}) for each
        node that finishes, ("event", {...}) when a sub-query starts or ends, and finally
        ("result", CompLLMResult)."""
        started = time.perf_counter()
        config = self._config(thread_id)
        state: dict[str, Any] = {}
        for mode, payload in self.graph.stream(
            _input(query, plan),
            config=config,
            context=replace(self.context, **context),
            stream_mode=["updates", "custom", "values"],
        ):
            if mode == "values":
                state = cast(dict[str, Any], payload)
            elif mode == "custom":
                yield "event", payload
            else:
                yield "update", payload
        yield "result", CompLLMResult.from_state(state, time.perf_counter() - started)


def _input(query: str, plan: Plan | None) -> InputState:
    if not isinstance(query, str) or not query.strip():
        raise QueryError("the query is empty")
    if plan is None:
        return InputState(query=query.strip())
    return InputState(query=query.strip(), plan=plan)
