"""Checkpoints: a stopped run resumes on its thread without recomputing finished sub-queries;
a finished thread returns its answer; plan review pauses a run for a person's decision."""

import json
import logging
import threading
from pathlib import Path

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import RetryPolicy

from compllm import CompLLM, Context, Plan, open_checkpointer
from compllm.checkpoint import checkpoint_serializer, default_checkpoint_target
from compllm.errors import ConfigError
from compllm.review import CANCELLED_ANSWER, parse_decision
from tests.fakes import Call, FakeProvider, ScriptedChatModel, make_provider, plan_json
from tests.kill_child import PLAN as KILL_PLAN
from tests.saved_answers import SavedAnswers

QUERY = "Multiply the numbers 12 and 7. What are the symptoms of flu? Is that product prime?"
PLAN = plan_json(
    ("q1", "Multiply the numbers 12 and 7.", []),
    ("q2", "What are the symptoms of flu?", []),
    ("q3", "Using arithmetic, is the product in q1 prime?", ["q1"]),
)
ANSWERS = {"prime": "No, 84 is not prime.", "Multiply": "84", "flu": "Fever and cough."}
CONTEXT = Context(
    planner_model="planner-model",
    aggregator_model="aggregator-model",
    embedding_model="fake",
    max_parallel_experts=1,  # one at a time, so "finished before the crash" is exact
)
NO_RETRY = RetryPolicy(max_attempts=1)


class Crash(BaseException):
    """Stands for the process dying: not an expert failure the run could absorb."""


def expert_that_crashes_on(
    word: str, saved: SavedAnswers, answers_before: int
) -> ScriptedChatModel:
    """Answers from ANSWERS; the call whose question has `word` waits until the answers before
    it are saved, then dies (once)."""
    crashed = threading.Event()

    def respond(prompt: str, call: Call) -> str:
        question = call.messages[-1].text
        if word in question and not crashed.is_set():
            crashed.set()
            assert saved.wait_for(answers_before), "the answers before the crash were not saved"
            raise Crash
        return next(v for k, v in ANSWERS.items() if k in question)

    return ScriptedChatModel(respond=respond)


def app(provider: FakeProvider, registry, checkpointer) -> CompLLM:
    return CompLLM(
        registry=registry,
        context=CONTEXT,
        provider=provider,
        retry_policy=NO_RETRY,
        checkpointer=checkpointer,
    )


def expert_questions(provider: FakeProvider) -> list[str]:
    calls = provider.chat["expert-model"].calls
    return [c.messages[-1].text.splitlines()[-1].removeprefix("Question: ") for c in calls]


def test_a_crashed_run_resumes_without_planning_or_recomputing_again(registry, tmp_path):
    """A planned run (a chain and an independent part) dies in its last call; the resumed
    run plans nothing and asks only that call. (Given plans of every size on every
    checkpointer: `test_restore.py`.)"""
    database = tmp_path / "runs.sqlite"
    first = make_provider(planner=PLAN, aggregate="84; fever and cough; not prime.")
    with open_checkpointer(database) as saver:
        first.chat["expert-model"] = expert_that_crashes_on("prime", SavedAnswers(saver), 2)
        with pytest.raises(Crash):
            app(first, registry, saver).invoke(QUERY, thread_id="t")
    assert expert_questions(first) == [
        "Multiply the numbers 12 and 7.",  # the longest chain first, one call at a time
        "What are the symptoms of flu?",
        "Using arithmetic, is the product in q1 prime?",  # crashed in the middle of this one
    ]

    # A new process: new models, the same database and thread.
    second = make_provider(
        planner=PLAN, expert_answers=ANSWERS, aggregate="84; fever and cough; not prime."
    )
    with open_checkpointer(database) as saver:
        result = app(second, registry, saver).invoke(QUERY, thread_id="t")
    assert expert_questions(second) == ["Using arithmetic, is the product in q1 prime?"]
    assert not second.chat["planner-model"].calls  # the plan came from the checkpoint
    assert [(a.id, a.answer) for a in result.answers] == [
        ("q1", "84"),
        ("q2", "Fever and cough."),
        ("q3", "No, 84 is not prime."),
    ]
    assert result.answer == "84; fever and cough; not prime."
    assert result.status == "done" and result.thread_id == "t"


def test_checkpointed_state_restores_without_unregistered_type_warnings(registry, tmp_path, caplog):
    provider = make_provider(planner=PLAN, expert_answers=ANSWERS)
    with caplog.at_level(logging.WARNING), open_checkpointer(tmp_path / "c.sqlite") as saver:
        app(provider, registry, saver).invoke(QUERY, thread_id="t")
        restored = app(provider, registry, saver).result("t")
    assert restored is not None and isinstance(restored.plan, Plan)
    assert not [r for r in caplog.records if "unregistered type" in r.getMessage()]


