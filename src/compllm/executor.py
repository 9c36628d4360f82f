"""Query executor: runs the plan's sub-queries on their experts, in dependency waves.

`schedule` runs after every wave. It marks sub-queries whose parents failed as skipped, and
`dispatch` fans the ready ones out with `Send`, so each expert call is its own node run,
visible in Studio and in the stream; LangGraph runs a wave's sends in parallel (bounded by
`Context.max_parallel_experts`). Inside the expert node the model call is a LangGraph task with a
retry policy and a timeout; when it still fails, the sub-query is marked failed and the run
goes on. Parents' answers reach their children's prompts quoted as data.
"""

from __future__ import annotations

import concurrent.futures
import time
from typing import TYPE_CHECKING, Any

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langgraph.config import get_stream_writer
from langgraph.func import task
from langgraph.runtime import Runtime
from langgraph.types import RetryPolicy, Send

from compllm.errors import CompLLMError
from compllm.plan import SubQuery
from compllm.prompts import render_prompt
from compllm.state import Context, ExpertTask, NodeFunction, ParentAnswer, State, SubAnswer

if TYPE_CHECKING:
    from compllm.services import Services

__all__ = [
    "DEFAULT_EXPERT_RETRY",
    "ExpertTimeoutError",
    "dispatch",
    "make_expert_node",
    "quote_answer",
    "schedule",
]


class ExpertTimeoutError(TimeoutError):
    """An expert call that ran past `Context.expert_timeout_s`."""


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


def make_expert_node(
    services: Services, retry_policy: RetryPolicy | None = None
) -> NodeFunction[ExpertTask]:
    """The expert node: one sub-query, one expert call (a retried task), one answer."""

    def call_model(
        model_ref: str,
        trust_remote_code: bool,
        messages: list[BaseMessage],
        settings: dict[str, Any],
        timeout_s: float,
        attempts: list[int],
    ) -> dict[str, Any]:
        attempts.append(1)
        model = services.chat_model(model_ref, trust_remote_code=trust_remote_code)
        # A thread of its own so that a hung generation cannot hold the run past the timeout
        # (the thread itself cannot be killed; its result is discarded).
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        future = pool.submit(model.invoke, messages, **settings)
        try:
            message = future.result(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            raise ExpertTimeoutError(f"no answer within {timeout_s:g} s") from None
        finally:
            pool.shutdown(wait=False)
        usage = getattr(message, "usage_metadata", None) or {}
        text = message.text.strip()
        if not text:
            raise ValueError("the expert returned an empty answer")
        return {"text": text, "output_tokens": usage.get("output_tokens")}

    # A LangGraph task: retried by the policy, and visible as its own task in the stream.
    call_expert: Any = task(name="call_expert", retry_policy=retry_policy or DEFAULT_EXPERT_RETRY)(
        call_model  # type: ignore[arg-type]  # mypy cannot infer the ParamSpec through task()
    )

    def expert(state: ExpertTask, *, runtime: Runtime[Context]) -> dict[str, Any]:
        context = runtime.context or Context()
        spec = services.registry(context).expert(state["expert"])
        write = get_stream_writer()
        parents = [{**p, "answer": quote_answer(p["answer"])} for p in state["parents"]]
        messages: list[BaseMessage] = [
            SystemMessage(spec.system_prompt),
            HumanMessage(render_prompt("expert.user", question=state["question"], parents=parents)),
        ]
        base = {"id": state["id"], "question": state["question"], "expert": spec.name}
        attempts: list[int] = []
        with services.expert_slots(context.max_parallel_experts):
            write({"event": "subquery_start", **base})
            started = time.time()
            try:
                result: dict[str, Any] = call_expert(
                    spec.model,
                    spec.trust_remote_code,
                    messages,
                    spec.generation.model_dump(),
                    context.expert_timeout_s,
                    attempts,
                ).result()
                answer = SubAnswer(
                    **base,
                    status="ok",
                    answer=result["text"],
                    output_tokens=result["output_tokens"],
                    started_at=started,
                    finished_at=time.time(),
                    attempts=len(attempts),
                )
            except CompLLMError:
                raise  # misconfiguration (e.g. a model path that does not exist) stops the run
            except Exception as exc:  # the retry policy gave up: record it, finish the run
                answer = SubAnswer(
                    **base,
                    status="failed",
                    error=f"{type(exc).__name__}: {exc}",
                    started_at=started,
                    finished_at=time.time(),
                    attempts=len(attempts),
                )
        write(
            {
                "event": "subquery_end",
                **base,
                "status": answer.status,
                "answer": answer.answer,
                "latency_s": answer.latency_s,
                "output_tokens": answer.output_tokens,
                "error": answer.error,
            }
        )
        return {"answers": {answer.id: answer}}

    return expert
