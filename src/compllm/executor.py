"""Query executor, the parts both schedulers share: which sub-queries may start, in which
order, and how one expert call turns into a `SubAnswer`.

Two schedulers drive these parts:
- `dataflow` (default): one `execute` node starts each sub-query as a LangGraph task as soon
  as its own parents are done, so a slow branch never holds back an unrelated one;
- `waves`: `schedule` and `wave_expert` nodes; every ready sub-query of a wave is a `Send`, and the
  next wave waits for the slowest call of the current one (LangGraph's superstep barrier).

Either way each expert call is its own node run or task, visible in Studio and in the stream,
with `subquery_start` / `subquery_end` custom events. Calls go through the `ExpertPool`
(memory budget, batching, priority). When fewer slots than ready sub-queries are free, those
with the longest remaining chain (weighted by each expert's recent latency) go first.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langgraph.runtime import Runtime
from langgraph.types import RetryPolicy

from compllm.errors import CompLLMError
from compllm.plan import Plan, SubQuery
from compllm.prompts import render_prompt
from compllm.registry import ExpertSpec, Registry
from compllm.state import Context, ExpertTask, ParentAnswer, SubAnswer

if TYPE_CHECKING:
    from compllm.services import Services

__all__ = [
    "DEFAULT_EXPERT_RETRY",
    "ExpertFailure",
    "ExpertTimeoutError",
    "acall_expert",
    "call_expert",
    "end_event",
    "expert_task",
    "expired_answers",
    "failed_answer",
    "priority_order",
    "quote_answer",
    "ready_subqueries",
    "remaining_ranks",
    "skipped_answers",
    "startable",
]


class ExpertTimeoutError(TimeoutError):
    """An expert call that ran past `Context.expert_timeout_s`."""


class ExpertFailure(Exception):
    """One failed attempt of an expert call; `cause` is what the model raised."""

    def __init__(self, cause: BaseException, attempt: int, started_at: float) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause, self.attempt, self.started_at = cause, attempt, started_at

    def __reduce__(self) -> tuple[Any, ...]:  # picklable, as checkpointed task errors are
        return (type(self), (self.cause, self.attempt, self.started_at))


def _retryable(exc: Exception) -> bool:
    # Configuration errors (a model that cannot load or fit) fail the same way every time.
    return not isinstance(exc, CompLLMError)


DEFAULT_EXPERT_RETRY = RetryPolicy(
    max_attempts=2, initial_interval=0.5, backoff_factor=2.0, jitter=True, retry_on=_retryable
)

# -- scheduling --------------------------------------------------------------------------


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


def remaining_ranks(plan: Plan, services: Services) -> dict[str, float]:
    """For each sub-query, the expected length of the longest chain from it to the end of
    the plan (itself included): the sub-query with the highest rank is on the critical path."""
    rank: dict[str, float] = {}
    for sid in reversed(plan.topological_order()):
        own = services.expected_latency(plan.get(sid).expert or "")
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


def expert_task(sub: SubQuery, answers: Mapping[str, SubAnswer], priority: float) -> ExpertTask:
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
    )


# -- one expert call ---------------------------------------------------------------------


def quote_answer(text: str) -> str:
    """A parent's answer as inert data inside <result> tags: it cannot close the tag early."""
    return text.replace("</result", "<\\/result").replace("<result", "<\\result")


class _Call:
    """One attempt at one sub-query: its prompt, its pool call and its outcome."""

    def __init__(self, services: Services, task: ExpertTask, runtime: Runtime[Context]) -> None:
        self.services, self.task, self.runtime = services, task, runtime
        self.context = runtime.context or Context()
        info = runtime.execution_info
        self.attempt = info.node_attempt if info else 1
        self.started_at = (info.node_first_attempt_time if info else None) or time.time()

    def prepare(self) -> tuple[ExpertSpec, list[BaseMessage]]:
        spec = self.services.registry(self.context).expert(self.task["expert"])
        parents = [
            {**p, "question": p["question"].replace('"', "'"), "answer": quote_answer(p["answer"])}
            for p in self.task["parents"]
        ]
        messages: list[BaseMessage] = [
            SystemMessage(spec.system_prompt),
            HumanMessage(
                render_prompt("expert.user", question=self.task["question"], parents=parents)
            ),
        ]
        if self.attempt == 1 or "fallback_from" in self.task:
            self.runtime.stream_writer({"event": "subquery_start", **_identity(self.task)})
        return spec, messages

    def pool_arguments(self, spec: ExpertSpec, messages: list[BaseMessage]) -> dict[str, Any]:
        return {
            "ref": spec.model,
            "messages": messages,
            "settings": spec.generation.model_dump(),
            "trust_remote_code": spec.trust_remote_code,
            "priority": self.task["priority"],
            "max_batch_size": self.context.max_batch_size,
        }

    def fallback_task(self, failure: ExpertFailure) -> ExpertTask | None:
        """This sub-query for the expert's fallback, after the expert's last attempt failed
        (None without a fallback, before the last attempt, or when this is the fallback)."""
        if "fallback_from" in self.task or self.attempt < self.services.expert_attempts:
            return None
        registry = self.services.registry(self.context)
        expert = self.task["expert"]
        fallback = registry.expert(expert).fallback if expert in registry.names else None
        if fallback is None:
            return None
        backup = ExpertTask(**self.task)  # a copy: the failed task stays as it was
        backup["expert"] = fallback
        backup["fallback_from"] = expert
        backup["fallback_reason"] = str(failure)
        return backup

    def timeout(self) -> ExpertFailure:
        limit = self.context.expert_timeout_s
        return self.failure(ExpertTimeoutError(f"no answer within {limit:g} s"))

    def failure(self, exc: BaseException) -> ExpertFailure:
        return ExpertFailure(exc, self.attempt, self.started_at)

    def answer(self, message: AIMessage) -> SubAnswer:
        text = message.text.strip()
        if not text:
            raise self.failure(ValueError("the expert returned an empty answer"))
        usage = message.usage_metadata
        answer = SubAnswer(
            **_identity(self.task),
            status="ok",
            answer=text,
            output_tokens=usage["output_tokens"] if usage else None,
            started_at=self.started_at,
            finished_at=time.time(),
            attempts=self.attempt,
            fallback_from=self.task.get("fallback_from"),
            fallback_reason=self.task.get("fallback_reason"),
        )
        self.services.observe_latency(answer.expert, time.time() - self.started_at)
        self.runtime.stream_writer(end_event(answer))
        return answer