def test_checkpoint_targets_name_their_backend(tmp_path, monkeypatch):
    with open_checkpointer("memory") as saver:
        assert type(saver).__name__ == "InMemorySaver"
    with open_checkpointer(f"sqlite:///{tmp_path}/a/b.sqlite") as saver:
        assert type(saver).__name__ == "SqliteSaver"
    assert (tmp_path / "a" / "b.sqlite").exists()
    monkeypatch.setenv("COMPLLM_CHECKPOINT", str(tmp_path / "env.sqlite"))
    assert default_checkpoint_target() == str(tmp_path / "env.sqlite")
    monkeypatch.setitem(__import__("sys").modules, "langgraph.checkpoint.postgres", None)
    with pytest.raises(ConfigError, match=r"comp-llm\[postgres\]"):  # noqa: SIM117
        with open_checkpointer("postgresql://user@localhost/db"):
            pass


# -- plan review (human in the loop) ------------------------------------------------------


def reviewing_app(registry, provider: FakeProvider) -> CompLLM:
    return app(provider, registry, InMemorySaver(serde=checkpoint_serializer()))


def test_review_pauses_after_routing_and_approval_runs_the_plan(registry):
    provider = make_provider(planner=PLAN, expert_answers=ANSWERS, aggregate="done")
    pipeline = reviewing_app(registry, provider)
    paused = pipeline.invoke(QUERY, thread_id="r1", review_plan=True)
    assert paused.status == "awaiting_review" and paused.answer == ""
    assert paused.review is not None
    assert [s["id"] for s in paused.review["plan"]["subqueries"]] == ["q1", "q2", "q3"]
    assert [r.expert for r in paused.routes][:2] == ["math", "medicine"]
    assert [s["expert"] for s in paused.review["plan"]["subqueries"]] == [
        r.expert for r in paused.routes
    ]
    assert paused.review["experts"] == ["math", "medicine", "law", "general"]
    assert not provider.chat["expert-model"].calls  # nothing ran before the decision
    # Invoking the paused thread again does not run it either.
    assert pipeline.invoke(QUERY, thread_id="r1", review_plan=True).status == "awaiting_review"

    done = pipeline.resume("r1", "approve", review_plan=True)
    assert done.status == "done" and "84" in done.answer
    assert len(provider.chat["expert-model"].calls) == 3


def test_an_edited_plan_is_validated_routed_and_run(registry):
    provider = make_provider(planner=PLAN, expert_answers=ANSWERS, aggregate="done")
    pipeline = reviewing_app(registry, provider)
    paused = pipeline.invoke(QUERY, thread_id="r2", review_plan=True)
    edited = paused.review["plan"]
    # Drop q3, and send q2 to the generalist by hand.
    edited["subqueries"] = edited["subqueries"][:2]
    edited["subqueries"][1]["expert"] = "general"
    edited["subqueries"][0]["expert"] = None  # routed again by similarity
    done = pipeline.resume("r2", {"plan": edited}, review_plan=True)
    assert [(r.id, r.expert) for r in done.routes] == [("q1", "math"), ("q2", "general")]
    assert set(done.routes[0].scores) == {"math", "medicine", "law", "general"}
    assert sorted(expert_questions(provider)) == [
        "Multiply the numbers 12 and 7.",
        "What are the symptoms of flu?",
    ]


def test_an_unusable_edit_asks_again_with_the_error(registry):
    provider = make_provider(planner=PLAN, expert_answers=ANSWERS, aggregate="done")
    pipeline = reviewing_app(registry, provider)
    pipeline.invoke(QUERY, thread_id="r3", review_plan=True)
    cycle = {
        "subqueries": [
            {"id": "a", "question": "first?", "depends_on": ["b"]},
            {"id": "b", "question": "second?", "depends_on": ["a"]},
        ]
    }
    again = pipeline.resume("r3", {"plan": cycle}, review_plan=True)
    assert again.status == "awaiting_review" and "cycle" in again.review["error"]
    unknown = pipeline.resume(
        "r3",
        {"plan": {"subqueries": [{"id": "a", "question": "x?", "expert": "astrology"}]}},
        review_plan=True,
    )
    assert "astrology" in unknown.review["error"]
    assert not provider.chat["expert-model"].calls
    done = pipeline.resume("r3", "approve", review_plan=True)
    assert done.status == "done" and len(done.answers) == 3


def test_a_cancelled_plan_ends_the_run_without_calling_experts(registry):
    provider = make_provider(planner=PLAN, expert_answers=ANSWERS)
    pipeline = reviewing_app(registry, provider)
    pipeline.invoke(QUERY, thread_id="r4", review_plan=True)
    cancelled = pipeline.resume("r4", "cancel", review_plan=True)
    assert cancelled.status == "cancelled" and cancelled.answer == CANCELLED_ANSWER
    assert not provider.chat["expert-model"].calls
    assert not provider.chat["aggregator-model"].calls


