"""Scheduling semantics of the executors, pinned without timing: who may start when.

The dataflow executor (default) starts a sub-query as soon as its own parents are done; the
wave executor waits for the whole wave. Slots bound a run; when they are scarce, the longest
remaining chain goes first. Blocking fakes make the order deterministic.
"""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from langchain_core.messages import HumanMessage
from langgraph.types import RetryPolicy

from compllm import CompLLM, Context, Plan, PlanError, SubQuery
from compllm.errors import ModelBudgetError
from compllm.pool import ExpertPool
from compllm.registry import parse_registry
from compllm.scheduling import Gate, chain_first_order
from compllm.services import Services
from tests.fakes import (
    TEST_REGISTRY_YAML,
    BatchingChatModel,
    ScriptedChatModel,
    SizedProvider,
    make_provider,
)

FAST_RETRY = RetryPolicy(max_attempts=2, initial_interval=0.01, jitter=False, retry_on=Exception)
CONTEXT = Context(
    planner_model="planner-model", aggregator_model="aggregator-model", embedding_model="fake"
)
EXECUTORS = ["dataflow", "waves"]


def plan_of(*subqueries: tuple[str, str, list[str]]) -> Plan:
    return Plan.build([SubQuery(id=i, question=q, depends_on=tuple(d)) for i, q, d in subqueries])


def run(provider, registry, plan: Plan, **context):
    pipeline = CompLLM(
        registry=registry, context=CONTEXT, provider=provider, retry_policy=FAST_RETRY
    )
    return pipeline.invoke("a query", plan=plan, **context)


def question(call) -> str:
    return call.messages[-1].text.splitlines()[-1].removeprefix("Question: ")


SLOW_BRANCH = plan_of(
    ("slow", "Solve the slow equation.", []),
    ("fast", "Solve the fast equation.", []),
    ("child", "Check the fast result of q2.", ["fast"]),
)


def test_a_child_starts_before_an_unrelated_slow_sibling_ends(registry):
    child_started = threading.Event()

    def respond(prompt, call):
        if "slow" in question(call):
            # Finishes only once the child has started, or gives up after 10 s.
            return "child started first" if child_started.wait(10) else "child waited"
        if "Check" in question(call):
            child_started.set()
        return "ok"

    provider = make_provider()
    provider.chat["expert-model"] = ScriptedChatModel(respond=respond)
    result = run(provider, registry, SLOW_BRANCH)
    assert {a.id: a.answer for a in result.answers}["slow"] == "child started first"


def test_the_wave_executor_makes_the_child_wait_for_the_whole_wave(registry):
    calls = []

    def respond(prompt, call):
        calls.append(question(call))
        return "ok"

    provider = make_provider()
    provider.chat["expert-model"] = ScriptedChatModel(respond=respond)
    result = run(provider, registry, SLOW_BRANCH, executor="waves")
    assert [a.status for a in result.answers] == ["ok", "ok", "ok"]
    slow_and_fast, child = calls[:2], calls[2]
    assert sorted(slow_and_fast) == ["Solve the fast equation.", "Solve the slow equation."]
    assert child == "Check the fast result of q2."


def recorder(order: list[str]):
    def respond(prompt, call):
        order.append(question(call))
        return "ok"

    return respond


def test_when_slots_are_scarce_the_longest_remaining_chain_goes_first(registry):
    plan = plan_of(
        ("lone", "Solve the lone equation.", []),  # first in plan order, but a chain of one
        ("c1", "Solve step one.", []),
        ("c2", "Solve step two of q2.", ["c1"]),
        ("c3", "Solve step three of q3.", ["c2"]),
    )
    for executor in EXECUTORS:
        order: list[str] = []
        provider = make_provider()
        provider.chat["expert-model"] = ScriptedChatModel(respond=recorder(order))
        run(provider, registry, plan, max_parallel_experts=1, executor=executor)
        assert order[0] == "Solve step one.", executor
        assert order.index("Solve the lone equation.") > 0


