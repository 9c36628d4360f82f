"""Bring your own models, agents and tools: every kind of expert model a LangChain or
LangGraph user already has, tried with the real classes (langchain-core's fake chat models,
`ChatOpenAI` against a loopback server, LangGraph's ReAct agent, `@tool`), not with our fakes.

Plans are given or made by the rule-based planner so that each test is about the experts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool
from langgraph.graph import START, StateGraph
from langgraph.types import RetryPolicy
from typing_extensions import TypedDict

from compllm import CompLLM, Context, Expert, Plan, SubQuery, build_graph
from compllm.state import plan_data
from tests.fakes import KeywordEmbeddings, make_provider

pytest.importorskip("langchain_openai")

from langchain_openai import ChatOpenAI

from tests.openai_stub import OpenAIStub, Reply

NO_RETRY = RetryPolicy(max_attempts=1)


def fake_chat(*replies: str) -> GenericFakeChatModel:
    """langchain-core's own fake: streams each reply word by word, ignores nothing it gets."""
    return GenericFakeChatModel(messages=iter([AIMessage(r) for r in replies]))


def app_with(*experts: Expert, **kwargs: Any) -> CompLLM:
    """A pipeline over `experts` whose planner and aggregator are scripted fakes and whose
    router embeds words (tests/fakes.py), so only the experts are real."""
    return CompLLM(
        experts=list(experts),
        provider=make_provider(aggregate="FINAL"),
        context=Context(
            planner_mode="rules",
            planner_model="planner-model",
            aggregator_model="aggregator-model",
            embedding_model="words",
        ),
        retry_policy=NO_RETRY,
        **kwargs,
    )


def one_part(
    expert: str, question: str, sid: str = "q1", depends_on: tuple[str, ...] = ()
) -> SubQuery:
    return SubQuery(id=sid, question=question, expert=expert, depends_on=depends_on)


def test_a_plain_function_is_an_expert_and_gets_the_fields_it_names():
    seen: dict[str, Any] = {}

    def lookup(question: str, parents: list[dict[str, str]], query: str) -> str:
        seen.update(question=question, parents=parents, query=query)
        return f"looked up: {question}"

    app = app_with(
        Expert(name="first", description="first things", model=lambda question: "42"),
        Expert(name="lookup", description="looks things up", model=lookup),
    )
    plan = Plan.build(
        [one_part("first", "What is it?"), one_part("lookup", "Use it.", "q2", ("q1",))]
    )
    result = app.invoke("What is it? Use it.", plan=plan)
    assert [a.answer for a in result.answers] == ["42", "looked up: Use it."]
    assert seen["parents"] == [{"id": "q1", "question": "What is it?", "answer": "42"}]
    assert seen["query"] == "What is it? Use it."


def test_an_async_function_expert_works_in_sync_and_async_runs():
    async def slow_echo(question: str) -> str:
        await asyncio.sleep(0)
        return question.upper()

    app = app_with(Expert(name="echo", description="echo", model=slow_echo))
    plan = Plan.build([one_part("echo", "shout this")])
    assert app.invoke("shout this", plan=plan).answer == "SHOUT THIS"
    assert asyncio.run(app.ainvoke("shout this", plan=plan)).answer == "SHOUT THIS"


def test_a_tool_is_an_expert_and_a_one_argument_tool_gets_the_question():
    @tool
    def word_count(text: str) -> str:
        """Count the words of a text."""
        return str(len(text.split()))

    app = app_with(Expert(name="counter", description="counts words", model=word_count))
    result = app.invoke(
        "count these four words", plan=Plan.build([one_part("counter", "count these four words")])
    )
    assert result.answers[0].answer == "4"


def test_a_runnable_gets_the_documented_input_and_may_return_a_dict():
    def answer(expert_input: dict[str, Any]) -> dict[str, str]:
        assert set(expert_input) == {"question", "parents", "query", "messages"}
        assert expert_input["messages"][-1].text.endswith(expert_input["question"])
        return {"answer": f"chain says: {expert_input['question']}"}

    app = app_with(Expert(name="chain", description="a chain", model=RunnableLambda(answer)))
    result = app.invoke("hi?", plan=Plan.build([one_part("chain", "hi?")]))
    assert result.answer == "chain says: hi?"


def test_langchain_cores_fake_chat_model_is_an_expert_with_system_and_user_messages():
    model = fake_chat("Paris is the capital of France.")
    app = app_with(
        Expert(
            name="geo", description="geography", model=model, system_prompt="You are a geographer."
        )
    )
    result = app.invoke(
        "Capital of France?", plan=Plan.build([one_part("geo", "Capital of France?")])
    )
    assert result.answers[0].answer == "Paris is the capital of France."