def call_expert(services: Services, task: ExpertTask, runtime: Runtime[Context]) -> SubAnswer:
    """Answer one sub-query (blocking). Raises `ExpertFailure` for the retry policy, and
    configuration errors (`CompLLMError`) as they are. After the expert's last attempt, its
    fallback expert (if it names one) gets one try."""
    call = _Call(services, task, runtime)
    try:
        return _call_once(call)
    except ExpertFailure as failure:
        backup = call.fallback_task(failure)
        if backup is None:
            raise
        try:
            return _call_once(_Call(services, backup, runtime))
        except ExpertFailure as second:
            raise call.failure(_BothFailed(failure, backup["expert"], second)) from None


async def acall_expert(
    services: Services, task: ExpertTask, runtime: Runtime[Context]
) -> SubAnswer:
    """`call_expert` for async runs: waiting holds no thread, and a timeout cancels the
    call (queued calls leave the queue; async-native models see the cancellation)."""
    call = _Call(services, task, runtime)
    try:
        return await _acall_once(call)
    except ExpertFailure as failure:
        backup = call.fallback_task(failure)
        if backup is None:
            raise
        try:
            return await _acall_once(_Call(services, backup, runtime))
        except ExpertFailure as second:
            raise call.failure(_BothFailed(failure, backup["expert"], second)) from None


class _BothFailed(RuntimeError):
    def __init__(self, first: ExpertFailure, fallback: str, second: ExpertFailure) -> None:
        super().__init__(f"{first}; then its fallback {fallback}: {second}")


def _call_once(call: _Call) -> SubAnswer:
    future = call.services.pool.call(**call.pool_arguments(*call.prepare()))
    try:
        message = future.result(timeout=call.context.expert_timeout_s)
    except concurrent.futures.TimeoutError:
        future.cancel()  # still queued: it never runs; running: its result is dropped
        raise call.timeout() from None
    except CompLLMError:
        raise
    except Exception as exc:
        raise call.failure(exc) from exc
    return call.answer(message)


async def _acall_once(call: _Call) -> SubAnswer:
    services = call.services
    request = services.pool.acall(**call.pool_arguments(*call.prepare()))
    try:
        message = await asyncio.wait_for(request, timeout=call.context.expert_timeout_s)
    except TimeoutError:
        raise call.timeout() from None
    except CompLLMError:
        raise
    except Exception as exc:
        raise call.failure(exc) from exc
    return call.answer(message)


def failed_answer(task: ExpertTask, failure: BaseException) -> SubAnswer:
    """The recorded outcome of a sub-query whose retries all failed."""
    attempt = failure.attempt if isinstance(failure, ExpertFailure) else 1
    started = failure.started_at if isinstance(failure, ExpertFailure) else None
    return SubAnswer(
        **_identity(task),
        status="failed",
        error=str(failure),
        started_at=started,
        finished_at=time.time(),
        attempts=attempt,
    )


def _identity(task: ExpertTask) -> dict[str, str]:
    return {"id": task["id"], "question": task["question"], "expert": task["expert"]}


def end_event(answer: SubAnswer) -> dict[str, Any]:
    return {
        "event": "subquery_end",
        "id": answer.id,
        "question": answer.question,
        "expert": answer.expert,
        "status": answer.status,
        "answer": answer.answer,
        "latency_s": answer.latency_s,
        "output_tokens": answer.output_tokens,
        "attempts": answer.attempts,
        "error": answer.error,
        "fallback_from": answer.fallback_from,
    }