@pytest.mark.parametrize("executor", EXECUTORS)
def test_an_experts_own_slots_bound_its_calls_while_others_run(executor):
    registry = parse_registry(
        TEST_REGISTRY_YAML.replace(
            "    system_prompt: You are a mathematician.",
            "    system_prompt: You are a mathematician.\n    max_concurrency: 1",
        ),
        source="slots.yaml",
    )
    running, most = {"math": 0, "medicine": 0}, {"math": 0, "medicine": 0}
    changed = threading.Condition()

    def respond(prompt, call):
        expert = "math" if "mathematician" in call.system else "medicine"
        with changed:
            running[expert] += 1
            most[expert] = max(most[expert], running[expert])
            changed.notify_all()
            # Hold every call until three have run at once: all the slots allow.
            changed.wait_for(lambda: sum(most.values()) >= 3, timeout=10)
            running[expert] -= 1
        return "ok"

    provider = make_provider()
    provider.chat["expert-model"] = ScriptedChatModel(respond=respond)
    plan = plan_of(
        ("m1", "Solve the equation x+1=2.", []),
        ("m2", "Solve the equation x+2=3.", []),
        ("d1", "What are the symptoms of diabetes?", []),
        ("d2", "How is flu treated by a doctor?", []),
    )
    run(provider, registry, plan, max_parallel_experts=4, executor=executor)
    assert most == {"math": 1, "medicine": 2}


def failing_on_broken(error: Exception):
    """A provider whose expert raises `error` for questions that say "broken"."""

    def respond(prompt, call):
        if "broken" in question(call):
            raise error
        return "ok"

    provider = make_provider()
    provider.chat["expert-model"] = ScriptedChatModel(respond=respond)
    return provider


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_failed_parent_skips_its_descendants_and_keeps_the_rest(registry, executor):
    provider = failing_on_broken(RuntimeError("model crashed"))
    plan = plan_of(
        ("a", "Solve the broken equation.", []),
        ("b", "Check the result of q1.", ["a"]),
        ("c", "Check the result of q2.", ["b"]),
        ("d", "Solve another equation.", []),
    )
    result = run(provider, registry, plan, executor=executor)
    by_id = {a.id: a for a in result.answers}
    assert [by_id[i].status for i in "abcd"] == ["failed", "skipped", "skipped", "ok"]
    assert by_id["a"].attempts == 2 and by_id["a"].error == "RuntimeError: model crashed"
    assert by_id["c"].error == "not run: it needs b, which has no answer"


@pytest.mark.parametrize("executor", EXECUTORS)
def test_ready_sub_queries_on_one_model_are_batched_and_each_gets_its_own_answer(
    registry, executor
):
    gate, holding = threading.Event(), threading.Event()

    def respond(prompt, call):
        if question(call) == "hold":
            holding.set()
            assert gate.wait(10)
        return f"answer: {question(call)}"

    model = BatchingChatModel(respond=respond)
    provider = make_provider()
    provider.chat["expert-model"] = model
    pool = ExpertPool(provider)
    hold = pool.call("expert-model", [HumanMessage("hold")])  # keeps the model busy
    # (once it runs: queued with the run's calls, it would leave after them, by priority)
    assert holding.wait(10)
    plan = plan_of(*[(f"q{i}", f"Solve equation number {i}.", []) for i in range(6)])
    pipeline = CompLLM(registry=registry, context=CONTEXT, pool=pool, retry_policy=FAST_RETRY)
    with ThreadPoolExecutor(1) as background:
        running = background.submit(
            pipeline.invoke, "six", plan=plan, max_parallel_experts=6, max_batch_size=4
        )
        while pool.stats().queued.get("expert-model", 0) < 6:  # all six wait for the model
            time.sleep(0.001)
        gate.set()
        result = running.result(10)
    assert hold.result(1).text == "answer: hold"
    assert [a.answer for a in result.answers] == [
        f"answer: Solve equation number {i}." for i in range(6)
    ]
    assert model.batches == [4, 2]