def test_an_expert_that_returns_nothing_usable_fails_once_with_the_reason_and_the_run_goes_on():
    calls = []

    def broken(question: str) -> object:
        calls.append(question)
        return 42  # not a string, message or dict

    app = CompLLM(
        experts=[
            Expert(name="broken", description="b", model=broken),
            Expert(name="ok", description="o", model=lambda question: "fine"),
        ],
        provider=make_provider(aggregate="FINAL"),
        context=Context(
            planner_mode="rules", aggregator_model="aggregator-model", embedding_model="words"
        ),
    )  # the default retry policy: 2 attempts for what is worth retrying
    plan = Plan.build([one_part("broken", "a?"), one_part("ok", "b?", "q2")])
    result = app.invoke("a? b?", plan=plan)
    failed, fine = result.answers
    assert failed.status == "failed" and "returned int" in (failed.error or "")
    assert calls == ["a?"]  # not retried: the same call would return the same thing
    assert fine.answer == "fine"


def test_a_failing_expert_falls_back_to_its_fallback_expert():
    def unparseable(question: str) -> str:
        raise ValueError("cannot read this")

    app = app_with(
        Expert(name="strict", description="s", model=unparseable, fallback="lenient"),
        Expert(name="lenient", description="l", model=lambda question: "a lenient answer"),
    )
    result = app.invoke("x?", plan=Plan.build([one_part("strict", "x?")]))
    (answer,) = result.answers
    assert answer.answer == "a lenient answer"
    assert answer.fallback_from == "strict" and "cannot read this" in (answer.fallback_reason or "")


# -- the run's config reaches every expert call ---------------------------------------


class RecordingHandler(BaseCallbackHandler):
    """Notes every chat model run and the metadata it was started with."""

    def __init__(self) -> None:
        self.chat_runs: list[dict[str, Any]] = []

    def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
        self.chat_runs.append(kwargs.get("metadata") or {})


def two_chat_experts() -> CompLLM:
    return app_with(
        Expert(name="geo", description="geography", model=fake_chat("Paris is in France.")),
        Expert(name="bio", description="biology", model=fake_chat("Cells have a membrane.")),
    )


TWO_PARTS = Plan.build(
    [one_part("geo", "Where is Paris?"), one_part("bio", "What do cells have?", "q2")]
)


def test_a_callback_handler_sees_one_chat_model_run_per_expert_call_tagged_with_its_subquery():
    handler = RecordingHandler()
    app = two_chat_experts()
    app.graph.invoke(
        {"query": "Where is Paris? What do cells have?", "plan": TWO_PARTS.model_dump(mode="json")},
        config={"callbacks": [handler]},
        context=app.context,
    )
    experts = sorted(
        (m["compllm_subquery"], m["compllm_expert"])
        for m in handler.chat_runs
        if "compllm_subquery" in m
    )
    assert experts == [("q1", "geo"), ("q2", "bio")]


def test_stream_mode_messages_yields_each_experts_tokens_tagged_with_its_subquery():
    app = two_chat_experts()
    tokens: dict[str, list[str]] = {}
    for chunk, metadata in app.graph.stream(
        {"query": "Where is Paris? What do cells have?", "plan": TWO_PARTS.model_dump(mode="json")},
        context=app.context,
        stream_mode="messages",
    ):
        if "compllm_subquery" in metadata:
            tokens.setdefault(metadata["compllm_subquery"], []).append(chunk.text)
    assert "".join(tokens["q1"]) == "Paris is in France."
    assert "".join(tokens["q2"]) == "Cells have a membrane."
    assert len(tokens["q1"]) > 1  # token by token, not one message


def test_astream_yields_events_and_the_result():
    app = two_chat_experts()

    async def collect() -> list[str]:
        return [
            kind
            async for kind, _ in app.astream("Where is Paris? What do cells have?", plan=TWO_PARTS)
        ]

    kinds = asyncio.run(collect())
    assert kinds.count("event") == 4  # a start and an end per sub-query
    assert kinds[-1] == "result"


# -- compllm inside a parent graph, and a graph inside compllm ---------------------------


class AppContext(TypedDict):
    user: str


class ParentState(TypedDict, total=False):
    question: str
    reply: str


def test_compllm_runs_inside_a_parent_graph_that_has_its_own_context_schema():
    app = app_with(Expert(name="echo", description="echo", model=lambda question: "inner answer"))
    inner = app.graph

    def ask_experts(state: ParentState) -> ParentState:
        out = inner.invoke({"query": state["question"]})  # settings: defaults or config key
        return {"reply": out["final_answer"]}

    parent = StateGraph(ParentState, context_schema=AppContext)
    parent.add_node("ask_experts", ask_experts)
    parent.add_edge(START, "ask_experts")
    settings = {
        "planner_mode": "rules",
        "aggregator_model": "aggregator-model",
        "embedding_model": "words",
    }
    out = parent.compile().invoke(
        {"question": "Say something?"},
        context={"user": "ada"},
        config={"configurable": {"compllm": settings}},
    )
    assert out["reply"] == "inner answer"


