"""Graph state and run-time context.

State holds plain data only (strings, numbers, lists, dicts), so every checkpointer (memory,
SQLite, PostgreSQL, the LangGraph server's strict msgpack) restores exactly what was written,
and Studio shows it as JSON. The plan is `Plan.model_dump(mode="json")`, each answer
`SubAnswer.model_dump(mode="json")`. This module is the one place that converts: nodes read
with `state_plan`/`state_answers` and write with `plan_data`/`answers_data`.

State fields have reducers and no defaults: what a node did not write is simply absent.
`Context` is the `context_schema`: plain, described fields that Studio renders as a form.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Annotated, Any, Literal, NotRequired, Protocol, TypeVar

from langgraph.runtime import Runtime
from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict  # pydantic needs it for JSON schemas on < 3.12

from compllm.models import EMBEDDED_CHAT_MODEL, EMBEDDED_EMBEDDINGS, EMBEDDED_PLANNER
from compllm.plan import DEFAULT_MAX_SUBQUERIES, Plan, PlannerPath
from compllm.registry import MAX_NEW_TOKENS
from compllm.validation import check_fields

__all__ = [
    "Context",
    "ExpertTask",
    "InputState",
    "NodeFunction",
    "ParentAnswer",
    "PlannerAttempt",
    "State",
    "SubAnswer",
    "answers_data",
    "merge_answers",
    "plan_data",
    "run_context",
    "state_answers",
    "state_plan",
    "time_left",
]

AnswerStatus = Literal["ok", "failed", "skipped"]
MAX_PLAN_SIZE = 256  # most sub-queries (and slots, and batch) a run may ask for
MAX_QUERY_CHARS = 1_000_000  # the most Context.max_query_chars may allow


class SubAnswer(BaseModel):
    """What happened to one sub-query: its answer or why there is none, and its timings."""

    model_config = ConfigDict(frozen=True)

    id: str
    question: str
    expert: str
    status: AnswerStatus
    answer: str = ""
    error: str | None = None
    started_at: float | None = Field(default=None, description="Unix time the call started.")
    finished_at: float | None = Field(default=None, description="Unix time the call ended.")
    attempts: int = 0
    output_tokens: int | None = None
    fallback_from: str | None = Field(
        default=None, description="The expert that failed before `expert` answered."
    )
    fallback_reason: str | None = Field(default=None, description="Why that expert failed.")

    @property
    def latency_s(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at

    def end_event(self) -> dict[str, Any]:
        """The `subquery_end` custom event the executors stream for this answer."""
        return {
            "event": "subquery_end",
            **self.model_dump(
                include={
                    "id",
                    "question",
                    "expert",
                    "status",
                    "answer",
                    "output_tokens",
                    "attempts",
                    "error",
                    "fallback_from",
                }
            ),
            "latency_s": self.latency_s,
        }


class PlannerAttempt(BaseModel):
    """One try at planning, kept so users can see why a path was taken."""

    model_config = ConfigDict(frozen=True)

    source: Literal["learned", "llm", "llm-retry", "rules"]
    output: str
    error: str | None = None


class ParentAnswer(TypedDict):
    id: str
    question: str
    answer: str


class ExpertTask(TypedDict):
    """The payload of one `Send` to the expert node."""

    id: str
    question: str
    expert: str
    parents: list[ParentAnswer]
    priority: float  # the sub-query's remaining critical path: higher goes first
    query: NotRequired[str]  # the user's whole query (function and Runnable experts get it)
    fallback_from: NotRequired[str]  # set when this is a retry on the expert's fallback
    fallback_reason: NotRequired[str]


def state_plan(state: Mapping[str, Any]) -> Plan:
    """The run's plan, from its plain data (a `Plan` written by older code reads the same)."""
    return Plan.from_data(state["plan"])


def state_answers(state: Mapping[str, Any]) -> dict[str, SubAnswer]:
    """The answers so far, from their plain data."""
    return {
        sid: a if isinstance(a, SubAnswer) else SubAnswer.model_validate(a)
        for sid, a in (state.get("answers") or {}).items()
    }