def test_review_needs_a_checkpointer(registry):
    pipeline = app(make_provider(planner=PLAN), registry, None)
    with pytest.raises(ConfigError, match="checkpointer"):
        pipeline.invoke(QUERY, review_plan=True)


@pytest.mark.parametrize(
    ("decision", "action"),
    [
        (None, "approve"),
        ("approve", "approve"),
        ({"action": "approve"}, "approve"),
        ("Cancel", "cancel"),
        ({"action": "cancel"}, "cancel"),
        ({"subqueries": [{"id": "q1", "question": "Why?"}]}, "edit"),
        ({"action": "edit", "plan": {"subqueries": [{"id": "q1", "question": "Why?"}]}}, "edit"),
    ],
)
def test_review_decisions_people_write_are_understood(decision, action):
    assert parse_decision(decision, max_subqueries=4)[0] == action


@pytest.mark.parametrize(
    ("decision", "message"),
    [
        (42, "cannot use the review decision"),
        ({"plan": {"subqueries": []}}, "non-empty"),
        ({"plan": {"subqueries": [{"id": "q1", "question": " "}]}}, "question"),
        ({"plan": {"subqueries": [{"id": f"q{i}", "question": "?"} for i in range(5)]}}, "5"),
    ],
)
def test_unusable_review_decisions_say_why(decision, message):
    from compllm import PlanError

    with pytest.raises(PlanError, match=message):
        parse_decision(decision, max_subqueries=4)


def test_a_checkpointer_that_restores_state_as_plain_dicts_still_resumes(registry):
    """Strict msgpack without compllm's classes on its allow-list (the LangGraph server's
    case) restores the plan and the answers as dicts; the run must read them all the same."""
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    strict = InMemorySaver(serde=JsonPlusSerializer(allowed_msgpack_modules=None))
    provider = make_provider(planner=PLAN, expert_answers=ANSWERS, aggregate="done")
    pipeline = app(provider, registry, strict)
    assert pipeline.invoke(QUERY, thread_id="d1", review_plan=True).status == "awaiting_review"
    done = pipeline.resume("d1", "approve", review_plan=True)
    assert done.status == "done" and len(done.answers) == 3
    assert isinstance(done.plan, Plan)


def test_a_run_killed_with_sigkill_resumes_from_its_checkpoint(tmp_path):
    """A real kill: the process dies inside its third expert call and cannot clean up. A
    new process resumes the thread: what had finished is not asked again, and the answer is
    the one an uninterrupted run gives."""
    import os
    import signal
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    database, calls = tmp_path / "runs.sqlite", tmp_path / "calls.log"

    def child(thread: str, *hold_call: str) -> subprocess.Popen[str]:
        command = [sys.executable, "-m", "tests.kill_child", str(database), thread, str(calls)]
        return subprocess.Popen([*command, *hold_call], cwd=root, stdout=subprocess.PIPE, text=True)

    def persisted(thread: str) -> set[str]:
        """Sub-queries whose answers are in the thread's checkpoint (task results)."""
        with open_checkpointer(database) as saver:
            saved = saver.get_tuple({"configurable": {"thread_id": thread}})
        writes = saved.pending_writes if saved else []
        return {value.id for _, channel, value in writes or [] if channel == "__return__"}

    # The child's third call waits until the first two answers are in the checkpoint, says
    # so, and never ends: the kill lands inside it, whatever the machine's load.
    first = child("killed", "3")
    held = next((line for line in first.stdout if line.startswith("HOLD ")), None)  # type: ignore[union-attr]
    assert held is not None, "the child ended without reaching its third call"
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL
    asked_before = calls.read_text().splitlines()
    questions = {s["id"]: s["question"] for s in json.loads(KILL_PLAN)["subqueries"]}
    finished = persisted("killed")
    assert len(asked_before) == 3 and asked_before[2] == held.removeprefix("HOLD ").strip()
    assert {questions[sid] for sid in finished} == set(asked_before[:2])

    second = child("killed")
    out, _ = second.communicate(timeout=120)
    assert second.returncode == 0
    resumed = json.loads(out.strip().splitlines()[-1])
    asked_after = calls.read_text().splitlines()[len(asked_before) :]
    # The held call is asked again (it never finished), so is the one never started; what
    # had finished is not.
    assert sorted(asked_after) == sorted(
        question for sid, question in questions.items() if sid not in finished
    )

    reference = child("uninterrupted")
    out, _ = reference.communicate(timeout=120)
    assert json.loads(out.strip().splitlines()[-1]) == resumed
    assert resumed["answers"] == {
        "q1": "84",
        "q2": "85",
        "q3": "170",
        "q4": "A serious crime.",
    }
