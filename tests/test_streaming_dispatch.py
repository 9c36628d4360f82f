"""Experts start while the LLM planner is still writing the plan (`Context.stream_plan`).

The planner here streams its JSON piece by piece and, between pieces, waits for what the
test wants to have happened first (an expert call starting, an answer arriving): if a piece
were held back until the whole plan is written, the wait would never be satisfied and the
planner says so in the plan it returns. No sleeps: events decide every ordering.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langgraph.types import RetryPolicy
from pydantic import ConfigDict, Field

from compllm import CompLLM, CompLLMResult, Context, open_checkpointer
from compllm.errors import ModelLoadError
from compllm.nodes import execute as execute_module
from tests.fakes import (
    LOCAL_MODEL_SETTINGS,
    Call,
    FakeProvider,
    KeywordEmbeddings,
    ScriptedChatModel,
    reject_unknown_settings,
)

CONTEXT = Context(
    planner_model="planner-model",
    aggregator_model="aggregator-model",
    embedding_model="fake",
    planner_mode="llm",
)
QUERY = "What is the derivative of x^2, and what are the symptoms of diabetes?"
DERIVATIVE = {"id": "q1", "question": "What is the derivative of x^2?", "depends_on": []}
DIABETES = {"id": "q2", "question": "What are the symptoms of diabetes?", "depends_on": []}


class StreamingPlanner(BaseChatModel):
    """Streams `pieces` in order; before a piece, calls the hook given for its index (to wait
    for an event, or to fail as a crashed planner would)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    pieces: list[str]
    hooks: dict[int, Callable[[], None]] = Field(default_factory=dict)

    @property
    def _llm_type(self) -> str:
        return "streaming-planner"

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        reject_unknown_settings(kwargs, LOCAL_MODEL_SETTINGS)
        for index, piece in enumerate(self.pieces):
            if index in self.hooks:
                self.hooks[index]()
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece))

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text = "".join(c.text for c in self._stream(messages, stop, run_manager, **kwargs))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


def plan_pieces(*subqueries: dict[str, Any]) -> list[str]:
    """The plan's JSON in pieces: the opening, one piece per sub-query, the closing."""
    objects = [json.dumps(s) for s in subqueries]
    return [
        '{"subqueries": [',
        *[o + ("," if i < len(objects) - 1 else "") for i, o in enumerate(objects)],
        "]}",
    ]


def question_of(call: Call) -> str:
    return call.messages[-1].text.splitlines()[-1].removeprefix("Question: ")


def waiting_for(event: threading.Event, what: str) -> Callable[[], None]:
    def hook() -> None:
        assert event.wait(timeout=30), f"the planner waited in vain for {what}"

    return hook


def pipeline(
    registry, planner: BaseChatModel, respond: Callable[[str, Call], str], **kwargs: Any
) -> tuple[CompLLM, ScriptedChatModel]:
    expert = ScriptedChatModel(respond=respond)
    provider = FakeProvider(
        chat={
            "planner-model": planner,
            "expert-model": expert,
            "aggregator-model": ScriptedChatModel(respond=lambda prompt, call: "composed"),
        },
        embedding=KeywordEmbeddings(),
    )
    app = CompLLM(
        registry=registry,
        provider=provider,
        context=CONTEXT,
        retry_policy=RetryPolicy(max_attempts=1),
        **kwargs,
    )
    return app, expert


class PlanningWatch:
    """A planner that writes the two-part plan, and experts that note every question asked
    while it is still writing (`asked_while_planning`)."""

    def __init__(self) -> None:
        self.planning = threading.Event()
        self.asked_while_planning: list[str] = []
        self.planner = StreamingPlanner(
            pieces=plan_pieces(DERIVATIVE, DIABETES),
            hooks={0: self.planning.set, 3: self.planning.clear},
        )

    def respond(self, prompt: str, call: Call) -> str:
        if self.planning.is_set():
            self.asked_while_planning.append(question_of(call))
        return "an answer"

    def planned_first(self, result: CompLLMResult) -> bool:
        """No expert was asked while the planner wrote, and none was even called: the
        second is what proves it (a dispatched call may happen to be asked only after the
        planner is done), since `first_expert` is timed when the first one is called."""
        return self.asked_while_planning == [] and "first_expert" not in result.timings


