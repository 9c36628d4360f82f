"""Remote experts on an OpenAI-compatible endpoint (here a loopback stub that shows the
requests and misbehaves on demand): mixed registries, remote planner and aggregator,
concurrency, and every way an endpoint fails, with and without a fallback expert."""

import pytest
from langgraph.types import RetryPolicy

pytest.importorskip("langchain_openai")

from compllm import CompLLM
from compllm.errors import ConfigError, RegistryError
from compllm.models import ModelHub
from compllm.registry import parse_registry
from compllm.remote import is_remote, parse_remote, remote_chat_model
from tests.fakes import FakeProvider, make_provider, plan_json
from tests.openai_stub import OpenAIStub, Reply

FAST_RETRY = RetryPolicy(max_attempts=2, initial_interval=0.01, jitter=False)
PLAN = plan_json(
    ("q1", "Multiply two numbers, 12 and 7.", []),
    ("q2", "What are the symptoms of diabetes?", []),
)
QUERY = "Multiply two numbers, 12 and 7. What are the symptoms of diabetes?"


class MixedProvider(FakeProvider):
    """Fake local models, and real `ChatOpenAI` clients for remote references."""

    def chat_model(self, ref, *, trust_remote_code=False):
        return remote_chat_model(ref) if is_remote(ref) else super().chat_model(ref)


def registry_with(
    math_model: str, *, fallback: str | None = None, options: str = "", limit: int | None = None
):
    return parse_registry(
        f"""
generalist: general
threshold: 0.0
experts:
  - name: math
    description: mathematics arithmetic multiply numbers
    examples: [multiply two numbers, what is 12 times 7]
    model: "{math_model}{options}"
    system_prompt: You are a mathematician.
    generation: {{max_new_tokens: 48, repetition_penalty: 1.2}}
    {f"fallback: {fallback}" if fallback else ""}
    {f"max_concurrency: {limit}" if limit else ""}
  - name: medicine
    description: medicine health disease symptoms diabetes
    examples: [what are the symptoms of diabetes]
    model: expert-model
    system_prompt: You are a physician.
  - name: general
    description: everything else
    model: expert-model
    system_prompt: You are a helpful assistant.
""",
        source="mixed.yaml",
    )


@pytest.fixture
def stub():
    server = OpenAIStub(respond=lambda request: Reply("84")).start()
    yield server
    server.stop()


def run(registry, **context):
    provider = MixedProvider(
        chat=make_provider(
            planner=PLAN,
            expert_answers={"diabetes": "Thirst and fatigue.", "Multiply": "84 (local)"},
            aggregate="12*7 = 84; diabetes: thirst and fatigue.",
        ).chat
    )
    settings = {
        "planner_model": "planner-model",
        "aggregator_model": "aggregator-model",
        "embedding_model": "fake",
        **context,
    }
    app = CompLLM(registry=registry, provider=provider, retry_policy=FAST_RETRY)
    return app.invoke(QUERY, **settings), provider


def test_remote_references_name_the_model_the_endpoint_and_its_options():
    endpoint = parse_remote(
        "openai:Qwen/Qwen2.5-7B@https://gpu-3:8000/v1?timeout=30&api_key_env=TEAM_KEY&stream=1"
    )
    assert endpoint.model == "Qwen/Qwen2.5-7B"
    assert endpoint.base_url == "https://gpu-3:8000/v1"
    assert (endpoint.timeout_s, endpoint.api_key_env, endpoint.stream) == (30.0, "TEAM_KEY", True)
    assert parse_remote("openai:m@http://127.0.0.1:8080/v1").timeout_s == 120.0
    for bad, why in [
        ("openai:http://host/v1", "expected openai:MODEL@"),
        ("openai:m@http:///v1", "no host"),
        ("openai:m@http://h/v1?timeout=soon", "number"),
        ("openai:m@http://h/v1?retries=3", "unknown options retries"),
    ]:
        with pytest.raises(ConfigError, match=why):
            parse_remote(bad)


def test_the_hub_builds_remote_clients_without_loading_anything(stub):
    hub = ModelHub()
    ref = f"openai:served@{stub.url}"
    assert hub.estimate_chat_model_bytes(ref) == 0
    assert type(hub.chat_model(ref)).__name__ == "RemoteChatModel"
    assert stub.requests == []  # no request until a call


def test_one_plan_mixes_a_remote_expert_and_a_local_one(stub):
    result, _ = run(registry_with(f"openai:served-math@{stub.url}"))
    answers = {a.expert: a for a in result.answers}
    assert answers["math"].answer == "84" and answers["math"].output_tokens == 1
    assert answers["medicine"].answer == "Thirst and fatigue."
    (request,) = stub.requests
    assert request["model"] == "served-math"
    assert request["max_completion_tokens"] == request["max_tokens"] == 48
    assert request["temperature"] == 0.0
    assert request["repetition_penalty"] == request["repeat_penalty"] == 1.2
    assert request["messages"][0] == {"role": "system", "content": "You are a mathematician."}
    assert "Multiply two numbers" in request["messages"][-1]["content"]


