"""Limits with clear errors (query length, plan size, token budgets, run time) and safety
defaults (no remote code, safe registry parsing)."""

import asyncio
import io
import threading
import time
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field

import compllm.state
from compllm import CompLLM, Context, Plan, PlanError, QueryError, SubQuery
from compllm.cli import main
from compllm.errors import ConfigError, RegistryError
from compllm.pool import ExpertPool
from compllm.registry import parse_registry
from tests.fakes import (
    TEST_REGISTRY_YAML,
    Call,
    FakeProvider,
    ScriptedChatModel,
    make_provider,
    plan_json,
)

FAKES = {
    "planner_model": "planner-model",
    "aggregator_model": "aggregator-model",
    "embedding_model": "fake",
}


def app(registry, **provider_options):
    return CompLLM(registry=registry, provider=make_provider(**provider_options))


def test_a_query_longer_than_the_limit_is_refused_with_the_limit(registry):
    with pytest.raises(QueryError, match=r"20001 characters long; the limit is 20000"):
        app(registry).invoke("x" * 20_001, **FAKES)
    with pytest.raises(QueryError, match="the limit is 10"):
        app(registry).invoke("What is a felony, exactly?", max_query_chars=10, **FAKES)


def test_a_plan_larger_than_the_limit_is_refused(registry):
    too_many = Plan.build(
        [SubQuery(id=f"q{i}", question=f"Question {i}?") for i in range(6)], max_subqueries=6
    )
    with pytest.raises(PlanError, match="6 sub-queries"):
        app(registry).invoke("Six questions.", plan=too_many, max_subqueries=5, **FAKES)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_parallel_experts": 0}, "Context.max_parallel_experts must be greater than 0, not 0"),
        ({"planner_max_new_tokens": -1}, "planner_max_new_tokens must be greater than 0, not -1"),
        ({"aggregator_max_new_tokens": 10**6}, "must be at most 32768, not 1000000"),
        ({"max_run_s": 0}, "Context.max_run_s must be greater than 0.0, not 0"),
        ({"expert_timeout_s": "soon"}, "Context.expert_timeout_s must be a number, not 'soon'"),
        ({"planner_mode": "telepathy"}, "must be one of 'auto', 'learned', 'llm' or 'rules'"),
        ({"executor": "warp"}, "Context.executor must be one of 'dataflow' or 'waves', not 'warp'"),
    ],
)
def test_impossible_settings_fail_at_once_naming_the_field(settings, message):
    with pytest.raises(ConfigError, match=message):
        Context(**settings)


def test_an_expert_cannot_ask_for_more_tokens_than_the_limit():
    with pytest.raises(RegistryError, match="max_new_tokens"):
        parse_registry(
            "generalist: g\nexperts:\n  - {name: g, description: d, system_prompt: s,"
            " generation: {max_new_tokens: 100000}}\n",
            source="big.yaml",
        )


def test_the_cli_reports_a_limit_as_one_line(tmp_path):
    err = io.StringIO()
    code = main(
        ["ask", "y" * 20_001, "--planner", "rules"],
        out=io.StringIO(),
        err=err,
        provider=make_provider(),
    )
    assert code == 2
    assert err.getvalue().startswith("compllm: error: the query is 20001 characters long")


# -- total run time -------------------------------------------------------------------------
#
# No test waits for the limit to pass: a fake clock stands in for `compllm.state.clock`, and
# the expert that is meant to run out of time moves it on by a day.

FOUR_PRODUCTS = "Multiply 1 and 7. Multiply 2 and 7. Multiply 3 and 7. Multiply 4 and 7."
SLOW_PLAN = plan_json(*[(f"q{i}", f"Multiply two numbers, {i} and 7.", []) for i in range(1, 5)])
A_DAY = 86_400.0


class FakeClock:
    """Now, as the run's time limit sees it: the real time when the test starts, moved only
    by `advance`. (The run stamps its start with the real time a moment later, so until a
    test moves the clock the run has at least its whole limit left.)"""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(compllm.state, "clock", fake)
    return fake


def question(call: Call) -> str:
    return call.messages[-1].text.splitlines()[-1].removeprefix("Question: ")


def one_at_a_time(registry, model) -> CompLLM:
    provider = make_provider(planner=SLOW_PLAN, aggregate="all four products")
    provider.chat["expert-model"] = model
    return CompLLM(registry=registry, provider=provider)


LIMIT = {"max_parallel_experts": 1, **FAKES}


@pytest.mark.parametrize("executor", ["dataflow", "waves"])
def test_a_run_past_its_time_limit_ends_with_the_answers_it_has(registry, clock, executor):
    asked: list[str] = []

    def respond(prompt: str, call: Call) -> str:
        asked.append(question(call))
        if len(asked) == 2:
            clock.advance(A_DAY)  # the second call ends after the run's time is up
        return f"product {len(asked)}"

    pipeline = one_at_a_time(registry, ScriptedChatModel(respond=respond))
    result = pipeline.invoke(FOUR_PRODUCTS, max_run_s=60, executor=executor, **LIMIT)
    assert len(asked) == 2  # no call starts once the time is up
    answered = {a.question: a for a in result.answers if a.status == "ok"}
    assert sorted(answered) == sorted(asked)  # a call that ended late keeps its answer
    expired = [a for a in result.answers if a.status == "failed"]
    assert len(expired) == 2
    assert all(
        a.error == "not answered: the run reached its time limit (60 s, Context.max_run_s)"
        for a in expired
    )
    # No time left for the aggregator model: the answers so far, put together.
    assert result.aggregation == "concatenated"
    assert result.aggregation_error == "no time left to compose (Context.max_run_s)"
    assert "product 1" in result.answer and "product 2" in result.answer