def test_an_expert_starts_while_the_planner_is_still_writing(registry):
    derivative_asked = threading.Event()

    def respond(prompt: str, call: Call) -> str:
        if "derivative" in question_of(call):
            derivative_asked.set()
            return "2x"
        return "thirst"

    # The planner writes the second sub-query only once the first one's expert was asked.
    planner = StreamingPlanner(
        pieces=plan_pieces(DERIVATIVE, DIABETES),
        hooks={2: waiting_for(derivative_asked, "the first expert call")},
    )
    app, _ = pipeline(registry, planner, respond)
    result = app.invoke(QUERY)
    assert result.planner_path == "llm"
    assert {a.id: a.answer for a in result.answers} == {"q1": "2x", "q2": "thirst"}
    assert "first_expert" in result.timings
    assert result.timings["first_expert"] <= result.timings["plan"]


def test_without_streaming_no_expert_starts_before_the_plan_is_written(registry):
    watch = PlanningWatch()
    app, expert = pipeline(registry, watch.planner, watch.respond)
    result = app.invoke(QUERY, stream_plan=False)
    assert watch.planned_first(result) and len(expert.calls) == 2


def test_a_subquery_naming_a_later_one_waits_for_it_and_gets_its_answer(registry):
    child = {"id": "q1", "question": "Is that derivative positive at x=3?", "depends_on": ["q2"]}
    parent = {"id": "q2", "question": "What is the derivative of x^2?", "depends_on": []}

    def respond(prompt: str, call: Call) -> str:
        return "2x" if "derivative of x^2" in question_of(call) else "yes, 6"

    planner = StreamingPlanner(pieces=plan_pieces(child, parent))
    app, expert = pipeline(registry, planner, respond)
    result = app.invoke("What is the derivative of x^2? Is that derivative positive at x=3?")
    assert [question_of(c) for c in expert.calls] == [parent["question"], child["question"]]
    child_prompt = expert.calls[1].messages[-1].text
    assert "2x" in child_prompt  # the parent's answer reached the child
    assert {a.id: a.status for a in result.answers} == {"q1": "ok", "q2": "ok"}


def test_a_final_plan_that_is_rejected_keeps_answers_already_computed_without_asking_twice(
    registry,
):
    """The planner writes a good first sub-query, then a cycle: the whole plan is rejected
    and the rules plan is used. Its sub-query with the same question reuses the answer of
    the call made while the planner wrote; nothing is asked twice."""
    derivative_asked = threading.Event()
    asked: list[str] = []

    def respond(prompt: str, call: Call) -> str:
        asked.append(question_of(call))
        if "derivative" in question_of(call):
            derivative_asked.set()
            return "2x"
        return "thirst"

    cycle_a = {"id": "q2", "question": "What are the symptoms of diabetes?", "depends_on": ["q3"]}
    cycle_b = {"id": "q3", "question": "What causes diabetes?", "depends_on": ["q2"]}
    planner = StreamingPlanner(
        pieces=plan_pieces(DERIVATIVE, cycle_a, cycle_b),
        hooks={2: waiting_for(derivative_asked, "the first expert call")},
    )
    app, _ = pipeline(registry, planner, respond)
    # (planner_mode auto: a rejected LLM plan leaves the plan to the rules)
    result = app.invoke(
        "What is the derivative of x^2? What are the symptoms of diabetes?", planner_mode="auto"
    )
    assert result.planner_path == "rules"  # the LLM's plan was rejected
    answers = {a.question: a.answer for a in result.answers}
    assert answers == {
        "What is the derivative of x^2?": "2x",
        "What are the symptoms of diabetes?": "thirst",
    }
    assert sorted(asked) == sorted(answers)  # each question asked once


def test_a_started_call_the_final_plan_drops_is_left_out(registry):
    """A sub-query written and started, then left out of the final plan (here the final
    plan is the rules plan, which has no such question), does not appear in the answers."""
    extra_asked = threading.Event()

    def respond(prompt: str, call: Call) -> str:
        if "capital" in question_of(call):
            extra_asked.set()
        return "an answer"

    extra = {"id": "q1", "question": "What is the capital of France?", "depends_on": []}
    planner = StreamingPlanner(
        pieces=[*plan_pieces(extra)[:2], "not json at all"],
        hooks={2: waiting_for(extra_asked, "the extra call")},
    )
    app, _ = pipeline(registry, planner, respond)
    result = app.invoke(
        "What is the derivative of x^2? What are the symptoms of diabetes?", planner_mode="auto"
    )
    assert result.planner_path == "rules"
    assert "What is the capital of France?" not in {a.question for a in result.answers}
    assert all(a.status == "ok" for a in result.answers)


