"""How one expert call happens: what each kind of expert model receives and returns, and how
one attempt becomes a `SubAnswer` (timeout, retry decision, fallback expert).

An expert's `model` (see `compllm.registry.Expert`) is one of four kinds:

- **a reference string** (hub id, local path, `embedded:*`, `openai:...`): loaded by the model
  hub and called through the `ExpertPool` (memory budget, batching, priorities), with the
  expert's system prompt and its generation settings in compllm's names, which compllm's
  own model classes understand;
- **a chat model object** (`BaseChatModel`): called with `[SystemMessage(system prompt),
  HumanMessage(the sub-question and the parents' answers)]`. Only the generation settings the
  expert sets explicitly are applied, through the model's own fields (`max_tokens`,
  `temperature`, ...), never as unknown keyword arguments;
- **a Runnable** (a chain, a compiled graph such as a ReAct agent, a `@tool`): invoked with
  an `ExpertInput` dict, `{"question", "parents", "query", "messages"}`, where `messages`
  is `[HumanMessage(the sub-question and the parents' answers)]`, so graphs over a
  `messages` state take it as it is. A tool with one argument gets the question string;
- **a function** (sync or async): called with the `ExpertInput` fields its parameters name
  (`question`, `parents`, `query`, `messages`; a single other parameter gets the question).

Runnables and functions may return a string, a message, or a dict with `answer`, `output`,
`final_answer` or `messages` (the last message's text). Every call gets the run's config
(callbacks, tags, metadata `compllm_subquery`/`compllm_expert`), so streaming and tracing see
each expert call as its own run; a compiled graph runs as a subgraph.

Errors: configuration errors (`CompLLMError`) fail the run; a call that raises `TypeError`
(a model given arguments it does not take, a function with the wrong signature), returns
nothing usable, or is an input the expert cannot handle (`ValueError` from a function such as
the calculator) is not retried; anything else (timeouts, server errors) is retried by the
retry policy. After the last attempt the expert's `fallback`, if it names one, answers once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import threading
import time
from collections.abc import Awaitable, Callable, Generator, Mapping
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
from langchain_core.runnables.config import merge_configs
from langchain_core.tools import BaseTool
from langgraph.types import RetryPolicy

from compllm.errors import CompLLMError
from compllm.prompts import render_prompt
from compllm.registry import Expert, GenerationSettings
from compllm.state import Context, ExpertTask, ParentAnswer, SubAnswer

if TYPE_CHECKING:
    from compllm.pool import ExpertPool
    from compllm.services import Services

__all__ = [
    "DEFAULT_EXPERT_RETRY",
    "ExpertFailure",
    "ExpertInput",
    "ExpertOutputError",
    "ExpertTimeoutError",
    "answer_text",
    "configured_chat_model",
    "expert_kind",
    "expert_steps",
    "failed_answer",
    "invoke_model",
    "quote_answer",
]

ExpertKind = Literal["reference", "chat", "runnable"]


class ExpertInput(TypedDict):
    """What a Runnable or function expert receives."""

    question: str
    parents: list[ParentAnswer]
    query: str
    messages: list[BaseMessage]


class ExpertTimeoutError(TimeoutError):
    """An expert call that ran past `Context.expert_timeout_s`."""


class ExpertOutputError(TypeError):
    """An expert that returned something that is not an answer."""


class ExpertFailure(Exception):
    """One failed attempt of an expert call; `cause` is what the model raised."""

    def __init__(
        self, cause: BaseException, attempt: int, started_at: float, retryable: bool = True
    ) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause, self.attempt, self.started_at = cause, attempt, started_at
        self.retryable = retryable

    def __reduce__(self) -> tuple[Any, ...]:  # picklable, as checkpointed task errors are
        return (type(self), (self.cause, self.attempt, self.started_at, self.retryable))


def _retryable(exc: Exception) -> bool:
    return isinstance(exc, ExpertFailure) and exc.retryable


DEFAULT_EXPERT_RETRY = RetryPolicy(
    max_attempts=2, initial_interval=0.5, backoff_factor=2.0, jitter=True, retry_on=_retryable
)


def _is_retryable_cause(exc: BaseException) -> bool:
    # The same call fails the same way again: wrong arguments, unusable output, an input the
    # expert cannot handle. Transient failures (timeouts, servers, networks) are worth another try.
    return not isinstance(exc, TypeError | ValueError | NotImplementedError | AttributeError)


# -- kinds of expert models --------------------------------------------------------------


def expert_kind(expert: Expert) -> ExpertKind:
    if isinstance(expert.model, str):
        return "reference"
    if isinstance(expert.model, BaseChatModel):
        return "chat"
    return "runnable"


def quote_answer(text: str) -> str:
    """A parent's answer as inert data inside <result> tags: it cannot close the tag early."""
    return text.replace("</result", "<\\/result").replace("<result", "<\\result")