def plan_data(plan: Plan) -> dict[str, Any]:
    """A plan as state holds it."""
    return plan.model_dump(mode="json")


def answers_data(answers: Mapping[str, SubAnswer]) -> dict[str, dict[str, Any]]:
    """Answers as state holds them."""
    return {sid: answer.model_dump(mode="json") for sid, answer in answers.items()}


def merge_answers(current: dict[str, Any] | None, update: dict[str, Any] | None) -> dict[str, Any]:
    """Reducer: parallel experts each add their own answer; none is ever dropped."""
    return {**(current or {}), **(update or {})}


def merge_timings(
    current: dict[str, float] | None, update: dict[str, float] | None
) -> dict[str, float]:
    """Reducer: each stage adds its own duration (seconds)."""
    return {**(current or {}), **(update or {})}


_NodeInput = TypeVar("_NodeInput", contravariant=True)


class NodeFunction(Protocol[_NodeInput]):
    """A node: reads its input (state or a `Send` payload) and the run's context."""

    def __call__(self, state: _NodeInput, *, runtime: Runtime[Context]) -> dict[str, Any]: ...


class SubQueryInput(TypedDict):
    id: str
    question: str
    depends_on: NotRequired[list[str]]
    expert: NotRequired[str | None]


class PlanInput(TypedDict):
    subqueries: list[SubQueryInput]


class InputState(TypedDict):
    query: Annotated[str, Field(min_length=1, description="The question to answer.")]
    # A plan given with the query (a gold decomposition, or one edited by a person) skips
    # the planner; it is validated like any other.
    plan: NotRequired[PlanInput]


class State(TypedDict):
    query: str
    plan: dict[str, Any]  # Plan.model_dump(mode="json")
    planner_path: PlannerPath
    planner_attempts: Annotated[list[dict[str, Any]], operator.add]  # PlannerAttempt dumps
    answers: Annotated[dict[str, dict[str, Any]], merge_answers]  # id -> SubAnswer dump
    final_answer: str
    aggregation: Literal["passthrough", "llm", "concatenated", "none"]
    aggregation_error: str  # why the aggregator model's answer was not used, when it was not
    timings: Annotated[dict[str, float], merge_timings]
    run_started_at: float  # Unix time the run began (its first start, when resumed)