def test_a_compiled_graph_expert_runs_as_a_subgraph_with_its_events_visible():
    class Inner(TypedDict, total=False):
        messages: list[Any]
        answer: str

    def think(state: Inner) -> Inner:
        return {"answer": f"subgraph saw {len(state['messages'])} message"}

    builder = StateGraph(Inner)
    builder.add_node("think", think)
    builder.add_edge(START, "think")
    agent = builder.compile(name="thinker")
    app = app_with(Expert(name="thinker", description="thinks", model=agent))
    inner_updates = [
        namespace
        for namespace, _mode, chunk in app.graph.stream(
            {"query": "Think?", "plan": plan_data(Plan.build([one_part("thinker", "Think?")]))},
            context=app.context,
            stream_mode=["updates"],
            subgraphs=True,
        )
        if "think" in chunk
    ]
    # The agent's own node ran in its own namespace, under compllm's `expert` task.
    (namespace,) = inner_updates
    assert namespace[-1].startswith("expert:")
    result = app.invoke("Think?", plan=Plan.build([one_part("thinker", "Think?")]))
    assert result.answers[0].answer == "subgraph saw 1 message"


# -- ChatOpenAI against a loopback server: expert, aggregator, ReAct agent ----------------


@pytest.fixture
def openai_server():
    stub = OpenAIStub().start()
    yield stub
    stub.stop()


def chat_openai(stub: OpenAIStub, **kwargs: Any) -> ChatOpenAI:
    return ChatOpenAI(model="stub", base_url=stub.url, api_key="none", max_retries=0, **kwargs)


def test_chat_openai_is_an_expert_and_gets_only_the_settings_the_expert_sets(openai_server):
    openai_server.respond = lambda request: Reply("The Magna Carta was sealed by King John.")
    from compllm.registry import GenerationSettings

    app = app_with(
        Expert(
            name="history",
            description="history",
            model=chat_openai(openai_server),
            generation=GenerationSettings(max_new_tokens=77),
        )
    )
    result = app.invoke(
        "Who sealed the Magna Carta?",
        plan=Plan.build([one_part("history", "Who sealed the Magna Carta?")]),
    )
    assert result.answers[0].answer == "The Magna Carta was sealed by King John."
    (request,) = openai_server.requests
    assert request.get("max_completion_tokens", request.get("max_tokens")) == 77
    assert "repetition_penalty" not in request and "max_new_tokens" not in request
    assert [m["role"] for m in request["messages"]] == ["system", "user"]


def test_a_function_aggregator_gets_the_query_and_the_parts_it_names():
    def compose(query: str, parts: list[dict[str, Any]]) -> str:
        return f"{len(parts)} parts for {query!r}: " + " ".join(p["answer"] for p in parts)

    app = app_with(
        Expert(name="geo", description="geography", model=lambda question: "France."),
        Expert(name="bio", description="biology", model=lambda question: "Membranes."),
        aggregator=compose,
    )
    result = app.invoke("Where is Paris? What do cells have?", plan=TWO_PARTS)
    assert (result.aggregation, result.answer) == (
        "llm",
        "2 parts for 'Where is Paris? What do cells have?': France. Membranes.",
    )


def test_a_function_naming_an_input_its_call_lacks_fails_that_part_naming_it():
    calls: list[str] = []

    def needs_parts(question: str, parts: list[Any]) -> str:  # `parts` is the aggregator's
        calls.append(question)
        return "never"

    app = app_with(Expert(name="geo", description="geography", model=needs_parts))
    result = app.invoke("Where is Paris?", plan=Plan.build([one_part("geo", "Where is Paris?")]))
    (answer,) = result.answers
    assert answer.status == "failed" and "parts" in (answer.error or "")
    assert calls == []


def test_chat_openai_is_an_aggregator(openai_server):
    openai_server.respond = lambda request: Reply("Paris is in France. Cells have a membrane.")
    app = app_with(
        Expert(name="geo", description="geography", model=lambda question: "Paris is in France."),
        Expert(name="bio", description="biology", model=lambda question: "Cells have a membrane."),
        aggregator=chat_openai(openai_server),
    )
    result = app.invoke("Where is Paris? What do cells have?", plan=TWO_PARTS)
    assert (result.aggregation, result.answer) == (
        "llm",
        "Paris is in France. Cells have a membrane.",
    )