def user_message(question: str, parents: list[ParentAnswer]) -> HumanMessage:
    quoted = [
        {**p, "question": p["question"].replace('"', "'"), "answer": quote_answer(p["answer"])}
        for p in parents
    ]
    return HumanMessage(render_prompt("expert.user", question=question, parents=quoted))


_SETTING_FIELDS = {
    "max_new_tokens": (
        "max_tokens",
        "max_new_tokens",
        "max_completion_tokens",
        "max_output_tokens",
        "num_predict",
    ),
    "temperature": ("temperature",),
    "top_p": ("top_p",),
    "repetition_penalty": ("repetition_penalty", "repeat_penalty"),
}
_configured: dict[tuple[int, str], BaseChatModel] = {}
_configured_lock = threading.Lock()


def configured_chat_model(model: BaseChatModel, generation: GenerationSettings) -> BaseChatModel:
    """`model` with the generation settings the expert set explicitly, through the model's
    own fields (a copy, made once per model and settings). Settings the model has no field
    for are left out: a chat model rejects keyword arguments it does not know."""
    wanted = {name: getattr(generation, name) for name in generation.model_fields_set}
    fields = type(model).model_fields
    update = {}
    for name, value in wanted.items():
        field = next((f for f in _SETTING_FIELDS.get(name, ()) if f in fields), None)
        if field is not None:
            update[field] = value
    if not update:
        return model
    key = (id(model), repr(sorted(update.items())))
    with _configured_lock:
        if key not in _configured:
            _configured[key] = model.model_copy(update=update)
        return _configured[key]


_runnables: dict[int, tuple[object, Runnable[Any, Any]]] = {}
_runnables_lock = threading.Lock()


def as_runnable(model: object) -> Runnable[Any, Any]:
    """A Runnable for an expert's model object (functions are wrapped once)."""
    if isinstance(model, Runnable):
        return model
    with _runnables_lock:
        cached = _runnables.get(id(model))
        if cached is None or cached[0] is not model:
            cached = (model, _function_runnable(model))  # type: ignore[arg-type]
            _runnables[id(model)] = cached
        return cached[1]


# What a function may name: an expert's input fields, and `parts` (an aggregator's
# sub-answers, as dicts; a planner or aggregator function gets only what its call has).
_INPUT_NAMES = ("question", "parents", "query", "messages", "parts")


def _function_runnable(function: Callable[..., Any]) -> Runnable[Any, Any]:
    target = function if inspect.isroutine(function) else type(function).__call__
    parameters = inspect.signature(function).parameters
    named = [p for p in parameters if p in _INPUT_NAMES]
    if not named and len(parameters) != 1:
        raise TypeError(
            f"expert function {getattr(function, '__name__', function)!r} must take the "
            f"question as its one parameter, or name some of: {', '.join(_INPUT_NAMES)}"
        )

    def arguments(expert_input: ExpertInput) -> dict[str, Any]:
        if named:  # a name the call has no value for is a TypeError: not retried
            return {p: expert_input[p] for p in named if p in expert_input}  # type: ignore[literal-required]
        return {next(iter(parameters)): expert_input["question"]}

    name = getattr(function, "__name__", type(function).__name__)
    if inspect.iscoroutinefunction(target):

        async def call_async(expert_input: ExpertInput) -> Any:
            return await function(**arguments(expert_input))

        def call_blocking(expert_input: ExpertInput) -> Any:
            return asyncio.run(call_async(expert_input))  # a sync run: no loop on this thread

        return RunnableLambda(call_blocking, afunc=call_async, name=name)

    def call(expert_input: ExpertInput) -> Any:
        return function(**arguments(expert_input))

    return RunnableLambda(call, name=name)