@dataclass(kw_only=True)
class Context:
    """Run-time settings. Every field can be set per run (`context=Context(...)`)."""

    registry_path: Annotated[str, Field(min_length=1)] | None = field(
        default=None,
        metadata={"description": "Expert registry file (YAML/TOML); empty = built-in experts."},
    )
    planner_model: Annotated[str, Field(min_length=1)] = field(
        default=EMBEDDED_PLANNER,
        metadata={
            "description": "What splits the query: the learned planner (embedded:compllm-planner "
            "or a folder from `compllm train-planner`), or an LLM (hub id, local path, "
            "openai:..., embedded:smollm2-135m-instruct)."
        },
    )
    aggregator_model: Annotated[str, Field(min_length=1)] = field(
        default=EMBEDDED_CHAT_MODEL,
        metadata={"description": "Model that writes the final answer from the experts' answers."},
    )
    embedding_model: Annotated[str, Field(min_length=1)] = field(
        default=EMBEDDED_EMBEDDINGS,
        metadata={"description": "Sentence-embedding model used to route sub-queries."},
    )
    planner_mode: Literal["auto", "learned", "llm", "rules"] = field(
        default="auto",
        metadata={
            "description": "auto: the planner_model, with fallbacks (an LLM planner's plan "
            "is kept only when it passes the checks, else the learned plan); learned: the "
            "learned planner; llm: the LLM, failing instead of falling back; rules: the "
            "rule-based decomposer."
        },
    )
    routing_threshold: Annotated[float, Field(ge=-1.0, le=1.0)] | None = field(
        default=None,
        metadata={
            "description": "Minimum routing score; below it the generalist answers. "
            "Empty = the registry's value."
        },
    )
    max_subqueries: Annotated[int, Field(gt=0, le=MAX_PLAN_SIZE)] = field(
        default=DEFAULT_MAX_SUBQUERIES,
        metadata={"description": "Largest plan accepted from the planner."},
    )
    planner_max_new_tokens: Annotated[int, Field(gt=0, le=MAX_NEW_TOKENS)] = field(
        default=320, metadata={"description": "Token budget of the planner's JSON plan."}
    )
    aggregator_max_new_tokens: Annotated[int, Field(gt=0, le=MAX_NEW_TOKENS)] = field(
        default=256, metadata={"description": "Token budget of the final answer."}
    )
    stream_plan: bool = field(
        default=True,
        metadata={
            "description": "With an LLM planner, start each sub-query's expert as soon as the "
            "planner has written it, while it writes the rest (the final plan is still "
            "checked as a whole; answers it does not keep are dropped)."
        },
    )
    review_plan: bool = field(
        default=False,
        metadata={
            "description": "Pause after routing so a person can approve, edit or cancel "
            "the plan before any expert runs (needs a checkpointer; Studio has one)."
        },
    )
    executor: Literal["dataflow", "waves"] = field(
        default="dataflow",
        metadata={
            "description": "dataflow: each sub-query starts as soon as its own parents are "
            "done; waves: in dependency waves, each wave waiting for its slowest call."
        },
    )
    max_parallel_experts: Annotated[int, Field(gt=0, le=MAX_PLAN_SIZE)] = field(
        default=4,
        metadata={
            "description": "Most expert calls of one run at once; when fewer than the ready "
            "sub-queries, those on the longest remaining chain go first."
        },
    )
    max_batch_size: Annotated[int, Field(gt=0, le=MAX_PLAN_SIZE)] = field(
        default=8,
        metadata={"description": "Most ready sub-queries on one model generated as one batch."},
    )
    expert_timeout_s: Annotated[float, Field(gt=0)] = field(
        default=300.0,
        metadata={"description": "Seconds one expert call may take before it is retried."},
    )
    passthrough_single: bool = field(
        default=True,
        metadata={"description": "One-part plans return the expert's answer unchanged."},
    )
    max_query_chars: Annotated[int, Field(gt=0, le=MAX_QUERY_CHARS)] = field(
        default=20_000,
        metadata={"description": "Longest query accepted, in characters."},
    )
    max_run_s: Annotated[float, Field(gt=0)] | None = field(
        default=None,
        metadata={
            "description": "Seconds a run may take from its start; sub-queries not answered "
            "by then fail with the reason, and the answers so far are aggregated. Empty = "
            "no limit."
        },
    )

    def __post_init__(self) -> None:
        # A setting that cannot work fails the run at once, naming the field, the value and
        # what is allowed; the annotations above are also what Studio's form offers.
        check_fields(self, "Context")


CONFIG_KEY = "compllm"


def run_context(context: object) -> Context:
    """The run's compllm settings. A compllm `Context` (or a dict of its fields) as the run's
    context; when compllm runs inside a parent graph whose context is something else, the
    `Context` (or dict) under `config["configurable"]["compllm"]`; else the defaults."""
    if isinstance(context, Context):
        return context
    if isinstance(context, Mapping) and set(context) <= _CONTEXT_FIELDS:
        return Context(**context)
    from langgraph.config import get_config

    try:
        configured = get_config().get("configurable", {}).get(CONFIG_KEY)
    except RuntimeError:  # called outside a run
        configured = None
    if isinstance(configured, Context):
        return configured
    if isinstance(configured, Mapping):
        return Context(**configured)
    return Context()


def clock() -> float:
    """Now, in Unix seconds: what `time_left` measures the run's time against (a module-level
    function so that tests can stand a fake clock in for it)."""
    return time.time()


def time_left(state: Mapping[str, Any], context: Context) -> float | None:
    """Seconds the run may still take (`Context.max_run_s`), or None without a limit."""
    if context.max_run_s is None:
        return None
    started = state.get("run_started_at")
    if started is None:
        return context.max_run_s
    return float(started) + context.max_run_s - clock()


_CONTEXT_FIELDS = frozenset(f.name for f in fields(Context))