def test_the_planner_and_the_aggregator_can_be_remote(stub):
    stub.respond = lambda request: Reply(
        PLAN if "response_format" in request else "Both parts answered."
    )
    result, provider = run(
        registry_with("expert-model"),
        planner_model=f"openai:planner@{stub.url}",
        aggregator_model=f"openai:writer@{stub.url}",
    )
    assert result.planner_path == "llm" and len(result.plan) == 2
    assert [r["model"] for r in stub.requests] == ["planner", "writer"]
    schema = stub.requests[0]["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["subqueries"]["type"] == "array"
    assert not provider.chat["planner-model"].calls


@pytest.mark.parametrize(("limit", "in_flight"), [(None, 4), (2, 2)])
def test_calls_to_one_endpoint_run_concurrently_within_the_experts_limit(stub, limit, in_flight):
    # The server answers only once `in_flight` requests have been in flight together (or
    # fails them with 503 after 10 s): the calls can end only by running concurrently.
    stub.hold_until_in_flight = in_flight
    plan = plan_json(*[(f"q{i}", f"Multiply two numbers, {i} and 7.", []) for i in range(1, 5)])
    provider = MixedProvider(chat=make_provider(planner=plan, aggregate="done").chat)
    app = CompLLM(registry=registry_with(f"openai:m@{stub.url}", limit=limit), provider=provider)
    result = app.invoke(
        "Multiply 1 and 7. Multiply 2 and 7. Multiply 3 and 7. Multiply 4 and 7.",
        planner_model="planner-model",
        aggregator_model="aggregator-model",
        embedding_model="fake",
        max_parallel_experts=4,
    )
    assert [a.status for a in result.answers] == ["ok"] * 4
    # Concurrent requests (not a batch, not one by one), within the expert's max_concurrency.
    assert stub.most_in_flight == in_flight


# -- faults ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "options", "error"),
    [
        (Reply(status=500), "", "Error code: 500"),
        (Reply(stuck=True), "?timeout=0.3", "Timeout"),
        (Reply(""), "", "empty answer"),
    ],
    ids=["server-error", "timeout", "empty-text"],
)
def test_a_failing_endpoint_fails_its_subquery_and_the_run_goes_on(stub, reply, options, error):
    stub.respond = lambda request: reply
    result, _ = run(registry_with(f"openai:m@{stub.url}", options=options))
    math, medicine = result.answers
    assert math.status == "failed" and error in (math.error or "")
    assert math.attempts == 2 and len(stub.requests) == 2  # retried once
    assert medicine.status == "ok" and medicine.answer == "Thirst and fatigue."
    assert result.answer  # the run finished and the aggregator reported what it had


def test_an_unreachable_endpoint_fails_like_any_other(stub):
    url = stub.url
    stub.stop()  # the server is gone before the run
    result, _ = run(registry_with(f"openai:m@{url}", options="?timeout=2"))
    assert result.answers[0].status == "failed"
    assert "Connection" in (result.answers[0].error or "")
    assert result.answers[1].status == "ok"


def test_a_server_that_goes_down_mid_run_fails_only_what_was_left(stub):
    chain = plan_json(
        ("q1", "Multiply two numbers, 12 and 7.", []),
        ("q2", "Multiply the numbers of q1 by 2.", ["q1"]),
    )

    served = []

    def once(request):
        served.append(request)
        if len(served) == 1:
            return Reply("84")
        return Reply(status=503)

    stub.respond = once
    provider = MixedProvider(chat=make_provider(planner=chain, aggregate="done").chat)
    app = CompLLM(
        registry=registry_with(f"openai:m@{stub.url}"), provider=provider, retry_policy=FAST_RETRY
    )
    result = app.invoke(
        "Multiply 12 and 7, then multiply that by 2.",
        planner_model="planner-model",
        aggregator_model="aggregator-model",
        embedding_model="fake",
    )
    assert [(a.id, a.status) for a in result.answers] == [("q1", "ok"), ("q2", "failed")]
    assert result.answers[0].answer == "84"


@pytest.mark.parametrize("executor", ["dataflow", "waves"])
def test_a_fallback_expert_answers_when_the_remote_one_is_down(stub, executor):
    url = stub.url
    stub.stop()
    result, _ = run(
        registry_with(f"openai:m@{url}", fallback="general", options="?timeout=2"),
        executor=executor,
    )
    math = result.answers[0]
    assert math.status == "ok" and math.answer == "84 (local)"
    assert math.expert == "general" and math.fallback_from == "math"
    assert "Connection" in (math.fallback_reason or "")


def test_a_fallback_must_name_another_expert():
    with pytest.raises(RegistryError, match="fallback 'nobody' must be another expert"):
        registry_with("expert-model", fallback="nobody")


def test_the_documented_multi_gpu_registry_is_valid():
    from pathlib import Path

    from compllm import load_registry

    path = Path(__file__).resolve().parents[1] / "docs" / "deployment" / "multi-gpu.yaml"
    registry = load_registry(path)
    remote = [e for e in registry.experts if is_remote(e.model)]
    assert len(remote) == 5 and all(e.fallback == "general-local" for e in remote)
    assert {parse_remote(e.model).base_url for e in remote} == {
        "http://gpu-0:8000/v1",
        "http://gpu-1:8000/v1",
        "http://gpu-2:8000/v1",
    }
