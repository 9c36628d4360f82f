"""Query executor: runs the plan's sub-queries on their experts, in dependency waves.

`schedule` runs after every wave. It marks sub-queries whose parents failed as skipped, and
`dispatch` fans the ready ones out with `Send`, so each expert call is its own node run,
visible in Studio and in the stream; LangGraph runs a wave's sends in parallel, and at most
`Context.max_parallel_experts` model calls run at once. A failing or timed-out call is retried
by the node's retry policy; when the policy gives up, the node's error handler marks the
sub-query failed and the run goes on. Parents' answers reach their children's prompts quoted
as data.
"""

from __future__ import annotations

import concurrent.futures
import time
from typing import TYPE_CHECKING, Any

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langgraph.errors import NodeError
from langgraph.runtime import Runtime
from langgraph.types import Command, RetryPolicy, Send

from compllm.errors import CompLLMError
from compllm.plan import SubQuery
from compllm.prompts import render_prompt
from compllm.state import Context, ExpertTask, NodeFunction, ParentAnswer, State, SubAnswer

if TYPE_CHECKING:
    from compllm.services import Services

__all__ = [
    "DEFAULT_EXPERT_RETRY",
    "ExpertFailure",
    "ExpertTimeoutError",
    "dispatch",
    "make_expert_failed_node",
    "make_expert_node",
    "quote_answer",
    "schedule",
]


class ExpertTimeoutError(TimeoutError):
    """An expert call that ran past `Context.expert_timeout_s`."""


class ExpertFailure(Exception):
    """One failed attempt of an expert call; `cause` is what the model raised."""

    def __init__(self, cause: BaseException, attempt: int, started_at: float) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause, self.attempt, self.started_at = cause, attempt, started_at


def _retryable(exc: Exception) -> bool:
    # Configuration errors (a model that cannot load) fail the same way every time.
    return not isinstance(exc, CompLLMError)


DEFAULT_EXPERT_RETRY = RetryPolicy(
    max_attempts=2, initial_interval=0.5, backoff_factor=2.0, jitter=True, retry_on=_retryable
)


def schedule(state: State) -> dict[str, Any]:
    """Between waves: a sub-query whose parent has no answer is skipped, with the reason."""
    plan, answers = state["plan"], dict(state.get("answers") or {})
    skipped: dict[str, SubAnswer] = {}
    for sid in plan.topological_order():
        if sid in answers:
            continue
        sub = plan.get(sid)
        missing = [d for d in sub.depends_on if d in answers and answers[d].status != "ok"]
        if missing:
            answers[sid] = skipped[sid] = SubAnswer(
                id=sid,
                question=sub.question,
                expert=sub.expert or "",
                status="skipped",
                error=f"not run: it needs {', '.join(missing)}, which has no answer",
            )
    return {"answers": skipped} if skipped else {}


def dispatch(state: State) -> list[Send] | str:
    """Send every ready sub-query to the expert node, or go to the aggregator when none is
    left."""
    plan, answers = state["plan"], state.get("answers") or {}
    ready = [
        sub
        for sub in plan.subqueries
        if sub.id not in answers
        and all(d in answers and answers[d].status == "ok" for d in sub.depends_on)
    ]
    if not ready:
        return "aggregate"
    return [Send("expert", _expert_task(sub, answers)) for sub in ready]


def _expert_task(sub: SubQuery, answers: dict[str, SubAnswer]) -> ExpertTask:
    parents = [
        ParentAnswer(id=d, question=answers[d].question, answer=answers[d].answer)
        for d in sub.depends_on
    ]
    return ExpertTask(id=sub.id, question=sub.question, expert=sub.expert or "", parents=parents)


def quote_answer(text: str) -> str:
    """A parent's answer as inert data inside <result> tags: it cannot close the tag early."""
    return text.replace("</result", "<\\/result").replace("<result", "<\\result")


def make_expert_node(services: Services) -> NodeFunction[ExpertTask]:
    """The expert node: one sub-query, one model call, one answer. Failures raise
    `ExpertFailure` so that the node's retry policy and error handler see them."""

    def expert(state: ExpertTask, *, runtime: Runtime[Context]) -> dict[str, Any]:
        context = runtime.context or Context()
        spec = services.registry(context).expert(state["expert"])
        parents = [
            {**p, "question": p["question"].replace('"', "'"), "answer": quote_answer(p["answer"])}
            for p in state["parents"]
        ]
        messages: list[BaseMessage] = [
            SystemMessage(spec.system_prompt),
            HumanMessage(render_prompt("expert.user", question=state["question"], parents=parents)),
        ]
        base = _identity(state)
        attempt = runtime.execution_info.node_attempt if runtime.execution_info else 1
        with services.expert_slots(context.max_parallel_experts):
            if attempt == 1:
                runtime.stream_writer({"event": "subquery_start", **base})
            started = time.time()
            try:
                model = services.chat_model(spec.model, trust_remote_code=spec.trust_remote_code)
                message = _call_with_timeout(
                    model, messages, spec.generation.model_dump(), context.expert_timeout_s
                )
                text = message.text.strip()
                if not text:
                    raise ValueError("the expert returned an empty answer")
            except CompLLMError:
                raise  # misconfiguration (e.g. a model path that does not exist) stops the run
            except Exception as exc:
                raise ExpertFailure(exc, attempt, _first_start(runtime, started)) from exc
        usage = getattr(message, "usage_metadata", None) or {}
        answer = SubAnswer(
            **base,
            status="ok",
            answer=text,
            output_tokens=usage.get("output_tokens"),
            started_at=_first_start(runtime, started),
            finished_at=time.time(),
            attempts=attempt,
        )
        runtime.stream_writer(_end_event(answer))
        return {"answers": {answer.id: answer}}

    return expert


def make_expert_failed_node(services: Services) -> Any:
    """The expert node's error handler: after the last retry, record the failure as the
    sub-query's answer so that the run finishes and the aggregator can report it."""

    def expert_failed(
        state: ExpertTask, error: NodeError, *, runtime: Runtime[Context]
    ) -> Command[str]:
        failure = error.error
        if not isinstance(failure, ExpertFailure):
            raise failure  # a bug or a configuration error: fail the run loudly
        answer = SubAnswer(
            **_identity(state),
            status="failed",
            error=str(failure),
            started_at=failure.started_at,
            finished_at=time.time(),
            attempts=failure.attempt,
        )
        runtime.stream_writer(_end_event(answer))
        # The handler is its own node: route on to `schedule` as the expert node would have.
        return Command(update={"answers": {answer.id: answer}}, goto="schedule")

    return expert_failed


def _identity(state: ExpertTask) -> dict[str, str]:
    return {"id": state["id"], "question": state["question"], "expert": state["expert"]}


def _first_start(runtime: Runtime[Context], fallback: float) -> float:
    info = runtime.execution_info
    return (info.node_first_attempt_time if info else None) or fallback


def _end_event(answer: SubAnswer) -> dict[str, Any]:
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
    }


def _call_with_timeout(
    model: Any, messages: list[BaseMessage], settings: dict[str, Any], timeout_s: float
) -> Any:
    """`model.invoke` on a thread of its own so that a hung generation cannot hold the run
    past the timeout (the thread itself cannot be killed; its result is discarded)."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    future = pool.submit(model.invoke, messages, **settings)
    try:
        return future.result(timeout=timeout_s)
    except concurrent.futures.TimeoutError:
        raise ExpertTimeoutError(f"no answer within {timeout_s:g} s") from None
    finally:
        pool.shutdown(wait=False)