def runnable_input(runnable: Runnable[Any, Any], expert_input: ExpertInput) -> Any:
    """What `runnable` is invoked with: the question for a one-argument tool, else the
    whole `ExpertInput`."""
    if isinstance(runnable, BaseTool) and len(runnable.args) == 1:
        return expert_input["question"]
    return expert_input


_ANSWER_KEYS = ("answer", "output", "final_answer")


def answer_text(output: object) -> str:
    """The answer in what an expert returned (see the module doc), or `ExpertOutputError`."""
    if isinstance(output, str):
        return output
    if isinstance(output, BaseMessage):
        return output.text
    if isinstance(output, Mapping):
        for key in _ANSWER_KEYS:
            if key in output:
                return answer_text(output[key])
        messages = output.get("messages")
        if isinstance(messages, list) and messages and isinstance(messages[-1], BaseMessage):
            return messages[-1].text
    raise ExpertOutputError(
        f"returned {type(output).__name__}; an expert returns a string, a message, or a dict "
        f"with one of {', '.join(_ANSWER_KEYS)} or messages"
    )


def invoke_model(
    pool: ExpertPool,
    model: object,
    messages: list[BaseMessage],
    *,
    settings: Mapping[str, Any],
    payload: object,
    config: RunnableConfig | None,
) -> object:
    """One blocking call to a planner or aggregator model of any kind: a reference string
    (loaded and pinned by the pool, called with compllm's `settings`), a chat model object
    (with `messages`, as configured), or a Runnable or function (with `payload`). Returns
    what the model returned (`answer_text` reads it)."""
    if isinstance(model, str):
        with pool.lease(model) as llm:
            return llm.invoke(messages, config, **settings)
    if isinstance(model, BaseChatModel):
        return model.invoke(messages, config)
    runnable = as_runnable(model)
    return runnable.invoke(payload, config)


# -- one call ------------------------------------------------------------------------------


