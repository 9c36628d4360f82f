"""The expert pool: memory budget, eviction, batching, priority. No timing: blocked fakes
and events say when something has happened."""

import asyncio
import random
import threading
from concurrent.futures import wait

import pytest
from langchain_core.messages import HumanMessage

from compllm.errors import ModelBudgetError
from compllm.pool import ExpertPool, parse_bytes
from tests.fakes import (
    AsyncNativeChatModel,
    BatchingChatModel,
    ScriptedChatModel,
    SizedProvider,
)

MB = 2**20


def ask(text: str) -> list[HumanMessage]:
    return [HumanMessage(text)]


def echo(prompt, call):
    return f"answer to {call.messages[-1].text}"


def blocked_until(gate: threading.Event, started: threading.Event | None = None):
    """Answers only once the test opens `gate`; sets `started` when the call begins."""

    def respond(prompt, call):
        if started is not None:
            started.set()
        assert gate.wait(10), "the test never opened the gate"
        return echo(prompt, call)

    return respond


def test_calls_to_many_models_never_hold_more_than_the_budget():
    sizes = {"a": 40 * MB, "b": 40 * MB, "c": 30 * MB, "d": 60 * MB}
    provider = SizedProvider(
        chat={ref: ScriptedChatModel(respond=echo, delay_s=0.002) for ref in sizes}, sizes=sizes
    )
    pool = ExpertPool(provider, memory_budget_bytes=100 * MB)
    rng = random.Random(7)
    futures = [pool.call(rng.choice(list(sizes)), ask(f"q{i}")) for i in range(200)]
    wait(futures, timeout=60)
    assert all(f.result().text.startswith("answer to q") for f in futures)
    stats = pool.stats()
    assert provider.peak_live <= 100 * MB and stats.peak_bytes <= 100 * MB
    assert stats.evictions > 0 and stats.used_bytes == sum(provider.live.values())


def test_the_least_recently_used_idle_model_is_evicted_never_a_busy_one():
    gate, busy_started = threading.Event(), threading.Event()
    provider = SizedProvider(
        chat={
            "busy": ScriptedChatModel(respond=blocked_until(gate, busy_started)),
            "old": ScriptedChatModel(respond=echo),
            "recent": ScriptedChatModel(respond=echo),
            "new": ScriptedChatModel(respond=echo),
        },
        sizes={"busy": 40 * MB, "old": 20 * MB, "recent": 20 * MB, "new": 30 * MB},
    )
    pool = ExpertPool(provider, memory_budget_bytes=100 * MB)
    pool.call("old", ask("1")).result(5)
    pool.call("recent", ask("2")).result(5)
    busy = pool.call("busy", ask("3"))
    assert busy_started.wait(10)  # loaded and working: 80 MB in use
    pool.call("new", ask("4")).result(5)  # needs 30 MB: one idle model must go
    assert provider.released == ["old"]
    assert set(pool.stats().loaded) == {"busy", "recent", "new"}
    gate.set()
    assert busy.result(5).text == "answer to 3"


def test_a_model_waits_for_room_while_every_loaded_model_is_working():
    gate, a_started, b_waits = threading.Event(), threading.Event(), threading.Event()
    provider = SizedProvider(
        chat={
            "a": ScriptedChatModel(respond=blocked_until(gate, a_started)),
            "b": BatchingChatModel(respond=echo),
        },
        sizes={"a": 60 * MB, "b": 60 * MB},
    )

    def on_event(message: str) -> None:
        if message == "b waits for room: every loaded model is working":
            b_waits.set()

    pool = ExpertPool(provider, memory_budget_bytes=100 * MB, on_event=on_event)
    first = pool.call("a", ask("first"))
    assert a_started.wait(10)
    second = pool.call("b", ask("second"))
    # No room for "b", and "a" has work: "b" waits (and says so) instead of evicting "a".
    assert b_waits.wait(10), "b's load never waited for room"
    assert set(pool.stats().loaded) == {"a"} and provider.released == []
    assert provider.loads == ["a"]
    gate.set()
    assert second.result(5).text == "answer to second"
    assert first.result(5).text == "answer to first"
    assert provider.released == ["a"] and provider.peak_live == 60 * MB


def test_a_model_larger_than_the_whole_budget_is_an_error_not_a_wait():
    provider = SizedProvider(
        chat={"huge": ScriptedChatModel(respond=echo)}, sizes={"huge": 2 * 2**30}
    )
    pool = ExpertPool(provider, memory_budget_bytes=parse_bytes("1GiB"))
    with pytest.raises(
        ModelBudgetError, match=r"'huge' needs 2.00 GiB but the memory budget is 1.00 GiB"
    ):
        pool.call("huge", ask("q")).result(5)
    with pytest.raises(ModelBudgetError), pool.lease("huge"):
        pass
    assert provider.loads == []