def test_a_planner_that_fails_lets_the_calls_it_started_finish_first(registry):
    derivative_asked = threading.Event()
    answered: list[str] = []

    def respond(prompt: str, call: Call) -> str:
        derivative_asked.set()
        answered.append(question_of(call))
        return "2x"

    def crash() -> None:
        assert derivative_asked.wait(timeout=30), "the first expert was never asked"
        raise ModelLoadError("the planner's model is gone")  # stops the run

    planner = StreamingPlanner(pieces=plan_pieces(DERIVATIVE, DIABETES), hooks={2: crash})
    app, _ = pipeline(registry, planner, respond)
    with pytest.raises(ModelLoadError):
        app.invoke(QUERY)
    assert answered == ["What is the derivative of x^2?"]


@pytest.mark.parametrize("written_after", ["a child", "a root, with one slot"])
def test_a_bug_in_a_dispatched_call_fails_the_run_instead_of_hanging_it(
    registry, monkeypatch, written_after
):
    """An error that is not an expert's (a bug in compllm) ends the run with that error. The
    node waits for its calls before it reports the error, so none may wait for ever: not a
    child waiting at the gate for the broken parent, nor a sub-query the planner writes
    after the bug, waiting for the slot the broken call held. (The 60 s bound only turns a
    hang into a failure.)"""
    steps = execute_module.expert_call_steps
    broke = threading.Event()

    def broken_for_the_parent(services, expert_input, started_at=None):
        if expert_input["question"] == DERIVATIVE["question"]:
            broke.set()
            raise RuntimeError("a bug in calling the expert")
        return steps(services, expert_input, started_at)

    monkeypatch.setattr(execute_module, "expert_call_steps", broken_for_the_parent)
    if written_after == "a child":
        second = {
            "id": "q2",
            "question": "Is that derivative positive at x=3?",
            "depends_on": ["q1"],
        }
        query, context = f"{DERIVATIVE['question']} {second['question']}", {}
    else:
        second, query, context = DIABETES, QUERY, {"max_parallel_experts": 1}
    planner = StreamingPlanner(
        pieces=plan_pieces(DERIVATIVE, second), hooks={2: waiting_for(broke, "the bug")}
    )
    app, _ = pipeline(registry, planner, ok)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            app.invoke(query, **context)
        except BaseException as error:  # the test inspects it
            errors.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the run hung"
    assert [str(e) for e in errors] == ["a bug in calling the expert"]


def ok(prompt: str, call: Call) -> str:
    return "an answer"


def test_a_run_with_a_checkpointer_saves_its_plan_before_any_expert_starts(registry):
    """A run that may be resumed plans first: resumed after a crash, it must not plan again
    (a planner that samples could write another plan, and LangGraph gives a node's saved
    task results back by call order). tests/test_persistence.py resumes such runs."""
    watch = PlanningWatch()
    with open_checkpointer("memory") as saver:
        app, _ = pipeline(registry, watch.planner, watch.respond, checkpointer=saver)
        result = app.invoke(QUERY, thread_id="t")
    assert watch.planned_first(result) and len(result.answers) == 2


def test_plan_review_plans_then_executes(registry):
    watch = PlanningWatch()
    with open_checkpointer("memory") as saver:  # review needs one
        app, _ = pipeline(registry, watch.planner, watch.respond, checkpointer=saver)
        result = app.invoke(QUERY, thread_id="r", review_plan=True)
        assert result.review is not None  # paused for review, nothing asked yet
        result = app.resume("r", "approve")
    assert watch.planned_first(result)
    assert {a.status for a in result.answers} == {"ok"}


@pytest.mark.parametrize("setting", [{"executor": "waves"}, {"max_run_s": 3600.0}])
def test_the_waves_executor_and_a_time_limit_plan_then_execute(registry, setting):
    # No checkpointer here: it alone would make the run plan first.
    watch = PlanningWatch()
    app, _ = pipeline(registry, watch.planner, watch.respond)
    result = app.invoke(QUERY, **setting)
    assert watch.planned_first(result)
    assert {a.status for a in result.answers} == {"ok"}


def test_an_async_run_plans_then_executes(registry):
    watch = PlanningWatch()
    app, _ = pipeline(registry, watch.planner, watch.respond)
    result = asyncio.run(app.ainvoke(QUERY))
    assert watch.planned_first(result) and len(result.answers) == 2