def test_a_sync_run_past_its_time_limit_drops_the_call_still_running(registry, clock):
    """The sub-query whose call is still running when the time is up fails with the reason;
    its call's answer, when it comes, is dropped. (The run itself returns once that call's
    thread ends: LangGraph waits for a step's tasks.)"""
    release = threading.Event()
    asked: list[str] = []

    def respond(prompt: str, call: Call) -> str:
        asked.append(question(call))
        if len(asked) == 2:
            clock.advance(A_DAY)
            assert release.wait(30), "the test never released the late call"
            return "too late"
        return "in time"

    pipeline = one_at_a_time(registry, ScriptedChatModel(respond=respond))
    timed_out: list[str] = []
    result = None
    for kind, payload in pipeline.stream(FOUR_PRODUCTS, max_run_s=0.05, **LIMIT):
        if kind == "event" and "time limit" in (payload.get("error") or ""):
            timed_out.append(payload["id"])
            release.set()  # the run has given up on the late call: let it end
        elif kind == "result":
            result = payload
    assert result is not None
    assert [(a.question, a.status, a.answer) for a in result.answers][:2] == [
        (asked[0], "ok", "in time"),
        (asked[1], "failed", ""),
    ]
    assert [a.status for a in result.answers] == ["ok", "failed", "failed", "failed"]
    assert sorted(timed_out) == ["q2", "q3", "q4"]
    assert "too late" not in result.answer


class StuckAfterFirstAnswer(BaseChatModel):
    """A natively async model (a remote endpoint): answers its first call; its second call
    moves the clock past the run's limit and never answers, and records being cancelled."""

    clock: Any
    calls: int = 0
    cancelled: threading.Event = Field(default_factory=threading.Event)

    @property
    def _llm_type(self) -> str:
        return "stuck-after-first-answer"

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        raise AssertionError("an async run awaits this model; it is never called on a thread")

    async def _agenerate(
        self, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> ChatResult:
        self.calls += 1
        if self.calls == 2:
            self.clock.advance(A_DAY)
            try:
                await asyncio.Event().wait()  # set by nobody: only cancelling ends it
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        return ChatResult(generations=[ChatGeneration(message=AIMessage("in time"))])


def test_an_async_run_past_its_time_limit_cancels_its_calls(registry, clock):
    model = StuckAfterFirstAnswer(clock=clock)
    provider = make_provider(planner=SLOW_PLAN)
    provider.chat["expert-model"] = model
    pool = ExpertPool(provider)
    with pool.lease("expert-model"):  # loaded, so every call is awaited on the event loop
        pass
    pipeline = CompLLM(registry=registry, pool=pool)
    result = asyncio.run(
        asyncio.wait_for(pipeline.ainvoke(FOUR_PRODUCTS, max_run_s=0.05, **LIMIT), 30)
    )
    assert model.cancelled.is_set()  # the call still running was cancelled, not left behind
    assert model.calls == 2
    assert [a.status for a in result.answers] == ["ok", "failed", "failed", "failed"]
    assert all("time limit" in (a.error or "") for a in result.answers[1:])
    assert result.answers[0].answer == "in time"


# -- safety defaults ---------------------------------------------------------------------------

CUSTOM_CODE_MATH = TEST_REGISTRY_YAML.replace(
    "    model: expert-model\n    system_prompt: You are a mathematician.",
    "    model: custom-code-model\n    system_prompt: You are a mathematician.\n"
    "    trust_remote_code: true",
)


def test_models_load_without_remote_code_unless_their_expert_asks():
    class RecordingProvider(FakeProvider):
        def chat_model(self, ref: str, *, trust_remote_code: bool = False) -> BaseChatModel:
            loaded.append((ref, trust_remote_code))
            return super().chat_model(ref)

    loaded: list[tuple[str, bool]] = []
    chat = make_provider(aggregate="both parts").chat
    chat["custom-code-model"] = ScriptedChatModel(respond=lambda prompt, call: "2x")
    pipeline = CompLLM(
        registry=parse_registry(CUSTOM_CODE_MATH, source="custom-code.yaml"),
        provider=RecordingProvider(chat=chat),
    )
    plan = Plan.build(
        [
            SubQuery(id="q1", question="What is the derivative of x^2?", expert="math"),
            SubQuery(id="q2", question="What are the symptoms of diabetes?", expert="medicine"),
        ]
    )
    result = pipeline.invoke("Derivative of x^2; symptoms of diabetes?", plan=plan, **FAKES)
    assert [a.status for a in result.answers] == ["ok", "ok"]
    assert sorted(loaded) == [
        ("aggregator-model", False),
        ("custom-code-model", True),  # only the expert whose registry entry asks for it
        ("expert-model", False),
    ]


def test_registry_files_are_parsed_safely(tmp_path):
    marker = tmp_path / "executed"
    hostile = (
        "generalist: g\n"
        f"threshold: !!python/object/apply:os.system ['touch {marker}']\n"
        "experts:\n  - {name: g, description: d, system_prompt: s}\n"
    )
    with pytest.raises(RegistryError, match="not valid YAML"):
        parse_registry(hostile, source="hostile.yaml")
    assert not marker.exists()