class _Invocation:
    """One call to make: the same work, blocking or awaited."""

    def __init__(
        self,
        blocking: Callable[[], concurrent.futures.Future[Any]],
        awaited: Callable[[], Awaitable[Any]],
        timeout_s: float,
    ) -> None:
        self.blocking, self.awaited, self.timeout_s = blocking, awaited, timeout_s

    def wait(self) -> Any:
        future = self.blocking()
        try:
            return future.result(timeout=self.timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()  # still queued: it never runs; running: its result is dropped
            raise ExpertTimeoutError(f"no answer within {self.timeout_s:g} s") from None

    async def wait_async(self) -> Any:
        try:
            return await asyncio.wait_for(self.awaited(), timeout=self.timeout_s)
        except TimeoutError:
            raise ExpertTimeoutError(f"no answer within {self.timeout_s:g} s") from None


class _Call:
    """One attempt at one sub-query: its input, its invocation and its outcome."""

    def __init__(
        self,
        services: Services,
        context: Context,
        task: ExpertTask,
        config: RunnableConfig,
        attempt: int,
        started_at: float,
        write: Callable[[Any], None],
    ) -> None:
        self.services, self.context, self.task = services, context, task
        self.attempt, self.started_at, self.write = attempt, started_at, write
        self.expert = services.registry(context).expert(task["expert"])
        self.config = merge_configs(
            config,
            {
                "run_name": f"expert:{self.expert.name}",
                "tags": [f"compllm:expert:{self.expert.name}"],
                "metadata": {"compllm_subquery": task["id"], "compllm_expert": task["expert"]},
            },
        )

    def invocation(self) -> _Invocation:
        if self.attempt == 1 or "fallback_from" in self.task:
            self.write({"event": "subquery_start", **_identity(self.task)})
        expert, task, pool = self.expert, self.task, self.services.pool
        user = user_message(task["question"], task["parents"])
        chat = [SystemMessage(expert.prompt), user]
        timeout = self.context.expert_timeout_s
        kind = expert_kind(expert)
        if kind == "reference":
            arguments: dict[str, Any] = {
                "ref": expert.reference,
                "messages": chat,
                "settings": expert.generation.model_dump(),
                "trust_remote_code": expert.trust_remote_code,
                "priority": task["priority"],
                "max_batch_size": self.context.max_batch_size,
                "config": self.config,
            }
            return _Invocation(
                lambda: pool.call(**arguments), lambda: pool.acall(**arguments), timeout
            )
        if kind == "chat":
            model = configured_chat_model(expert.model, expert.generation)
            return _Invocation(
                lambda: pool.submit(model.invoke, chat, self.config),
                lambda: model.ainvoke(chat, self.config),
                timeout,
            )
        runnable = as_runnable(expert.model)
        payload = runnable_input(
            runnable,
            ExpertInput(
                question=task["question"],
                parents=list(task["parents"]),
                query=task.get("query", ""),
                messages=[user],
            ),
        )
        return _Invocation(
            lambda: pool.submit(runnable.invoke, payload, self.config),
            lambda: runnable.ainvoke(payload, self.config),
            timeout,
        )

    def fallback_task(self, failure: ExpertFailure) -> ExpertTask | None:
        """This sub-query for the expert's fallback, after the expert's last attempt failed
        (None without a fallback, before the last attempt, or when this is the fallback)."""
        last = not failure.retryable or self.attempt >= self.services.expert_attempts
        if "fallback_from" in self.task or not last or self.expert.fallback is None:
            return None
        backup = ExpertTask(**self.task)  # a copy: the failed task stays as it was
        backup["expert"] = self.expert.fallback
        backup["fallback_from"] = self.expert.name
        backup["fallback_reason"] = str(failure)
        return backup

    def failure(self, exc: BaseException) -> ExpertFailure:
        if isinstance(exc, ExpertFailure):
            return exc
        return ExpertFailure(exc, self.attempt, self.started_at, _is_retryable_cause(exc))

    def answer(self, output: object) -> SubAnswer:
        try:
            text = answer_text(output).strip()
        except ExpertOutputError as exc:
            raise self.failure(exc) from None
        if not text:
            raise self.failure(RuntimeError("the expert returned an empty answer"))
        usage = getattr(output, "usage_metadata", None)
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
        self.write(end_event(answer))
        return answer


def expert_steps(
    services: Services,
    context: Context,
    task: ExpertTask,
    config: RunnableConfig,
    *,
    attempt: int,
    started_at: float,
    write: Callable[[Any], None],
) -> Generator[_Invocation, Any, SubAnswer]:
    """Answer one sub-query, written once for sync and async runs: yields the invocation
    to make and receives its output (or has its error thrown in). Raises `ExpertFailure`
    for the retry policy and `CompLLMError` as it is. Drive it with `compllm.steps`."""
    call = _Call(services, context, task, config, attempt, started_at, write)
    try:
        return (yield from _attempt(call))
    except ExpertFailure as failure:
        backup_task = call.fallback_task(failure)
        if backup_task is None:
            raise
        backup = _Call(services, context, backup_task, config, attempt, started_at, write)
        try:
            return (yield from _attempt(backup))
        except ExpertFailure as second:
            both = _BothFailed(failure, backup_task["expert"], second)
            raise ExpertFailure(both, attempt, started_at, retryable=failure.retryable) from None


def _attempt(call: _Call) -> Generator[_Invocation, Any, SubAnswer]:
    try:
        output = yield call.invocation()
    except CompLLMError:
        raise
    except Exception as exc:
        raise call.failure(exc) from exc
    return call.answer(output)


class _BothFailed(RuntimeError):
    def __init__(self, first: ExpertFailure, fallback: str, second: ExpertFailure) -> None:
        super().__init__(f"{first}; then its fallback {fallback}: {second}")


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