def test_a_model_that_can_never_fit_stops_the_run_with_a_clear_error(registry):
    provider = make_provider()
    sized = SizedProvider(chat=provider.chat, sizes={"expert-model": 8 * 2**30})
    pool = ExpertPool(sized, memory_budget_bytes=2**30)
    pipeline = CompLLM(registry=registry, context=CONTEXT, pool=pool, retry_policy=FAST_RETRY)
    with pytest.raises(ModelBudgetError, match=r"'expert-model' needs 8\.00 GiB"):
        pipeline.invoke("one", plan=plan_of(("q1", "Solve x.", [])))


def test_async_runs_are_not_limited_by_the_event_loops_thread_pool(registry):
    started, release = threading.Semaphore(0), threading.Event()

    def respond(prompt, call):
        started.release()
        return "ok" if release.wait(10) else "timed out"

    provider = make_provider()
    provider.chat["expert-model"] = ScriptedChatModel(respond=respond)
    plan = plan_of(*[(f"q{i}", f"Solve equation number {i}.", []) for i in range(12)])
    pipeline = CompLLM(
        registry=registry, context=CONTEXT, provider=provider, retry_policy=FAST_RETRY
    )

    async def main():
        run_task = asyncio.ensure_future(
            pipeline.ainvoke("twelve", plan=plan, max_parallel_experts=12)
        )
        # all twelve calls are in flight at once (the default executor has 6 threads here)
        for _ in range(12):
            await asyncio.to_thread(started.acquire, True, 10)
        release.set()
        return await run_task

    result = asyncio.run(asyncio.wait_for(main(), 30))
    assert [a.answer for a in result.answers] == ["ok"] * 12


def test_a_given_plan_larger_than_the_default_limit_runs_when_the_limit_allows(registry):
    provider = make_provider()
    plan = Plan.build(
        [SubQuery(id=f"q{i}", question=f"Solve equation {i}.") for i in range(20)],
        max_subqueries=20,
    )
    result = run(provider, registry, plan, max_subqueries=20)
    assert len(result.answers) == 20
    with pytest.raises(PlanError, match="the plan has 20 sub-queries; the maximum is 16"):
        run(provider, registry, plan)


def test_an_async_run_with_more_subqueries_than_langgraph_runs_at_once_finishes(registry):
    """LangGraph runs at most `max_concurrency` (64 here) of an async run's tasks at once:
    a 100-part plan must not wait for arrivals that cannot come. (Bounded by wait_for: a
    hang fails.)"""
    plan = Plan.build(
        [SubQuery(id=f"q{i}", question=f"Solve equation {i}.") for i in range(100)],
        max_subqueries=100,
    )
    pipeline = CompLLM(
        registry=registry, context=CONTEXT, provider=make_provider(), retry_policy=FAST_RETRY
    )
    result = asyncio.run(
        asyncio.wait_for(
            pipeline.ainvoke("a hundred", plan=plan, max_subqueries=100, max_parallel_experts=4),
            120,
        )
    )
    assert len(result.answers) == 100 and {a.status for a in result.answers} == {"ok"}


def hold_arrival(monkeypatch, sid: str, until: threading.Event) -> list[bool]:
    """Makes the task of `sid` reach the gate only once `until` is set (or after 10 s);
    returns a list that gets whether `until` was set in time."""
    in_time: list[bool] = []
    arrive = Gate.arrive

    def held(gate, task_sid, wake):
        if task_sid == sid:
            in_time.append(until.wait(10))
        return arrive(gate, task_sid, wake)

    monkeypatch.setattr(Gate, "arrive", held)
    return in_time


