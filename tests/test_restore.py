"""State restores the same from every checkpointer, for plans of every allowed size.

Each test runs a given plan of independent sub-queries (1; 16, the default limit; 17, one
above it; 64) with a memory, SQLite or PostgreSQL checkpointer, and reads the run back the
way another process would: a new pipeline on new models, over the checkpointer opened
again. Covered: a plan paused for review, then approved or edited; a run stopped by a crash,
then resumed; and `CompLLM.result` of the thread at each stage.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import pytest
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.types import RetryPolicy

from compllm import CompLLM, CompLLMResult, Context, Plan, QueryError, SubQuery, open_checkpointer
from tests.fakes import Call, FakeProvider, ScriptedChatModel, make_provider, make_test_registry
from tests.postgres import postgres_available, postgres_server
from tests.saved_answers import SavedAnswers

SIZES = [1, 16, 17, 64]  # one part; the default limit; one above it; a large plan
CONTEXT = Context(
    planner_model="planner-model", aggregator_model="aggregator-model", embedding_model="fake"
)
Reopen = Callable[[], AbstractContextManager[BaseCheckpointSaver[Any]]]


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    reason = postgres_available()
    if reason is not None:
        pytest.skip(reason)
    pytest.importorskip("langgraph.checkpoint.postgres")
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def reopen(request, tmp_path) -> Iterator[Reopen]:
    """Opens the run's checkpointer again, as a new process would: a new connection to the
    same SQLite file or PostgreSQL database. A memory saver cannot be reopened, so it is the
    same one each time (it holds state serialized, as a database does)."""
    if request.param == "memory":
        with open_checkpointer("memory") as saver:
            yield lambda: nullcontext(saver)
    else:
        target = (
            str(tmp_path / "runs.sqlite")
            if request.param == "sqlite"
            else request.getfixturevalue("postgres_url")
        )
        yield lambda: open_checkpointer(target)


class Crash(BaseException):
    """Stands for the process dying: not an expert failure the run could absorb."""


def question(call: Call) -> str:
    return call.messages[-1].text.splitlines()[-1].removeprefix("Question: ")


def answer_to(text: str) -> str:
    return f"answer to {text}"


def models(respond: Callable[[str, Call], str] | None = None) -> FakeProvider:
    """New models, as a new process has: experts answer each question with its own answer."""
    provider = make_provider(aggregate="all parts")
    provider.chat["expert-model"] = ScriptedChatModel(
        respond=respond or (lambda prompt, call: answer_to(question(call)))
    )
    return provider


def asked(provider: FakeProvider) -> list[str]:
    return [question(call) for call in provider.chat["expert-model"].calls]


def pipeline(saver: BaseCheckpointSaver[Any], provider: FakeProvider) -> CompLLM:
    return CompLLM(
        registry=make_test_registry(),
        context=CONTEXT,
        provider=provider,
        retry_policy=RetryPolicy(max_attempts=1),
        checkpointer=saver,
    )


def plan_of(size: int) -> Plan:
    return Plan.build(
        [SubQuery(id=f"q{i}", question=f"Solve equation number {i}.") for i in range(1, size + 1)],
        max_subqueries=size,
    )


def query_of(size: int) -> str:
    return f"Solve these {size} equations."


def new_thread() -> str:
    return uuid.uuid4().hex  # the PostgreSQL database is shared by the module's tests


def same_run(restored: CompLLMResult | None, original: CompLLMResult) -> bool:
    """Everything but the run's duration (`timings["total"]`: 0 for a restored result)."""
    assert restored is not None
    without_total = {"timings": {"total"}}
    return restored.model_dump(exclude=without_total) == original.model_dump(exclude=without_total)


def answered(result: CompLLMResult) -> list[tuple[str, str, str]]:
    return [(a.id, a.status, a.answer) for a in result.answers]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("decision", ["approve", "edit"])
def test_a_plan_paused_for_review_reads_back_and_runs_as_decided(reopen, size, decision):
    thread, plan = new_thread(), plan_of(size)
    settings = {"review_plan": True, "max_subqueries": size}
    first = models()
    with reopen() as saver:
        paused = pipeline(saver, first).invoke(
            query_of(size), plan=plan, thread_id=thread, **settings
        )
    assert paused.status == "awaiting_review" and not asked(first)
    assert [s["id"] for s in paused.review["plan"]["subqueries"]] == plan.ids
    assert [s.question for s in paused.plan.subqueries] == [s.question for s in plan.subqueries]

    second = models()
    with reopen() as saver:
        app = pipeline(saver, second)
        assert same_run(app.result(thread), paused)  # another process sees the same pause
        reviewed = copy.deepcopy(paused.review["plan"])
        if decision == "edit":  # the reviewer rewrites the last part and picks its expert
            reviewed["subqueries"][-1].update(
                question=f"Solve the edited equation number {size}.", expert="general"
            )
        done = app.resume(
            thread, {"plan": reviewed} if decision == "edit" else "approve", **settings
        )
        restored = app.result(thread)
    questions = [s["question"] for s in reviewed["subqueries"]]
    assert done.status == "done" and same_run(restored, done)
    assert answered(done) == [
        (f"q{i}", "ok", answer_to(text)) for i, text in enumerate(questions, start=1)
    ]
    assert sorted(asked(second)) == sorted(questions)  # each part asked once, as decided
    assert done.routes[-1].expert == reviewed["subqueries"][-1]["expert"]


@pytest.mark.parametrize("size", SIZES)
def test_a_stopped_run_reads_back_and_resumes_without_asking_again(reopen, size):
    thread, plan = new_thread(), plan_of(size)
    settings = {"max_subqueries": size, "max_parallel_experts": 1}  # one call at a time
    saved: SavedAnswers | None = None
    calls: list[str] = []

    def crash_on_the_last_call(prompt: str, call: Call) -> str:
        calls.append(question(call))
        if len(calls) == size:  # the process dies once every other answer is saved
            assert saved is not None and saved.wait_for(size - 1)
            raise Crash
        return answer_to(question(call))

    with reopen() as saver:
        saved = SavedAnswers(saver)
        crashing = pipeline(saver, models(crash_on_the_last_call))
        with pytest.raises(Crash):
            crashing.invoke(query_of(size), plan=plan, thread_id=thread, **settings)
    assert sorted(calls) == sorted(s.question for s in plan.subqueries)

    # Another process reads the stopped run's plan, then resumes it.
    second = models()
    with reopen() as saver:
        app = pipeline(saver, second)
        stopped = app.result(thread)
        assert stopped is not None and stopped.answer == ""
        assert [(s.id, s.question) for s in stopped.plan.subqueries] == [
            (s.id, s.question) for s in plan.subqueries
        ]
        assert [r.id for r in stopped.routes] == plan.ids
        done = app.invoke(query_of(size), plan=plan, thread_id=thread, **settings)
        restored = app.result(thread)
    assert asked(second) == [calls[-1]]  # only the call that never finished
    assert done.status == "done" and same_run(restored, done)
    assert answered(done) == [(s.id, "ok", answer_to(s.question)) for s in plan.subqueries]
    assert done.answer and done.aggregation != "none"  # composed from the answers

    # Asking again returns the finished result and calls no model; another query is refused.
    third = models()
    with reopen() as saver:
        app = pipeline(saver, third)
        again = app.invoke(query_of(size), plan=plan, thread_id=thread, **settings)
        with pytest.raises(QueryError, match="holds another query"):
            app.invoke("Something else?", thread_id=thread)
    assert same_run(again, done)
    assert not any(model.calls for model in third.chat.values())
