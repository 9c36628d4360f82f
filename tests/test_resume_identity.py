"""Resuming a run never gives one sub-query another's answer.

LangGraph identifies the tasks a node calls by the order of the calls. When a run stops in
the middle of the executor and resumes, the finished calls are taken from the checkpoint by
that order; if the resumed run started its calls in another order than the first run did
(the first run's order followed which call happened to finish first), a sub-query would get
the saved answer of another. Here the first run finishes q2 before q1, so q4 starts before
q3; the resumed run must still give q3 and q4 their own answers, reuse all four, and ask only
q5 again."""

from __future__ import annotations

import threading

import pytest
from langgraph.types import RetryPolicy

from compllm import CompLLM, Context, Plan, SubQuery, open_checkpointer
from compllm.errors import CompLLMError, ModelLoadError
from compllm.registry import parse_registry
from compllm.scheduling import Gate
from tests.fakes import FakeProvider, KeywordEmbeddings, ScriptedChatModel

REGISTRY = """
generalist: general
experts:
  - name: general
    description: everything
    model: expert-model
"""
PLAN = Plan.build(
    [
        SubQuery(id="q1", question="first root", expert="general"),
        SubQuery(id="q2", question="second root", expert="general"),
        SubQuery(id="q3", question="child of the first", depends_on=("q1",), expert="general"),
        SubQuery(id="q4", question="child of the second", depends_on=("q2",), expert="general"),
        SubQuery(id="q5", question="the join", depends_on=("q3", "q4"), expert="general"),
    ]
)


def question_of(prompt: str) -> str:
    return prompt.splitlines()[-1].removeprefix("Question: ")


def resumable_app(respond, saver, executor: str = "dataflow") -> CompLLM:
    """One expert model answering by `respond`, a checkpointer, and no retries (an error
    stops the run where it is, to be resumed)."""
    provider = FakeProvider(
        chat={
            "expert-model": ScriptedChatModel(respond=respond),
            "aggregator-model": ScriptedChatModel(respond=lambda prompt, call: "all five"),
        },
        embedding=KeywordEmbeddings(),
    )
    return CompLLM(
        registry=parse_registry(REGISTRY, source="one.yaml"),
        provider=provider,
        checkpointer=saver,
        context=Context(
            embedding_model="words", aggregator_model="aggregator-model", executor=executor
        ),
        retry_policy=RetryPolicy(max_attempts=1),
    )


@pytest.mark.parametrize("executor", ["dataflow", "waves"])
def test_a_resumed_run_gives_each_subquery_its_own_saved_answer(executor):
    asked: list[str] = []
    second_child_started = threading.Event()
    first_run = threading.Event()
    first_run.set()

    def respond(prompt: str, call) -> str:
        question = question_of(call.messages[-1].text)
        asked.append(question)
        if question == "first root" and first_run.is_set() and executor == "dataflow":
            # q1 ends only once q4 (q2's child) has started: q4 starts before q3. (Waves
            # start both children together, after both roots.)
            second_child_started.wait(timeout=30)
        if question == "child of the second":
            second_child_started.set()
        if question == "the join" and first_run.is_set():
            raise ModelLoadError("the process died here")  # stops the run: not retried
        return f"answer to {question}"

    with open_checkpointer("memory") as saver:
        app = resumable_app(respond, saver, executor)
        with pytest.raises(ModelLoadError):
            app.invoke("a query", plan=PLAN, thread_id="t")
        first_run.clear()
        asked.clear()
        result = app.invoke("a query", plan=PLAN, thread_id="t")
    answers = {a.id: a.answer for a in result.answers}
    assert answers == {
        "q1": "answer to first root",
        "q2": "answer to second root",
        "q3": "answer to child of the first",
        "q4": "answer to child of the second",
        "q5": "answer to the join",
    }
    assert asked == ["the join"]  # the four finished calls came from the checkpoint


def test_a_checkpoint_whose_calls_were_made_in_another_order_is_refused(monkeypatch):
    """A checkpoint written by a version that called the tasks in another order would give
    each sub-query another's saved answer: the resumed run stops with a clear error."""
    first_run = [True]

    def respond(prompt: str, call) -> str:
        question = question_of(call.messages[-1].text)
        if question == "the join" and first_run[0]:
            raise ModelLoadError("the process died here")
        return f"answer to {question}"

    with open_checkpointer("memory") as saver:
        app = resumable_app(respond, saver)
        with pytest.raises(ModelLoadError):
            app.invoke("a query", plan=PLAN, thread_id="t")
        first_run[0] = False
        call_order = Gate.call_order
        monkeypatch.setattr(Gate, "call_order", lambda gate: call_order(gate)[::-1])
        with pytest.raises(CompLLMError, match="called the expert tasks in another order"):
            app.invoke("a query", plan=PLAN, thread_id="t")


def test_langgraph_knows_a_nodes_tasks_by_the_order_they_were_called():
    """Why the executor calls its tasks in an order fixed by the plan: a node that calls
    the same tasks in another order after a resume gets their saved results crossed."""
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.func import task
    from langgraph.graph import START, StateGraph
    from typing_extensions import TypedDict

    class State(TypedDict, total=False):
        results: list[str]

    @task
    def work(name: str) -> str:
        return f"done {name}"

    order, fail = ["a", "b"], [True]

    def node(state: State) -> State:
        results = [future.result() for future in [work(name) for name in order]]
        if fail[0]:
            raise RuntimeError("stopped")
        return {"results": results}

    builder = StateGraph(State)
    builder.add_node("node", node)
    builder.add_edge(START, "node")
    graph = builder.compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t"}}
    with pytest.raises(RuntimeError):
        graph.invoke({}, config)
    order.reverse()
    fail[0] = False
    assert graph.invoke(None, config)["results"] == ["done a", "done b"]  # b got a's result