def signal_arrival(monkeypatch, sid: str) -> threading.Event:
    """An event set once the task of `sid` waits at the gate."""
    arrived = threading.Event()
    arrive = Gate.arrive

    def signalled(gate, task_sid, wake):
        turn = arrive(gate, task_sid, wake)
        if task_sid == sid:
            arrived.set()
        return turn

    monkeypatch.setattr(Gate, "arrive", signalled)
    return arrived


def test_a_first_call_starts_without_waiting_for_every_task_to_start(registry, monkeypatch):
    """Starting LangGraph tasks takes time (hundreds of ms for a large plan): a sub-query
    with a free slot calls its expert at once, not after the last task has started."""
    first_call = threading.Event()
    in_time = hold_arrival(monkeypatch, "b", until=first_call)

    def respond(prompt, call):
        first_call.set()
        return "ok"

    provider = make_provider()
    provider.chat["expert-model"] = ScriptedChatModel(respond=respond)
    plan = plan_of(("a", "Solve equation one.", []), ("b", "Solve equation two.", []))
    result = run(provider, registry, plan)
    assert [a.status for a in result.answers] == ["ok", "ok"]
    assert in_time == [True]


def test_a_task_that_starts_first_does_not_take_the_slot_of_a_more_urgent_one(
    registry, monkeypatch
):
    """Tasks are called in an order fixed by the plan's shape (the law chain is longer, so
    `lone` is called first); priorities also weigh each expert's measured latency (maths
    is slow here, so `slow` is the critical path). With one slot, `lone` arrives first and
    waits: the slot is the more urgent task's, even before its task has arrived."""
    monkeypatch.setattr(
        Services, "expected_latency", lambda self, expert: 5.0 if expert == "math" else 1.0
    )
    lone_arrived = signal_arrival(monkeypatch, "lone")
    in_time = hold_arrival(monkeypatch, "slow", until=lone_arrived)  # wraps signal_arrival
    order: list[str] = []
    provider = make_provider()
    provider.chat["expert-model"] = ScriptedChatModel(respond=recorder(order))
    plan = plan_of(
        ("lone", "What makes a contract binding?", []),
        ("slow", "Solve the equation for x.", []),
        ("next", "What rights does a tenant have under q1?", ["lone"]),
    )
    result = run(provider, registry, plan, max_parallel_experts=1)
    assert [a.expert for a in result.answers] == ["law", "math", "law"]
    assert in_time == [True]  # the lone task was waiting before the urgent one arrived
    assert order[0] == "Solve the equation for x."


def test_a_calls_start_is_when_its_turn_came_not_when_its_task_started(registry, monkeypatch):
    """Tasks are called in a fixed order (roots first): when `b2` may start, `a2`, before it
    in that order, is called too and waits at the gate for its parent `a1`. Its recorded
    start (timelines, latency estimates) is when its own call began."""
    a2_waiting = signal_arrival(monkeypatch, "a2")

    def respond(prompt, call):
        if question(call) == "Solve a1.":
            a2_waiting.wait(10)
        return "ok"

    provider = make_provider()
    provider.chat["expert-model"] = ScriptedChatModel(respond=respond)
    plan = plan_of(
        ("a1", "Solve a1.", []),
        ("b1", "Solve b1.", []),
        ("a2", "Use q1.", ["a1"]),
        ("b2", "Use q2.", ["b1"]),
    )
    answers = {a.id: a for a in run(provider, registry, plan).answers}
    assert a2_waiting.is_set()
    assert answers["a2"].started_at >= answers["a1"].finished_at


def test_tasks_are_called_longest_chain_first_in_an_order_fixed_by_the_plan():
    plan = plan_of(
        ("r1", "Solve r1.", []),
        ("r2", "Solve r2.", []),
        ("c1", "Solve c1.", []),
        ("c2", "Use c1.", ["c1"]),
        ("c3", "Use c2.", ["c2"]),
        ("r3", "Use r1.", ["r1"]),
    )
    # c1 heads the longest chain (3); then r1 and c2 (2 each: plan order breaks the tie).
    assert chain_first_order(plan) == ["c1", "r1", "c2", "r2", "c3", "r3"]