def test_experts_on_the_same_weights_share_one_loaded_copy():
    provider = SizedProvider(chat={"base": ScriptedChatModel(respond=echo)}, sizes={"base": MB})
    pool = ExpertPool(provider, memory_budget_bytes=10 * MB)
    futures = [pool.call("base", ask(f"q{i}"), {"temperature": i / 10}) for i in range(5)]
    wait(futures, timeout=10)
    with pool.lease("base") as model:
        assert model is provider.chat["base"]
    assert provider.loads == ["base"] and pool.stats().loads == 1


def test_calls_queued_for_a_batching_model_share_one_generation_and_get_their_own_answers():
    gate, holding = threading.Event(), threading.Event()

    def respond(prompt, call):
        if call.messages[-1].text == "hold":
            holding.set()
            assert gate.wait(10)
        return echo(prompt, call)

    model = BatchingChatModel(respond=respond)
    pool = ExpertPool(SizedProvider(chat={"m": model}), max_batch_size=4)
    pool.call("m", ask("warm-up")).result(5)  # loaded: from now on "m" batches
    hold = pool.call("m", ask("hold"))
    assert holding.wait(10)  # the model is busy with "hold": what follows queues
    futures = {f"q{i}": pool.call("m", ask(f"q{i}")) for i in range(6)}
    futures["other"] = pool.call("m", ask("other"), {"max_new_tokens": 5})
    gate.set()
    assert hold.result(5).text == "answer to hold"
    wait(futures.values(), timeout=10)
    assert {q: f.result().text for q, f in futures.items()} == {
        q: f"answer to {q}" for q in futures
    }
    # six calls with the same settings, at most four at a time; other settings never mixed in
    assert model.batches == [4, 2]
    assert pool.stats().batch_sizes == [1, 1, 4, 2, 1]


def test_queued_calls_leave_in_priority_order():
    gate, first_started = threading.Event(), threading.Event()
    order: list[str] = []

    def respond(prompt, call):
        text = call.messages[-1].text
        if text == "first":
            first_started.set()
            assert gate.wait(10)
        order.append(text)
        return text

    provider = SizedProvider(chat={"m": BatchingChatModel(respond=respond)})
    pool = ExpertPool(provider, max_batch_size=1)
    pool.call("m", ask("warm-up")).result(5)
    first = pool.call("m", ask("first"))  # occupies the model
    assert first_started.wait(10)
    calls = [
        pool.call("m", ask(name), priority=p) for name, p in [("low", 1), ("high", 9), ("mid", 5)]
    ]
    gate.set()
    wait([first, *calls], timeout=10)
    assert order[-3:] == ["high", "mid", "low"]


def test_a_cancelled_call_that_has_not_started_never_runs():
    gate, started = threading.Event(), threading.Event()
    model = BatchingChatModel(respond=blocked_until(gate, started))
    pool = ExpertPool(SizedProvider(chat={"m": model}), max_batch_size=1)
    running = pool.call("m", ask("running"))
    assert started.wait(10)
    queued = pool.call("m", ask("queued"))
    assert queued.cancel()
    gate.set()
    assert running.result(5).text == "answer to running"
    pool.call("m", ask("after")).result(5)
    assert [c.messages[-1].text for c in model.calls] == ["running", "after"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("6GB", 6 * 10**9), ("512MiB", 512 * 2**20), ("1.5G", 1_500_000_000), ("1000", 1000)],
)
def test_memory_sizes_read_like_people_write_them(text, expected):
    assert parse_bytes(text) == expected


def test_a_memory_size_that_is_not_one_is_a_clear_error():
    with pytest.raises(ValueError, match="not a memory size: 'lots'"):
        parse_bytes("lots")


def test_an_async_native_model_is_awaited_on_the_loop_and_a_timeout_cancels_it():
    model = AsyncNativeChatModel()
    pool = ExpertPool(SizedProvider(chat={"remote": model}, sizes={"remote": MB}))
    with pool.lease("remote"):  # loaded
        pass

    async def main():
        first = await pool.acall("remote", ask("q"))
        model.answers = False  # from now on the endpoint is stuck: only a timeout ends a call
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(pool.acall("remote", ask("stuck")), 0.05)
        return first

    assert asyncio.run(main()).text == "async answer"
    assert model.threads == ["MainThread", "MainThread"] and model.cancelled
    pool.unload_all()  # nothing holds it any more
    assert pool.stats().loaded == {}