def test_a_react_agent_that_calls_a_tool_is_an_expert(openai_server):
    from langgraph.prebuilt import create_react_agent

    @tool
    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        return a * b

    replies = iter(
        [Reply("", tool_calls=[("multiply", {"a": 6, "b": 7})]), Reply("6 times 7 is 42.")]
    )
    openai_server.respond = lambda request: next(replies)
    agent = create_react_agent(chat_openai(openai_server), [multiply])
    app = app_with(Expert(name="maths", description="arithmetic", model=agent))
    result = app.invoke(
        "What is 6 times 7?", plan=Plan.build([one_part("maths", "What is 6 times 7?")])
    )
    assert result.answers[0].answer == "6 times 7 is 42."
    tool_result = openai_server.requests[1]["messages"][-1]
    assert (tool_result["role"], tool_result["content"]) == ("tool", "42")


def test_a_model_given_arguments_it_rejects_fails_without_retries(openai_server):
    """The bug this suite was written for: Hugging Face keyword arguments sent to any model."""
    app = CompLLM(
        experts=[Expert(name="remote", description="r", model=chat_openai(openai_server))],
        provider=make_provider(aggregate="FINAL"),
        context=Context(planner_mode="rules", embedding_model="words"),
    )
    result = app.invoke("Hello?", plan=Plan.build([one_part("remote", "Hello?")]))
    assert result.answers[0].status == "ok"
    assert all("max_new_tokens" not in r for r in openai_server.requests)


def test_embeddings_for_object_experts_come_from_the_provider():
    provider = make_provider()
    provider.embedding = KeywordEmbeddings()
    app = CompLLM(
        experts=[
            Expert(
                name="cooking", description="recipes cooking baking", model=lambda question: "x"
            ),
            Expert(name="general", description="anything else", model=lambda question: "y"),
        ],
        provider=provider,
        context=Context(
            planner_mode="rules", embedding_model="words", aggregator_model="aggregator-model"
        ),
    )
    result = app.invoke("Give me a baking recipe for bread")
    assert result.routes[0].expert == "cooking"


def test_build_graph_takes_experts_and_returns_a_compiled_graph_and_a_builder():
    from compllm import create_compllm

    experts = [Expert(name="only", description="everything", model=lambda question: "yes")]
    builder = create_compllm(experts=experts, provider=make_provider())
    assert "aggregate" in builder.nodes  # uncompiled: add nodes, then compile it yourself
    graph = build_graph(experts=experts, provider=make_provider())
    out = graph.invoke(
        {"query": "Anything?"}, context=Context(planner_mode="rules", embedding_model="words")
    )
    assert out["final_answer"] == "yes"


# -- planners of every kind --------------------------------------------------------------

TWO_QUESTIONS = "Where is Paris? What do cells have?"
PLAN_JSON = (
    '{"subqueries": [{"id": "q1", "question": "Where is Paris?", "depends_on": []}, '
    '{"id": "q2", "question": "What do cells have?", "depends_on": []}]}'
)


def planned_by(planner: Any) -> Any:
    app = app_with(
        Expert(name="geo", description="geography Paris", model=lambda question: "France."),
        Expert(name="bio", description="biology cells", model=lambda question: "Membranes."),
        planner=planner,
    )
    return app.invoke(TWO_QUESTIONS, planner_mode="llm")


def test_chat_openai_plans_through_its_structured_output(openai_server):
    openai_server.respond = lambda request: Reply(PLAN_JSON)
    result = planned_by(chat_openai(openai_server))
    assert result.planner_path == "llm"
    assert [s.question for s in result.plan.subqueries] == [
        "Where is Paris?",
        "What do cells have?",
    ]
    (request,) = openai_server.requests
    assert request["response_format"]["type"] == "json_schema"
    assert "json_schema" not in request and "max_new_tokens" not in request


def test_a_runnable_or_a_function_can_plan():
    def planner(query: str, messages: list[Any]) -> Plan:
        return Plan.build(
            [
                SubQuery(id="q1", question="Where is Paris?"),
                SubQuery(id="q2", question="What do cells have?"),
            ]
        )

    for given in (RunnableLambda(lambda inputs: planner(**inputs)), planner):
        result = planned_by(given)
        assert (result.planner_path, len(result.plan)) == ("llm", 2)


def test_a_planner_that_fails_is_recorded_and_the_rules_plan(openai_server):
    openai_server.respond = lambda request: Reply("", status=500)
    app = app_with(
        Expert(name="geo", description="geography Paris", model=lambda question: "France."),
        planner=chat_openai(openai_server),
    )
    result = app.invoke(TWO_QUESTIONS, planner_mode="auto")
    assert result.planner_path == "rules"
    assert "500" in (result.planner_attempts[0].error or "")