def test_with_more_waiting_roots_than_threads_the_long_chain_still_goes_first(registry):
    """70 independent sub-queries listed before a chain, one slot: the chain's head is the
    critical path. Its task is called first, so it does not queue behind 62 waiting roots
    that hold every thread of the run. (Once c2 has answered, c3 and the roots are all
    one call from the end: plan order decides.)"""
    order: list[str] = []
    provider = make_provider()
    provider.chat["expert-model"] = ScriptedChatModel(respond=recorder(order))
    roots = [(f"r{i}", f"Solve root {i}.", []) for i in range(70)]
    chain = [("c1", "Solve c1.", []), ("c2", "Use c1.", ["c1"]), ("c3", "Use c2.", ["c2"])]
    plan = Plan.build(
        [SubQuery(id=i, question=q, depends_on=tuple(d)) for i, q, d in [*roots, *chain]],
        max_subqueries=73,
    )
    run(provider, registry, plan, max_parallel_experts=1, max_subqueries=73)
    assert order[:2] == ["Solve c1.", "Use c1."]


def test_a_task_is_called_no_earlier_than_needed(registry, monkeypatch):
    """A chain's tasks are called one after another: a task called before its parents have
    answered would hold one of the run's threads while it waits (a plan of hundreds would
    start hundreds of LangGraph tasks at once)."""
    arrived: list[str] = []  # a task reaches the gate as soon as it is called
    answered: list[str] = []
    arrive = Gate.arrive

    def arrive_and_record(gate, sid, wake):
        arrived.append(sid)
        assert answered == arrived[:-1]  # every earlier link has answered already
        return arrive(gate, sid, wake)

    def respond(prompt, call):
        answered.append(question(call).removeprefix("Step "))
        return "ok"

    monkeypatch.setattr(Gate, "arrive", arrive_and_record)
    provider = make_provider()
    provider.chat["expert-model"] = ScriptedChatModel(respond=respond)
    links = [(f"s{i}", f"Step s{i}", [f"s{i - 1}"] if i else []) for i in range(6)]
    result = run(provider, registry, plan_of(*links))
    assert [a.status for a in result.answers] == ["ok"] * 6
    assert arrived == answered == [f"s{i}" for i in range(6)]


@pytest.mark.parametrize("invoke", ["invoke", "ainvoke"])
def test_a_bug_while_recording_an_outcome_fails_the_run_instead_of_hanging_it(
    registry, monkeypatch, invoke
):
    """A failure that is not an expert's (a bug in compllm) ends the run with that error.
    The child still waiting at the gate for its failed parent is released: LangGraph waits
    for a node's tasks before it reports the node's error, so a waiting task would hang
    the run. (The 60 s bound only turns such a hang into a failure.)"""

    def bug(*args, **kwargs):
        raise RuntimeError("a bug in recording a failure")

    monkeypatch.setattr("compllm.nodes.execute.failed_answer", bug)

    provider = failing_on_broken(ValueError("the model refused"))
    plan = plan_of(("a", "Solve the broken equation.", []), ("b", "Check q1.", ["a"]))
    pipeline = CompLLM(
        registry=registry, context=CONTEXT, provider=provider, retry_policy=FAST_RETRY
    )

    def run_it():
        if invoke == "ainvoke":
            return asyncio.run(pipeline.ainvoke("a query", plan=plan))
        return pipeline.invoke("a query", plan=plan)

    errors: list[BaseException] = []

    def record_error():
        try:
            run_it()
        except BaseException as error:  # the test inspects it
            errors.append(error)

    thread = threading.Thread(target=record_error, daemon=True)  # a hang must not block exit
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the run hung"
    assert [str(e) for e in errors] == ["a bug in recording a failure"]
